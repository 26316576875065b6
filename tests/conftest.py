import os

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

# No persistent XLA compilation cache in the tests: writing some executables to it segfaulted
# inside JAX's `put_executable_and_time` (three crashed xdist workers in two runs of this
# suite, in kl tests, with a shared folder and with one folder per worker), which costs more
# than the compile time it saved. A user's own JAX_COMPILATION_CACHE_DIR is left as it is;
# jaxvi's default cache (`jaxvi.compilation_cache.apply_default`) is turned off here, before
# jaxvi is imported, for the workers and the subprocesses tests start (the tests of the
# default remove the variable again).
os.environ["JAXVI_COMPILATION_CACHE"] = "0"

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
