"""jaxvi.em.step: the M step against scikit-learn and a closed-form MAP reference, EM as
coordinate ascent (never decreasing), one chunked and combined EM step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from jaxvi import em

COV_TYPES = em.COVARIANCE_TYPES


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), cov=st.sampled_from(COV_TYPES))
def test_free_energy_and_log_likelihood_never_decrease(seed, cov):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(40, 2)) * rng.uniform(0.5, 3.0, size=2)
        x[: 40 // 2] += rng.normal(size=2) * 3
        gmm = gmm0 = em.m_step(x, rng.dirichlet(np.ones(3), size=40), cov, 1e-6)
        lls, fs = [], []
        for _ in range(8):
            log_resp, ll = em.e_step(x, gmm)
            resp = jnp.exp(log_resp)
            new = em.m_step(x, resp, cov, 1e-6)
            # Coordinate ascent: F(θ_t, q_t) = ll_t ≤ F(θ_{t+1}, q_t) ≤ ll_{t+1}.
            fs += [float(em.free_energy(x, gmm, resp)), float(em.free_energy(x, new, resp))]
            lls.append(float(ll))
            gmm = new
        assert np.all(np.diff(fs) >= -1e-9), np.diff(fs)
        assert np.all(np.diff(lls) >= -1e-9), np.diff(lls)
        # The on-device loop reports the same non-decreasing trajectory.
        hist = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, max_iter=8, tol=0.0,
                      init=gmm0).history
        np.testing.assert_allclose(hist, lls, rtol=1e-10)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_m_step_matches_sklearn(x64, cov, blobs, rel):
    x = blobs(seed=5, offset=50.0)
    resp = np.random.default_rng(0).dirichlet(np.ones(3), size=len(x))
    nk, means, covs = _estimate_gaussian_parameters(x, resp, 1e-6, cov)
    gmm = em.m_step(x, resp, cov, 1e-6)
    assert rel(gmm.weights, nk / nk.sum()) < 1e-12
    assert rel(gmm.means, means) < 1e-12
    assert rel(gmm.covariances, covs) < 1e-10
    # Same jitted, and from sufficient statistics computed in two halves (the psum pattern).
    shift = jnp.mean(jnp.asarray(x), axis=0)
    s1 = em.sufficient_stats(x[:100], resp[:100], shift, covariance_type=cov)
    s2 = em.sufficient_stats(x[100:], resp[100:], shift, covariance_type=cov)
    summed = jax.tree_util.tree_map(jnp.add, s1, s2)
    g2 = jax.jit(em.m_step_from_stats, static_argnames="covariance_type")(
        summed, shift, covariance_type=cov, reg_covar=1e-6)
    assert rel(g2.covariances, covs) < 1e-10 and rel(g2.means, means) < 1e-12


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_em_step_chunked_and_combined_equals_single(x64, cov, blobs, init_params, rel):
    x = jnp.asarray(blobs(seed=2))
    gmm, _ = init_params(np.asarray(x), 3, cov)
    ref, ll = jax.jit(em.em_step)(x, gmm)
    chunked, ll_c = em.em_step(x, gmm, chunk_size=7)  # 180 rows -> 26 chunks, padded
    assert rel(chunked.covariances, ref.covariances) < 1e-12 and abs(ll_c - ll) < 1e-12
    # Two "devices": local stats of halves, combined by a sum over the leading axis.
    halves = x.reshape(2, 90, -1)
    shift = em.model_shift(gmm)
    local = jax.vmap(lambda h: em.e_step_stats(h, gmm, shift))(halves)
    stats, sum_ll = jax.tree_util.tree_map(lambda a: a.sum(0), local)
    combined = em.m_step_from_stats(stats, shift, covariance_type=cov)
    assert rel(combined.covariances, ref.covariances) < 1e-12
    assert abs(float(sum_ll / stats.count) - float(ll)) < 1e-12


def map_reference(x, resp, prior, cov):
    """Closed-form MAP M step (Murphy 2012, §11.4.2.8), written directly in NumPy."""
    alpha, m0, k0, nu0, psi0 = (np.asarray(p) for p in prior)
    n, d = x.shape
    nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
    w = (nk + alpha - 1) / np.sum(nk + alpha - 1)
    xbar = resp.T @ x / nk[:, None]
    means = (nk[:, None] * xbar + k0 * m0) / (nk + k0)[:, None]
    covs, posts = [], []
    for k in range(resp.shape[1]):
        diff = x - xbar[k]
        s = (resp[:, k, None] * diff).T @ diff
        dev = (xbar[k] - m0)[:, None]
        post = s + k0 * nk[k] / (k0 + nk[k]) * dev @ dev.T
        posts.append(post)
        if cov == "full":
            covs.append((psi0 + post) / (nu0 + nk[k] + d + 2))
        elif cov == "diag":
            covs.append((np.diag(psi0) + np.diag(post)) / (nu0 + nk[k] + 3))
        elif cov == "spherical":
            covs.append((np.trace(psi0) + np.trace(post)) / (d * (nu0 + nk[k] + 1) + 2))
    if cov == "tied":
        k = resp.shape[1]
        return w, means, (psi0 + sum(posts)) / (nu0 + nk.sum() + d + 1 + k)
    return w, means, np.stack(covs)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_map_m_step_closed_form(x64, cov, blobs, rel):
    x = blobs(seed=9, d=2)
    resp = np.random.default_rng(1).dirichlet(np.ones(3), size=len(x))
    prior = em.Prior(2.0, np.array([0.5, -1.0]), 0.5, 4.0, np.array([[2.0, 0.3], [0.3, 1.0]]))
    gmm = em.m_step(x, resp, cov, 0.0, prior=prior)
    w, means, covs = map_reference(x, resp, prior, cov)
    assert rel(gmm.weights, w) < 1e-12 and rel(gmm.means, means) < 1e-12
    assert rel(gmm.covariances, covs) < 1e-12
