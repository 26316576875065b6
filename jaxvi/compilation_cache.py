"""The persistent compilation cache, on by default: `import jaxvi` points JAX's persistent
compilation cache at a user cache folder (`default_cache_dir()`), so that a second process
reuses the programs the first one compiled (a fit's first call in a fresh process then loads
its programs from disk instead of compiling them for seconds).

    import jaxvi                              # the cache is on: ~/.cache/jaxvi/xla
    jaxvi.GaussianMixture(3).fit(X)           # compiles once, ever, per shape bucket
    jaxvi.enable_compilation_cache("/tmp/c")  # another folder
    jaxvi.disable_compilation_cache()         # off for this process and those it starts

To keep it off, set `JAXVI_COMPILATION_CACHE=0` in the environment before importing jaxvi.
`import jaxvi` leaves a cache the user set up alone: with `JAX_COMPILATION_CACHE_DIR` or
`JAX_ENABLE_COMPILATION_CACHE` in the environment, or JAX already imported with its
`jax_compilation_cache_dir` set, nothing changes. Where JAX is not imported yet (the usual
case), the settings go to this process's environment (JAX's own variables, read when JAX
starts), so the processes it starts, such as the workers of `GridSearchCV(n_jobs=2)`, share
the cache; no JAX import is added to `import jaxvi`. An unwritable folder leaves the cache
off, and so does a jaxlib older than 0.10 (`enable_compilation_cache` still works there):
jaxlib 0.9 on CPU logs two false "could lead to execution errors such as SIGILL" errors for
every program it loads from a cache, even on the machine that compiled it.

The threshold is 0 s: every program is cached, the small eager ones a fit runs included (about
1 MB per configuration), the user's own JAX programs in the same process too. The cache is
keyed by the program, the JAX/XLA version and the device, so a stale entry is never used;
delete the folder to reclaim its space. A caution: this project's test suite runs without the
cache after pytest-xdist workers crashed while writing to it (a segfault inside JAX's
`put_executable_and_time`, JAX 0.9 on CPU); a worker has also crashed inside XLA's compile
with no cache folder set, so whether the cache is the cause is not settled."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jaxvi import _cpu_threads

# Every program: the estimators' ~100 small eager programs per fit (validation, attributes)
# compile in ~15 ms each and load in ~1 ms; with a 0.1 s threshold they are not cached and a
# warm first GaussianMixture fit on iris took 2.5 s instead of 0.8 s (measured, 2-core CPU).
_MIN_COMPILE_TIME_SECS = 0.0
# jaxlib 0.9 on CPU logs, at error level, "Loading XLA:CPU AOT result. Target machine feature
# +prefer-no-gather is not supported on the host machine ... could lead to execution errors
# such as SIGILL" twice for every program it loads from the cache, on the machine that
# compiled it (measured: jaxlib 0.9.2; 0.10.2 loads quietly): the default waits for 0.10.
QUIET_LOADS_FROM = (0, 10)
OPT_OUT_ENV = "JAXVI_COMPILATION_CACHE"  # "0", "false", "off" or "no": no default cache
_OFF = ("0", "false", "off", "no")
# What `enable_compilation_cache` sets, as JAX's environment variables.
_JAX_ENV = ("JAX_ENABLE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


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
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # any size
    jax_cache.reset_cache()  # take the new folder even if JAX already looked for one
    os.environ.update(_environment(folder, min_compile_time_secs))
    return folder


def _environment(folder: Path, min_compile_time_secs: float) -> dict[str, str]:
    """JAX's environment variables for a cache in `folder`."""
    values = ("true", str(folder), str(float(min_compile_time_secs)), "-1")
    return dict(zip(_JAX_ENV, values, strict=True))


def apply_default() -> Path | None:
    """The default `import jaxvi` applies: the cache on in `default_cache_dir()`, unless the
    user opted out (`JAXVI_COMPILATION_CACHE=0`), set up JAX's cache (or turned it off)
    themselves, the folder cannot be written, or jaxlib is older than 0.10 (see the module's
    docstring).

    Returns:
      The folder, or None where the cache was left as it was.
    """
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() in _OFF:
        return None
    version = _cpu_threads.version_tuple(_cpu_threads.jaxlib_version() or "")
    if version is None or version < QUIET_LOADS_FROM:
        return None  # older jaxlib logs two false SIGILL errors per program it loads
    if any(name in os.environ for name in _JAX_ENV[:2]):
        return None  # the user's own JAX settings win
    jax = sys.modules.get("jax")
    if jax is not None and (jax.config.jax_compilation_cache_dir is not None
                            or not jax.config.jax_enable_compilation_cache):
        return None  # set (or turned off) in JAX's config before jaxvi was imported
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    if jax is not None:  # JAX has read its environment already: its config, then
        return enable_compilation_cache(folder)
    os.environ.update(_environment(folder, _MIN_COMPILE_TIME_SECS))
    return folder


def disable_compilation_cache() -> None:
    """Turn the persistent compilation cache off for the rest of the process and the processes
    it starts from then on (the folder and its entries are kept)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    jax.config.update("jax_enable_compilation_cache", False)
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    jax_cache.reset_cache()
