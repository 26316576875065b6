"""Opt-in persistent compilation cache: `enable_compilation_cache` makes a second process reuse
the programs the first one compiled (a fit's first call in a fresh process then loads its
program from disk instead of compiling it for seconds); `disable_compilation_cache` turns it
off again. Nothing here runs at import: `import jaxvi` changes no JAX setting.

    import jaxvi
    jaxvi.enable_compilation_cache()          # ~/.cache/jaxvi/xla (or $XDG_CACHE_HOME/jaxvi/xla)
    jaxvi.GaussianMixture(3).fit(X)           # compiles once, ever, per shape bucket

JAX's own settings do the same (`JAX_COMPILATION_CACHE_DIR` in the environment, or
`jax.config.update("jax_compilation_cache_dir", path)`); this helper picks a user cache
folder and thresholds suited to jaxvi's small programs. The cache is keyed by the program,
the JAX/XLA version and the device, so a stale entry is never used; delete the folder to
reclaim its space. On CPU, XLA logs a note for each executable it loads ("Loading XLA:CPU
AOT result ..."); `TF_CPP_MIN_LOG_LEVEL=3` in the environment before Python starts quiets
it. A caution: this project's test suite stopped using the cache after pytest-xdist workers
crashed while writing to it (a segfault inside JAX's `put_executable_and_time`, with one
folder per worker as well as a shared one; JAX 0.9 on CPU); a worker has also crashed inside
XLA's compile with no cache folder set, so whether the cache is the cause is not settled."""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

# Every program: the estimators' ~100 small eager programs per fit (validation, attributes)
# compile in ~15 ms each and load in ~1 ms; with a 0.1 s threshold they are not cached and a
# warm first GaussianMixture fit on iris took 2.5 s instead of 0.8 s (measured, 2-core CPU).
_MIN_COMPILE_TIME_SECS = 0.0


def default_cache_dir() -> Path:
    """The user cache folder of jaxvi's compiled programs.

    Returns:
      $XDG_CACHE_HOME/jaxvi/xla, else ~/.cache/jaxvi/xla.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "jaxvi" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             min_compile_time_secs: float = _MIN_COMPILE_TIME_SECS) -> Path:
    """Turn on JAX's persistent compilation cache in `path` for the rest of the process: every
    program whose compilation takes at least `min_compile_time_secs` seconds is written there,
    and a later process loads it instead of compiling.

    Best called before the first fit; called later, it resets JAX's cache state so that the
    programs compiled from then on are cached. The settings are also exported to this
    process's environment (JAX's own `JAX_COMPILATION_CACHE_DIR` etc.), so the processes it
    starts from then on, e.g. the workers of `GridSearchCV(n_jobs=2)`, use the same cache
    (without them each worker compiled everything again: 181 s against 13-16 s for n_jobs=1
    in `benchmarks/bench_latency.py`).

    Args:
      path: the cache folder (default `default_cache_dir()`), created if missing.
      min_compile_time_secs: the threshold (default 0: all of them, the small eager ones a
        fit runs included; about 1 MB per configuration).

    Returns:
      The folder.

    Raises:
      ValueError: `min_compile_time_secs` not a number >= 0, or `path` an existing file.
    """
    if not isinstance(min_compile_time_secs, (int, float)) or not min_compile_time_secs >= 0:
        raise ValueError("`min_compile_time_secs` must be a number >= 0; got "
                         f"{min_compile_time_secs!r}.")
    folder = Path(default_cache_dir() if path is None else path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"`path` must be a folder; got the file {str(folder)!r}.")
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # any size
    _jax_cache.reset_cache()  # take the new folder even if JAX already looked for one
    os.environ.update({"JAX_ENABLE_COMPILATION_CACHE": "true",
                       "JAX_COMPILATION_CACHE_DIR": str(folder),
                       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(
                           float(min_compile_time_secs)),
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"})
    return folder


def disable_compilation_cache() -> None:
    """Turn the persistent compilation cache off for the rest of the process and the processes
    it starts from then on (the folder and its entries are kept)."""
    jax.config.update("jax_enable_compilation_cache", False)
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    _jax_cache.reset_cache()
