"""jaxvi.em.densities: the free energy, log densities against SciPy, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from jaxvi import em
from jaxvi.em import densities

COV_TYPES = em.COVARIANCE_TYPES


@pytest.mark.parametrize("cov", COV_TYPES)
def test_free_energy_after_e_step_equals_log_likelihood(x64, cov, blobs, init_params):
    x = blobs()
    gmm, _ = init_params(x, 3, cov)
    log_resp, mean_ll = em.e_step(x, gmm)
    f = em.free_energy(x, gmm, jnp.exp(log_resp))
    assert abs(float(f) - float(mean_ll)) < 1e-10
    # Same under jit, and mean_ll is the mean of log_prob.
    f_jit = jax.jit(densities._free_energy)(jnp.asarray(x), gmm, jnp.exp(log_resp))
    assert abs(float(f_jit) - float(mean_ll)) < 1e-10
    assert abs(float(jnp.mean(em.log_prob(x, gmm))) - float(mean_ll)) < 1e-12
    # Any other q gives a smaller F (Gibbs' inequality).
    q = jax.nn.softmax(log_resp + 0.5 * jax.random.normal(jax.random.key(0), log_resp.shape))
    assert float(em.free_energy(x, gmm, q)) < float(mean_ll)


def test_log_prob_matches_scipy(x64, blobs, init_params):
    x = blobs(d=2)
    for cov in COV_TYPES:
        gmm, _ = init_params(x, 3, cov)
        c = np.asarray(gmm.covariances)
        covs = {"full": lambda c: c,
                "tied": lambda c: np.broadcast_to(c, (3, 2, 2)),
                "diag": lambda c: np.stack([np.diag(v) for v in c]),
                "spherical": lambda c: np.stack([v * np.eye(2) for v in c])}[cov](c)
        ref = np.log(sum(float(gmm.weights[k]) * multivariate_normal(gmm.means[k], covs[k]).pdf(x)
                         for k in range(3)))
        np.testing.assert_allclose(em.log_prob(x, gmm), ref, rtol=1e-10)


def test_sample_moments(x64, blobs, init_params):
    gmm, _ = init_params(blobs(), 3, "full")
    xs, z = em.sample(jax.random.key(0), gmm, 40_000)
    mean = np.asarray(gmm.weights @ gmm.means)
    assert np.allclose(np.mean(np.asarray(xs), 0), mean, atol=0.05)
    assert np.allclose(np.bincount(np.asarray(z), minlength=3) / 40_000, gmm.weights, atol=0.01)
    cov0 = np.cov(np.asarray(xs)[np.asarray(z) == 0].T)
    assert np.allclose(cov0, gmm.covariances[0], atol=0.1)
