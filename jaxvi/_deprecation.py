"""Renamed public names, kept for one release: `renamed_keyword` (a keyword argument) and
`renamed_attributes` (a module attribute, through the module's `__getattr__`), each with a
DeprecationWarning that names the new name."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable


def _warn(what: str, stacklevel: int) -> None:
    warnings.warn(f"{what}; the old name will be removed in the next release.",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def renamed_keyword(old: str, new: str, where: str) -> Callable:
    """A decorator: the wrapped callable also accepts its keyword `new` under its former name
    `old` (with a DeprecationWarning naming `where`); both at once is a TypeError."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{where}: pass `{new}` only (`{old}` is its former "
                                    "name); got both.")
                _warn(f"{where}: `{old}` is now called `{new}`", 2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def renamed_attributes(module: str, renames: dict[str, tuple[str, object]]) -> Callable:
    """A module `__getattr__` serving each former name of `renames` (old -> (new name, the
    object)) with a DeprecationWarning."""

    def __getattr__(name):
        if name in renames:
            new, obj = renames[name]
            _warn(f"`{module}.{name}` is now called `{module}.{new}`", 2)
            return obj
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
