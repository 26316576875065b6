import atexit
import os
import shutil
import tempfile

# Compile time is most of this suite's time (hundreds of small programs, most compiled once):
# XLA's LLVM backend optimisations off take about 30 % of it off
# (tests/em/variational/test_step.py, then tests/em/test_variational.py: 65.7 -> 47.9 CPU
# seconds). XLA's own HLO passes (fusion included) still run and fast math
# stays off, so the programs are the same computations; the machine code differs, and with it
# float32 results in their last bits (measured: a digits EM fit's log-likelihood 3.9735777 vs
# 3.9735770, a VAE ELBO -317.07654 vs -317.07657), far below every tolerance here. Set
# before JAX starts, inherited by the xdist workers and the subprocesses tests start; a
# user's own XLA_FLAGS are kept, and JAXVI_TESTS_DEFAULT_XLA=1 runs the suite at XLA's
# defaults.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if not os.environ.get("JAXVI_TESTS_DEFAULT_XLA") and (
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

# One persistent XLA compilation cache per test run, shared by the xdist workers and the
# subprocesses tests start (they inherit the environment): many tests compile the same
# programs (the estimator checks fit one model on many data sets; CLI and multi-process tests
# start fresh interpreters). The run's own folder goes at exit. TF_CPP_MIN_LOG_LEVEL=3 quiets
# XLA's note on loading a cached CPU executable.
# Each xdist worker writes its own subfolder: two workers compiling the same program at once
# wrote the same cache entry together, and a worker crashed inside JAX's cache write
# (`put_executable_and_time`; seen twice in one run on a loaded host).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxvi-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAXVI_TESTS_XLA_CACHE=_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("JAXVI_TESTS_XLA_CACHE"):
    _own = os.path.join(os.environ["JAXVI_TESTS_XLA_CACHE"], os.environ["PYTEST_XDIST_WORKER"])
    os.makedirs(_own, exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _own

import jax  # noqa: E402 (after the environment above)
import pytest  # noqa: E402

from jaxvi import data  # noqa: E402


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (scoped; nothing global changes)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as `jaxvi.data.load_digits` splits them (read once per worker)."""
    return data.load_digits()
