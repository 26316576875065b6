"""Known traps of the JAX releases we depend on, run in subprocesses under a timeout so that an
upgrade that brings one back fails loudly instead of hanging CI.

jaxlib 0.10.0-0.10.2 deadlock on CPU when a jitted program runs as many independent batched
LAPACK calls at once as XLA's intra-op thread pool has threads (one per core: two on a 2-core
machine); `import jaxvi` sizes the pool against it (`jaxvi._cpu_threads`). The programs below
run in a process whose environment has no `PJRT_NPROC`/`NPROC` of its own, so what they test
is jaxvi's sizing. Measured on jaxlib 0.10.2, 2 cores, 60 calls of the Monte Carlo KL program:
without it 2 of 3 runs hung (and 3 of 3 with `--xla_cpu_multi_thread_eigen=false`, 1 of 1
with `PJRT_NPROC=2`), with `PJRT_NPROC` 4 or 8 or through `import jaxvi` none of 14.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxvi import _cpu_threads

ROOT = Path(__file__).resolve().parent.parent

TWO_BATCHED_CHOLESKYS = textwrap.dedent(
    """
    import jaxvi  # sizes XLA's CPU thread pool before JAX starts (jaxvi._cpu_threads)
    import jax, jax.numpy as jnp
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (10_000, 16, 16))
    b = jax.random.normal(k2, (10_000, 16, 16))
    eye = jnp.eye(16)

    @jax.jit
    def f(a, b):
        la = jnp.linalg.cholesky(a @ jnp.swapaxes(a, -1, -2) + eye)
        lb = jnp.linalg.cholesky(b @ jnp.swapaxes(b, -1, -2) + eye)
        return jnp.sum(jnp.log(jnp.diagonal(la, axis1=-2, axis2=-1))) - jnp.sum(
            jnp.log(jnp.diagonal(lb, axis1=-2, axis2=-1)))

    for _ in range(3):
        f(a, b).block_until_ready()
    print("ok")
    """
)

# jaxvi's own program that hung on jaxlib 0.10.2 (tests/kl/test_estimates.py's Monte Carlo
# check): sampling and two log-densities of MultivariateNormalTri, i.e. two independent
# batched triangular solves (`lapack_dtrsm_ffi`) in one jitted function.
MONTE_CARLO_KL_TRIL = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, distrax
    from jaxvi import kl
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(2)
    tril = np.tril(rng.normal(size=(3, 3)), -1) + 1.5 * np.eye(3)
    def mvn(seed):
        loc = np.random.default_rng(seed).normal(size=(2, 3, 3))
        return distrax.MultivariateNormalTri(jnp.asarray(loc),
                                             jnp.broadcast_to(jnp.asarray(tril), (2, 3, 3, 3)))
    p, q = mvn(0), mvn(1)
    f = jax.jit(lambda key, p, q: kl.monte_carlo(key, p, q, 20_000))
    for i in range(40):
        jax.block_until_ready(f(jax.random.key(i), p, q))
    print("ok")
    """
)


def _run_without_pool_settings(script: str, timeout_s: float = 180):
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    try:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=timeout_s, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a jitted function with batched LAPACK calls hung (>{timeout_s:.0f} s): "
                    "the jaxlib CPU thread-pool deadlock is back; see jaxvi/_cpu_threads.py "
                    "and the JAX range in pyproject.toml")


@pytest.mark.parametrize("script", [TWO_BATCHED_CHOLESKYS, MONTE_CARLO_KL_TRIL],
                         ids=["two_batched_choleskys", "monte_carlo_kl_tril"])
def test_batched_lapack_calls_in_one_jit_do_not_hang(script):
    # jax/jaxlib 0.10.0-0.10.2 on a 2-core CPU hang here without jaxvi's pool floor; 0.9 does not.
    out = _run_without_pool_settings(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_pool_floor_only_where_needed():
    floor = _cpu_threads.pool_floor
    assert floor({}, "0.10.2", 2, False) == "8"
    assert floor({}, "0.10.0", 7, False) == "8"
    assert floor({}, "0.10.2", 8, False) is None  # the default pool is big enough
    assert floor({}, "0.9.2", 2, False) is None  # not affected
    assert floor({}, "0.11.0", 2, False) is None
    assert floor({}, None, 2, False) is None
    assert floor({"PJRT_NPROC": "2"}, "0.10.2", 2, False) is None  # the user's choice wins
    assert floor({"NPROC": "2"}, "0.10.2", 2, False) is None
    assert floor({}, "0.10.2", 2, True) is None  # too late: the pool exists


def test_import_sets_the_floor_on_an_affected_jaxlib():
    out = _run_without_pool_settings(
        "import os, jaxvi; print(os.environ.get('PJRT_NPROC'))", timeout_s=60)
    assert out.returncode == 0, out.stderr
    expected = _cpu_threads.pool_floor({}, _cpu_threads.jaxlib_version(),
                                       _cpu_threads._usable_cpus(), False)
    assert out.stdout.strip() == str(expected)
