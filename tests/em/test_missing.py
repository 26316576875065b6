"""jaxvi.em.missing and jaxvi.em.missing_stats: marginal densities, posteriors and the
expected statistics (fast and precise kernels) of rows with NaN entries against a brute-force
float64 reference (each row's observed sub-vector under each component, scipy), `impute`
against the closed-form conditional mean of a bivariate mixture, the pattern layout, and the
errors for rows with nothing observed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from jaxvi import em
from jaxvi.em import covariance, missing, missing_stats

K, D, N = 3, 4, 40


def _data(seed=0, frac=0.35):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * 2.0
    x[rng.random((N, D)) < frac] = np.nan
    x[np.isnan(x).all(axis=1), 1] = 0.5
    x[0] = [np.nan, 1.0, np.nan, -2.0]
    return x


def _brute_force(x, w, m, dense):
    """float64 per row and component: joint log w_k + log N(x_o; μ_o, Σ_oo), and the expected
    statistics Σ_n r_nk E[x − μ_k | x_o, k], Σ_n r_nk E[(x − μ_k)(x − μ_k)ᵀ | x_o, k]."""
    n, d = x.shape
    k = len(w)
    joint = np.zeros((n, k))
    first, second = np.zeros((k, d)), np.zeros((k, d, d))
    for i in range(n):
        o = ~np.isnan(x[i])
        for j in range(k):
            joint[i, j] = np.log(w[j]) + multivariate_normal(
                m[j][o], dense[j][np.ix_(o, o)]).logpdf(x[i][o])
    resp = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
    for i in range(n):
        o = ~np.isnan(x[i])
        u = ~o
        for j in range(k):
            s = dense[j]
            xh, c = x[i].copy(), np.zeros((d, d))
            a = s[np.ix_(u, o)] @ np.linalg.inv(s[np.ix_(o, o)])
            xh[u] = m[j][u] + a @ (x[i][o] - m[j][o])
            c[np.ix_(u, u)] = s[np.ix_(u, u)] - a @ s[np.ix_(o, u)]
            e = xh - m[j]
            first[j] += resp[i, j] * e
            second[j] += resp[i, j] * (np.outer(e, e) + c)
    return joint, resp, first, second


@jax.jit
def _stats_and_rows(data, gmm):
    """All kernels in one compile: the fit's expected Stats by the precise and the fast
    kernel, and the per-row posteriors behind `marginal_e_step`, `marginal_log_prob` and
    `impute`."""
    chunks, shift, featurized = missing_stats.missing_feature_chunks(data, gmm.covariance_type)
    return (missing_stats.e_step_stats_missing(data, gmm),
            missing_stats.e_step_stats_missing_fast(data, gmm, chunks, shift, featurized),
            missing._posterior_rows(data, gmm))


@pytest.mark.parametrize("cov", em.COVARIANCE_TYPES)
def test_marginals_and_expected_stats_match_brute_force(cov, init_params):
    x = _data()
    with jax.enable_x64(True):
        gmm, _ = init_params(np.nan_to_num(x), K, cov)
        w, m = np.asarray(gmm.weights), np.asarray(gmm.means)
        dense = covariance.of(cov).dense(np.asarray(gmm.covariances), K, D)
        joint, resp, first, second = _brute_force(x, w, m, dense)
        lse = logsumexp(joint, axis=1)

        if cov in ("tied", "spherical"):  # the same kernels as full and diag
            log_resp, mean_ll = em.marginal_e_step(x, gmm)
            np.testing.assert_allclose(log_resp, joint - lse[:, None], atol=1e-10)
            np.testing.assert_allclose(mean_ll, lse.mean(), rtol=1e-12)
            return
        precise, fast, (log_resp, log_p, _) = _stats_and_rows(
            missing.missing_layout(x, cov, chunk_size=8), gmm)
        np.testing.assert_allclose(log_resp, joint - lse[:, None], atol=1e-10)
        np.testing.assert_allclose(log_p, lse, rtol=1e-12)
        if not covariance.of(cov).matrix:
            second = np.diagonal(second, axis1=1, axis2=2)
        for stats, sum_ll in (precise, fast):
            np.testing.assert_allclose(stats.count, N)
            np.testing.assert_allclose(stats.nk, resp.sum(axis=0), rtol=1e-10)
            np.testing.assert_allclose(stats.sum_x, first, atol=1e-10)
            np.testing.assert_allclose(stats.sum_xx, second, atol=1e-10)
            np.testing.assert_allclose(sum_ll, lse.sum(), rtol=1e-12)


def test_float32_public_marginals_match_brute_force(init_params):
    x = _data()
    gmm, _ = init_params(np.nan_to_num(x), K, "full")
    dense = np.asarray(gmm.covariances, np.float64)
    joint = _brute_force(x, np.asarray(gmm.weights, np.float64),
                         np.asarray(gmm.means, np.float64), dense)[0]
    lse = logsumexp(joint, axis=1)
    log_resp, mean_ll = em.marginal_e_step(x.astype(np.float32), gmm)
    assert log_resp.dtype == jnp.float32
    np.testing.assert_allclose(log_resp, joint - lse[:, None], atol=1e-4)
    np.testing.assert_allclose(em.marginal_log_prob(x, gmm), lse, rtol=1e-5)
    np.testing.assert_allclose(mean_ll, lse.mean(), rtol=1e-5)


def test_layout_groups_rows_by_pattern():
    x = _data(seed=2)
    data = missing.missing_layout(x, "full", chunk_size=4)
    flat = np.asarray(data.xb).reshape(-1, D)
    observed = np.asarray(data.observed)
    assert len(np.unique(observed, axis=0)) == len(observed)
    np.testing.assert_array_equal(flat[np.asarray(data.slot)],
                                  np.nan_to_num(x).astype(flat.dtype))
    # Every real row of a chunk has that chunk's pattern.
    patterns = np.repeat(observed[np.asarray(data.chunk_pattern)], data.xb.shape[1], axis=0)
    assert data.xb.shape[1] <= 4
    real = np.asarray(data.mask).reshape(-1) > 0
    np.testing.assert_array_equal(patterns[np.asarray(data.slot)], ~np.isnan(x))
    assert real.sum() == N and set(np.flatnonzero(real)) == set(np.asarray(data.slot))


def test_impute_is_the_closed_form_conditional_mean():
    with jax.enable_x64(True):
        w = np.array([0.3, 0.7])
        m = np.array([[0.0, 1.0], [2.0, -1.0]])
        c = np.array([[[1.0, 0.6], [0.6, 2.0]], [[0.5, -0.2], [-0.2, 1.0]]])
        gmm = em.GMM(jnp.asarray(w), jnp.asarray(m), jnp.asarray(c), "full")
        x = np.array([[0.7, np.nan], [np.nan, 0.4], [1.5, -2.0]])
        got = np.asarray(em.impute(x, gmm))
    # x2 | x1 under component k: μ_k2 + Σ_k21 / Σ_k11 (x1 − μ_k1); p(k | x1) ∝ w_k N(x1).
    x1 = 0.7
    dens = w * np.exp(-0.5 * (x1 - m[:, 0]) ** 2 / c[:, 0, 0]) / np.sqrt(c[:, 0, 0])
    cond = m[:, 1] + c[:, 1, 0] / c[:, 0, 0] * (x1 - m[:, 0])
    np.testing.assert_allclose(got[0], [x1, dens @ cond / dens.sum()], rtol=1e-12)
    x2 = 0.4
    dens = w * np.exp(-0.5 * (x2 - m[:, 1]) ** 2 / c[:, 1, 1]) / np.sqrt(c[:, 1, 1])
    cond = m[:, 0] + c[:, 0, 1] / c[:, 1, 1] * (x2 - m[:, 1])
    np.testing.assert_allclose(got[1], [dens @ cond / dens.sum(), x2], rtol=1e-12)
    np.testing.assert_array_equal(got[2], x[2])


def test_rows_with_nothing_observed_and_infinities_are_refused(init_params):
    x = _data()
    x[2] = np.nan
    x[5] = np.nan
    gmm, _ = init_params(np.nan_to_num(x), K, "diag")
    with pytest.raises(ValueError, match=r"`x` row 2 has every entry missing.*2 such rows"):
        em.marginal_log_prob(x, gmm)
    with pytest.raises(ValueError, match=r"`x` row 2 has every entry missing"):
        em.fit(x, K, key=jax.random.key(0), missing="marginalize")
    x[2, 0], x[5, 0], x[7, 1] = 0.0, 0.0, np.inf
    with pytest.raises(ValueError, match="`x` must be finite"):
        em.impute(x, gmm)
