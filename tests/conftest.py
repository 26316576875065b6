import atexit
import os
import shutil
import tempfile

# One persistent XLA compilation cache per test run, shared by the xdist workers and the
# subprocesses tests start (they inherit the environment): many tests compile the same
# programs (the estimator checks fit one model on many data sets; CLI and multi-process tests
# start fresh interpreters). Set before JAX is imported; the run's own folder goes at exit.
# TF_CPP_MIN_LOG_LEVEL=3 quiets XLA's note on loading a cached CPU executable.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxvi-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import pytest

from jaxvi import data


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (scoped; nothing global changes)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as `jaxvi.data.load_digits` splits them (read once per worker)."""
    return data.load_digits()
