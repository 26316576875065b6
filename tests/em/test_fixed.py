"""Frozen parameters in jaxvi.em (`fixed=`): the M step given fixed means against NumPy, and
for every subset and covariance type the fixed parameters stay bit-identical while the
log-likelihood never decreases; `fit_minibatch` too; unknown names."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em
from jaxvi.em import checks
from jaxvi.em.covariance import COVARIANCE_TYPES

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(checks.FIXABLE, r)]


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -1.0], [-2.0, 4.0, 1.0]])
    return rng.permutation(np.concatenate(
        [rng.normal(size=(30, 3)) * (0.5 + 0.3 * i) + c for i, c in enumerate(centres)]))


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_m_step_with_fixed_means_matches_numpy(x64, x, init_params, cov):
    gmm, _ = init_params(x, 3, cov)
    resp = np.asarray(jnp.exp(em.e_step(x, gmm)[0]))
    shift = jnp.asarray(x.mean(0))
    stats = em.sufficient_stats(x, resp, shift, covariance_type=cov)
    fixed = checks.fixed_mask(("means",))
    new = em.m_step_from_stats(stats, shift, covariance_type=cov, reg_covar=1e-6, fixed=fixed,
                               current=gmm)
    mu = np.asarray(gmm.means)
    nk = resp.sum(0) + 10 * np.finfo(float).eps
    diff = x[:, None, :] - mu  # (N, K, D)
    scatter = np.einsum("nk,nki,nkj->kij", resp, diff, diff)
    want = {"full": scatter / nk[:, None, None] + 1e-6 * np.eye(3),
            "tied": scatter.sum(0) / nk.sum() + 1e-6 * np.eye(3),
            "diag": np.diagonal(scatter, axis1=1, axis2=2) / nk[:, None] + 1e-6,
            "spherical": np.trace(scatter, axis1=1, axis2=2) / (3 * nk) + 1e-6}[cov]
    np.testing.assert_allclose(new.covariances, want, rtol=1e-10)
    np.testing.assert_array_equal(new.means, gmm.means)
    np.testing.assert_allclose(new.weights, nk / nk.sum(), rtol=1e-12)
    if cov == "full":  # MAP: the conditional mode of Σ_k given the fixed μ_k
        prior = em.default_prior(x)
        new = em.m_step_from_stats(stats, shift, covariance_type=cov, reg_covar=1e-6,
                                   prior=prior, fixed=fixed, current=gmm)
        m0, k0, nu0, psi0 = (np.asarray(p) for p in prior[1:])
        dev = mu - m0
        post = psi0 + scatter + k0 * dev[:, :, None] * dev[:, None, :]
        want = post / (nu0 + nk + 3 + 2)[:, None, None] + 1e-6 * np.eye(3)
        np.testing.assert_allclose(new.covariances, want, rtol=1e-10)


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_fixed_parameters_stay_bit_identical_and_ll_monotone(x64, x, init_params, cov):
    gmm0, _ = init_params(x, 3, cov)
    kw = dict(key=jax.random.key(0), init=gmm0, covariance_type=cov, max_iter=4, tol=0.0)
    factor = em.model.with_scale_tril(gmm0).scale_tril
    for subset in SUBSETS:
        res = em.fit(x, 3, fixed=subset, **kw)  # one compiled loop for every subset
        h = np.asarray(res.history)
        assert np.all(np.diff(h) >= -1e-12 * np.abs(h[1:])), (subset, h)
        for name in checks.FIXABLE:
            same = np.array_equal(getattr(res.gmm, name), getattr(gmm0, name))
            assert same == (name in subset), (subset, name)
        if "covariances" in subset and factor is not None:
            np.testing.assert_array_equal(res.gmm.scale_tril, factor)
        if len(subset) == 3:
            assert np.ptp(h) == 0.0


def test_fixed_in_fit_minibatch_and_bad_names(x, init_params):
    gmm0, _ = init_params(x.astype(np.float32), 3, "full")
    gmm0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), gmm0)
    batches = np.split(x.astype(np.float32), 3)
    res = em.fit_minibatch(batches, 3, key=jax.random.key(0), init=gmm0,
                           fixed=("means", "weights"))
    np.testing.assert_array_equal(res.gmm.means, gmm0.means)
    np.testing.assert_array_equal(res.gmm.weights, gmm0.weights)
    assert not np.allclose(res.gmm.covariances, gmm0.covariances)
    assert np.all(np.isfinite(res.history))
    for bad in [("mean",), "variances", 3]:
        with pytest.raises(ValueError, match="`fixed`"):
            em.fit(x, 3, key=jax.random.key(0), fixed=bad)
        with pytest.raises(ValueError, match="`fixed`"):
            em.fit_minibatch([x], 3, key=jax.random.key(0), fixed=bad)
