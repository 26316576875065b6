"""The examples in the docstrings (`Examples:` sections) run and print what they show: every
module of the package whose source holds one is run through `doctest` (imported normally,
so a submodule named like the function it defines, `jaxvi.em.fit`, does not shadow it)."""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import jaxvi


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(jaxvi.__path__, "jaxvi."):
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as f:
                if ">>> " in f.read():
                    names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_public_entry_points_have_examples():
    for name in ("jaxvi.kl.gaussian", "jaxvi.kl.dispatch", "jaxvi.em.fit",
                 "jaxvi.estimators.gaussian_mixture", "jaxvi.estimators.bayesian_mixture"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} example(s) failed"
