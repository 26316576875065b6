"""A floor on the size of XLA's CPU thread pool, against a deadlock of jaxlib 0.10.

jaxlib 0.10.0–0.10.2 run a batched LAPACK call on CPU (Cholesky `lapack_?potrf_ffi`,
triangular solve `lapack_?trsm_ffi`, ...) by splitting the batch into chunks that it queues
on XLA's intra-op thread pool, then blocking the pool thread it runs on until the chunks are
done (`jax::ParallelBatchMap`, `absl::BlockingCounter::Wait`). When a jitted program has as
many independent batched LAPACK calls running at once as the pool has threads, every thread
waits for chunks that no free thread is left to run: the program never finishes and
`block_until_ready` never returns. The pool has one thread per usable core, so on a 2-core
machine two independent calls suffice, e.g. the two Cholesky factors of a batched MVN KL, or
the two triangular solves of `kl.monte_carlo` between two `MultivariateNormalTri`
(tests/test_regressions.py; native stacks: two `tf_XLAEigen` threads in
`BlockingCounter::Wait` under `ParallelBatchMap` and `lapack_dtrsm_ffi`). jaxlib 0.9.2 and
0.8.1 ran the same programs without a hang; `--xla_cpu_multi_thread_eigen=false` does not
help (measured).

XLA sizes that pool from the environment variable `PJRT_NPROC` (then `NPROC`), read once,
when the CPU backend starts. On an affected jaxlib with fewer than `MIN_THREADS` usable
cores, `import jaxvi` sets `PJRT_NPROC=8` if neither variable is set and JAX has not started
its backends yet (`os.environ.setdefault`): eight leaves room well beyond the two concurrent
LAPACK calls of the programs that hung (a program would need eight at once to hang again).
A user's own `PJRT_NPROC` or `NPROC` always wins (set it to the core count to opt out);
other jaxlib versions and machines with 8 or more cores are left alone; where the backend had
already started, the variable would be too late and is not set.
"""

from __future__ import annotations

import os
import sys

MIN_THREADS = 8
AFFECTED_JAXLIB = ((0, 10), (0, 11))  # [0.10, 0.11): the versions that queue LAPACK chunks


def version_tuple(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as "0.10.2" or "0.9.2.dev0", None if it has
    no such prefix."""
    parts = []
    for part in version.split(".")[:2]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            return None
        parts.append(int(digits))
    return tuple(parts) if len(parts) == 2 else None


def jaxlib_version() -> str | None:
    """The installed jaxlib's version string, without importing it (None if not found)."""
    try:
        from importlib.metadata import version

        return version("jaxlib")
    except Exception:  # pragma: no cover - no jaxlib distribution metadata
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def pool_floor(environ, jaxlib_version: str | None, usable_cpus: int,
               backend_started: bool) -> str | None:
    """The `PJRT_NPROC` value jaxvi should set, or None to leave the environment alone.

    Args:
      environ: the process environment (a mapping), read only.
      jaxlib_version: the installed jaxlib's version string, or None if unknown.
      usable_cpus: the cores this process may run on (XLA's default pool size).
      backend_started: whether JAX has already created its backends.

    Returns:
      `str(MIN_THREADS)` on an affected jaxlib with fewer usable cores, when neither
      `PJRT_NPROC` nor `NPROC` is set and the backends have not started; else None.
    """
    if "PJRT_NPROC" in environ or "NPROC" in environ or backend_started:
        return None
    version = version_tuple(jaxlib_version or "")
    if version is None or not AFFECTED_JAXLIB[0] <= version < AFFECTED_JAXLIB[1]:
        return None
    return str(MIN_THREADS) if usable_cpus < MIN_THREADS else None


def apply() -> None:
    """Set `PJRT_NPROC` in `os.environ` when `pool_floor` says so (called by `import jaxvi`)."""
    value = pool_floor(os.environ, jaxlib_version(), _usable_cpus(), _backend_started())
    if value is not None:
        os.environ.setdefault("PJRT_NPROC", value)
