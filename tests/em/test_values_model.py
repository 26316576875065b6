"""`jaxvi.em`'s model functions pinned by VALUE for every covariance type: densities,
component log-densities, E step, free energy, bic/aic/n_parameters against scikit-learn's
`GaussianMixture` with the same parameters; the M step against scikit-learn's
`_estimate_gaussian_parameters` with a large `reg_covar`; `sample` by per-component weights,
means and covariances with tolerances from the sample size, in float64 and float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
)

from jaxvi import em

COV_TYPES = ("full", "tied", "diag", "spherical")
RNG = np.random.default_rng(180)
W = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[-3.0, 0.0, 1.0], [2.0, 2.5, -1.0], [0.5, -3.0, 2.0]])
_L = [np.array([[1.0, 0, 0], [0.8, 0.6, 0], [-0.5, 0.4, 0.7]]),
      np.array([[0.5, 0, 0], [-0.3, 1.3, 0], [0.2, 0.6, 0.4]]),
      np.array([[1.5, 0, 0], [0.1, 0.3, 0], [0.9, -0.2, 1.1]])]
COVS = {
    "full": np.stack([l @ l.T for l in _L]),
    "tied": _L[0] @ _L[0].T,
    "diag": np.array([[0.25, 1.0, 4.0], [2.0, 0.5, 0.3], [1.0, 3.0, 0.6]]),
    "spherical": np.array([0.3, 2.5, 1.0]),
}


def _gmm(cov, dtype=np.float64):
    return em.GMM(jnp.asarray(W, dtype), jnp.asarray(MEANS, dtype),
                  jnp.asarray(COVS[cov], dtype), cov)


def _sk(cov):
    ref = SkGMM(3, covariance_type=cov)
    ref.weights_, ref.means_, ref.covariances_ = W, MEANS, COVS[cov]
    ref.precisions_cholesky_ = _compute_precision_cholesky(COVS[cov], cov)
    return ref


def _full_covs(cov):
    c = COVS[cov]
    if cov == "full":
        return c
    if cov == "tied":
        return np.stack([c] * 3)
    if cov == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([v * np.eye(3) for v in c])


def _x(n=40):
    return RNG.normal(size=(n, 3)) * 2.0


@pytest.mark.parametrize("cov", COV_TYPES)
def test_densities_e_step_and_criteria_equal_sklearn(x64, cov):
    x = _x()
    gmm, ref = _gmm(cov), _sk(cov)
    comp = np.stack([stats.multivariate_normal(m, c).logpdf(x)
                     for m, c in zip(MEANS, _full_covs(cov), strict=True)], -1)
    np.testing.assert_allclose(em.conditional_log_prob(jnp.asarray(x), gmm), comp, rtol=1e-10)
    np.testing.assert_allclose(em.log_prob(x, gmm), ref.score_samples(x), rtol=1e-10)
    log_resp, mean_ll = em.e_step(x, gmm)
    np.testing.assert_allclose(np.exp(log_resp), ref.predict_proba(x), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(mean_ll, ref.score(x), rtol=1e-10)
    assert em.n_parameters(gmm) == ref._n_parameters()
    np.testing.assert_allclose(em.bic(x, gmm), ref.bic(x), rtol=1e-10)
    np.testing.assert_allclose(em.aic(x, gmm), ref.aic(x), rtol=1e-10)
    # free energy with responsibilities that are not the posterior: its definition in NumPy
    q = RNG.dirichlet(np.ones(3), size=len(x))
    joint = comp + np.log(W)
    want = np.mean(np.sum(q * joint - q * np.log(q), axis=-1))
    np.testing.assert_allclose(em.free_energy(x, gmm, q), want, rtol=1e-10)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_densities_float32(cov):
    x = _x(20).astype(np.float32)
    np.testing.assert_allclose(em.log_prob(x, _gmm(cov, np.float32)),
                               _sk(cov).score_samples(x.astype(np.float64)), rtol=1e-4)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_m_step_equals_sklearn_with_large_reg_covar(x64, cov):
    """reg_covar = 0.5 goes on the diagonal only (sklearn's convention)."""
    x = _x(60)
    resp = RNG.dirichlet(np.ones(3) * 0.7, size=len(x))
    gmm = em.m_step(x, resp, cov, 0.5)
    nk, means, covs = _estimate_gaussian_parameters(x, resp, 0.5, cov)
    np.testing.assert_allclose(gmm.weights, nk / len(x), rtol=1e-10)
    np.testing.assert_allclose(gmm.means, means, rtol=1e-10)
    np.testing.assert_allclose(gmm.covariances, covs, rtol=1e-10)


@pytest.mark.parametrize("cov, dtype", [(c, np.float64) for c in COV_TYPES]
                         + [("full", np.float32), ("diag", np.float32)])
def test_sample_per_component_moments(cov, dtype):
    """Every component's weight, mean and covariance within 5 standard errors of n draws."""
    n = 30_000
    with jax.enable_x64(dtype == np.float64):
        x, z = em.sample(jax.random.key(7), _gmm(cov, dtype), n)
        x, z = np.asarray(x, np.float64), np.asarray(z)
    assert x.dtype == np.float64 and z.shape == (n,)
    counts = np.bincount(z, minlength=3)
    np.testing.assert_array_less(np.abs(counts / n - W), 5 * np.sqrt(W * (1 - W) / n))
    for k, c in enumerate(_full_covs(cov)):
        xs = x[z == k]
        nk = len(xs)
        np.testing.assert_array_less(np.abs(xs.mean(0) - MEANS[k]), 5 * np.sqrt(np.diag(c) / nk))
        se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / nk)
        np.testing.assert_array_less(np.abs(np.cov(xs, rowvar=False) - c), 5 * se + 1e-12)


def test_bic_aic_as_the_cli_uses_them(x64):
    """`jaxvi em` ranks fits by em.bic/aic of a fitted model: equal to sklearn's on the same
    parameters, and the hand formula −2 log L + p log N / + 2p."""
    x = np.concatenate([RNG.normal(size=(50, 2)) - 3, RNG.normal(size=(50, 2)) + 3])
    res = em.fit(x, 2, key=jax.random.key(0), covariance_type="diag", max_iter=20)
    g = res.gmm
    ref = SkGMM(2, covariance_type="diag")
    ref.weights_, ref.means_, ref.covariances_ = (np.asarray(a) for a in
                                                  (g.weights, g.means, g.covariances))
    ref.precisions_cholesky_ = _compute_precision_cholesky(ref.covariances_, "diag")
    np.testing.assert_allclose(em.bic(x, g), ref.bic(x), rtol=1e-10)
    np.testing.assert_allclose(em.aic(x, g), ref.aic(x), rtol=1e-10)
    ll = logsumexp(np.stack([stats.multivariate_normal(m, np.diag(v)).logpdf(x) for m, v in
                             zip(ref.means_, ref.covariances_, strict=True)], -1)
                   + np.log(ref.weights_), axis=-1).sum()
    p = 2 * 2 + 2 * 2 + 1
    np.testing.assert_allclose(em.bic(x, g), -2 * ll + p * np.log(100), rtol=1e-10)
    np.testing.assert_allclose(em.aic(x, g), -2 * ll + 2 * p, rtol=1e-10)
