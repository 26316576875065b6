"""jaxvi.em.stats: the fast and the precise E-step statistics kernels agree, and the
round-off estimate chooses between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxvi import em
from jaxvi.em import stats as em_stats

MAX_ERROR = em_stats.FAST_KERNEL_MAX_ERROR


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_precise_and_fast_kernels_agree_in_float64(x64, cov):
    rng = np.random.default_rng(2)
    x = jnp.asarray(np.concatenate([rng.normal(size=(60, 3)) + 4 * i for i in range(3)]))
    gmm = em.initialize(jax.random.key(0), x, 3, covariance_type=cov)
    xb, mask = em_stats.to_chunks(x, 4, 45)
    shift = em.model_shift(gmm)
    fast, ll_fast = em_stats.e_step_stats_fast(xb, mask, gmm, shift)
    precise, ll_precise = em_stats.e_step_stats_precise(xb, mask, gmm)
    a = em.m_step_from_stats(fast, shift, covariance_type=cov)
    b = em.m_step_from_stats(precise, gmm.means, covariance_type=cov)
    assert abs(float(ll_fast) - float(ll_precise)) < 1e-9 * abs(float(ll_fast))
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)


def test_kernel_choice_follows_the_round_off_estimate():
    rng = np.random.default_rng(3)
    x = jnp.asarray(np.concatenate([rng.normal(size=(200, 4)) + 3 * i for i in range(3)]),
                    jnp.float32)
    well = em.initialize(jax.random.key(0), x, 3)
    assert float(em_stats.expansion_error(well, em.model_shift(well))) < MAX_ERROR
    digits = jnp.asarray(load_digits().data, jnp.float32)
    ill = em.initialize(jax.random.key(0), digits, 10)
    assert float(em_stats.expansion_error(ill, em.model_shift(ill))) > MAX_ERROR
    # The iteration on the ill-conditioned model (precise kernel) agrees with float64.
    new32, ll32 = jax.jit(em.em_step)(digits, ill)
    with jax.enable_x64(True):
        ill64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), ill)
        new64, ll64 = jax.jit(em.em_step)(jnp.asarray(load_digits().data), ill64)
    assert abs(float(ll32) - float(ll64)) < 1e-3 * abs(float(ll64))
    np.testing.assert_allclose(new32.means, new64.means, atol=1e-3)
