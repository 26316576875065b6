"""`jaxvi.nn.dense`: the dense layers' matmul has the values and gradients of x @ W (float64,
against JAX's own gradient and finite differences), under jit and vmap, and `nnx.Linear`
built with it equals the stock layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from jaxvi.nn import dense


def _loss(f, x, w, r):
    return jnp.sum(f(x, w) * r)


@pytest.mark.parametrize("x_shape", [(7, 5), (3, 4, 5)])
def test_matmul_value_and_gradients_equal_plain_matmul(x64, x_shape):
    kx, kw, kr = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape, jnp.float64)
    w = jax.random.normal(kw, (5, 6), jnp.float64)
    r = jax.random.normal(kr, (*x_shape[:-1], 6), jnp.float64)
    np.testing.assert_allclose(dense.matmul(x, w), x @ w, rtol=1e-14)
    ours = jax.jit(jax.grad(lambda x, w: _loss(dense.matmul, x, w, r), argnums=(0, 1)))(x, w)
    plain = jax.grad(lambda x, w: _loss(jnp.matmul, x, w, r), argnums=(0, 1))(x, w)
    for a, b in zip(ours, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for argnums, i in ((0, 0), (1, 1)):  # one input differentiated, the other a constant
        alone = jax.grad(lambda x, w: _loss(dense.matmul, x, w, r), argnums=argnums)(x, w)
        np.testing.assert_allclose(alone, plain[i], rtol=1e-12, atol=1e-12)
    check_grads(dense.matmul, (x, w), order=2, modes=["fwd", "rev"])


def test_matmul_gradients_under_vmap_over_examples_with_shared_weights(x64):
    """vmap over examples only (the VAE's head is applied per data point): the weight
    gradient sums over the batch exactly as for the unbatched call."""
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (6, 2, 3), jnp.float64)
    w = jax.random.normal(kw, (3, 4), jnp.float64)

    def grads(f):
        def loss(x, w):
            return jnp.sum(jnp.cos(jax.vmap(lambda xb: f(xb, w))(x)))

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)

    for a, b in zip(grads(dense.matmul), grads(jnp.matmul), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_matmul_gradients_under_vmap(x64):
    """A batch of weight matrices (vmap over w and x): each gradient is the plain one."""
    kx, kw = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (4, 8, 3), jnp.float64)
    w = jax.random.normal(kw, (4, 3, 2), jnp.float64)

    def grads(f):
        return jax.vmap(jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1)))(x, w)

    for a, b in zip(grads(dense.matmul), grads(jnp.matmul), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_linear_with_dense_dot_general_equals_stock_linear(x64):
    ours = nnx.Linear(5, 3, dot_general=dense.dot_general, param_dtype=jnp.float64,
                      rngs=nnx.Rngs(0))
    stock = nnx.Linear(5, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (6, 5), jnp.float64)

    def loss(layer, x):
        return jnp.sum(jnp.tanh(layer(x)))

    np.testing.assert_allclose(ours(x), stock(x), rtol=1e-14)
    g_ours = nnx.grad(loss)(ours, x)
    g_stock = nnx.grad(loss)(stock, x)
    np.testing.assert_allclose(g_ours["kernel"][...], g_stock["kernel"][...], rtol=1e-12)
    np.testing.assert_allclose(g_ours["bias"][...], g_stock["bias"][...], rtol=1e-12)


def test_dot_general_passes_other_contractions_through():
    a = jnp.arange(12.0).reshape(3, 4)
    b = jnp.arange(8.0).reshape(2, 4)
    dims = (((1,), (1,)), ((), ()))
    np.testing.assert_array_equal(dense.dot_general(a, b, dims), a @ b.T)
    c = jnp.arange(20.0).reshape(4, 5)
    out = dense.dot_general(a, c, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    np.testing.assert_array_equal(out, a @ c)
