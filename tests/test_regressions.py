"""Known traps of the JAX releases we depend on, run in subprocesses under a timeout so that an
upgrade that brings one back fails loudly instead of hanging CI."""

import subprocess
import sys
import textwrap

import pytest

TWO_BATCHED_CHOLESKYS = textwrap.dedent(
    """
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


def test_two_batched_choleskys_in_one_jit_do_not_hang():
    # jax/jaxlib 0.10.0-0.10.2 on CPU hang here in most runs; 0.9.2 does not.
    try:
        out = subprocess.run(
            [sys.executable, "-c", TWO_BATCHED_CHOLESKYS],
            capture_output=True, text=True, timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a jitted function with two batched Cholesky decompositions hung (>180 s): "
                    "the jax/jaxlib CPU hang is back; see the pin in pyproject.toml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
