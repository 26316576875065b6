"""jaxvi.em: identities of EM as coordinate ascent on the free energy, agreement with
scikit-learn's GaussianMixture (float64), numerical robustness and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from jaxvi import em

COV_TYPES = em.COVARIANCE_TYPES


def blobs(seed=0, n_per=60, d=3, k=3, spread=4.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = spread * rng.normal(size=(k, d))
    x = np.concatenate([rng.normal(size=(n_per, d)) * (0.5 + i / k) + centres[i]
                        for i in range(k)])
    return rng.permutation(x) + offset


def init_params(x, k, cov, seed=1):
    """Initial (GMM, scikit-learn precisions_init) pair from the same parameters."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    w = rng.dirichlet(np.full(k, 5.0))
    m = x[rng.choice(len(x), k, replace=False)] + 0.1
    if cov == "full":
        a = rng.normal(size=(k, d, d))
        c = a @ np.swapaxes(a, -1, -2) / d + np.eye(d)
        p = np.linalg.inv(c)
    elif cov == "tied":
        a = rng.normal(size=(d, d))
        c = a @ a.T / d + np.eye(d)
        p = np.linalg.inv(c)
    elif cov == "diag":
        c = rng.uniform(0.5, 2.0, size=(k, d))
        p = 1.0 / c
    else:
        c = rng.uniform(0.5, 2.0, size=(k,))
        p = 1.0 / c
    return em.GMM(jnp.asarray(w), jnp.asarray(m), jnp.asarray(c), cov), (w, m, p)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


# ---------------------------------------------------------------------------------------------
# Free energy and monotonicity


@pytest.mark.parametrize("cov", COV_TYPES)
def test_free_energy_after_e_step_equals_log_likelihood(x64, cov):
    x = blobs()
    gmm, _ = init_params(x, 3, cov)
    log_resp, mean_ll = em.e_step(x, gmm)
    f = em.free_energy(x, gmm, jnp.exp(log_resp))
    assert abs(float(f) - float(mean_ll)) < 1e-10
    # Same under jit, and mean_ll is the mean of log_prob.
    f_jit = jax.jit(em._free_energy)(jnp.asarray(x), gmm, jnp.exp(log_resp))
    assert abs(float(f_jit) - float(mean_ll)) < 1e-10
    assert abs(float(jnp.mean(em.log_prob(x, gmm))) - float(mean_ll)) < 1e-12
    # Any other q gives a smaller F (Gibbs' inequality).
    q = jax.nn.softmax(log_resp + 0.5 * jax.random.normal(jax.random.key(0), log_resp.shape))
    assert float(em.free_energy(x, gmm, q)) < float(mean_ll)


def test_log_prob_matches_scipy(x64):
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


# ---------------------------------------------------------------------------------------------
# Agreement with scikit-learn


@pytest.mark.parametrize("cov", COV_TYPES)
def test_trajectory_matches_sklearn(x64, cov):
    x = blobs(seed=3, d=3, k=3)
    gmm0, (w, m, p) = init_params(x, 3, cov)
    sk = SkGMM(3, covariance_type=cov, tol=0, max_iter=25, weights_init=w, means_init=m,
               precisions_init=p).fit(x)
    res = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, max_iter=25, tol=0.0,
                 init=gmm0)
    assert int(res.n_iter) == 25 and not bool(res.converged)
    assert rel(res.history, sk.lower_bounds_) < 1e-8
    assert rel(res.log_likelihood, sk.lower_bound_) < 1e-8
    assert rel(res.gmm.weights, sk.weights_) < 1e-8
    assert rel(res.gmm.means, sk.means_) < 1e-8
    assert rel(res.gmm.covariances, sk.covariances_) < 1e-8
    # E step on the fitted model matches scikit-learn's predict_proba / score_samples.
    log_resp, mean_ll = em.e_step(x, res.gmm)
    assert rel(jnp.exp(log_resp), sk.predict_proba(x)) < 1e-8
    assert rel(mean_ll, sk.score(x)) < 1e-10


@pytest.mark.parametrize("cov", COV_TYPES)
def test_m_step_matches_sklearn(x64, cov):
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
def test_em_step_chunked_and_combined_equals_single(x64, cov):
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


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_fit_with_cached_features_equals_recomputed(x64, monkeypatch, cov):
    # `fit` computes φ(x − c) once when it fits in memory; without the cache it recomputes it
    # in every iteration. Same numbers either way, and the same as em_step iterated by hand.
    x = jnp.asarray(blobs(seed=3, offset=50.0))
    gmm, _ = init_params(np.asarray(x), 3, cov)
    cached = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, init=gmm, max_iter=5,
                    tol=0.0, chunk_size=50)
    monkeypatch.setattr(em, "_FEATURE_CACHE_BYTES", 0)
    recomputed = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, init=gmm,
                        max_iter=5, tol=0.0, chunk_size=50)
    by_hand = gmm
    for _ in range(5):
        by_hand, _ = em.em_step(x, by_hand)
    for other in (recomputed.gmm, by_hand):
        assert rel(cached.gmm.covariances, other.covariances) < 1e-10
        assert rel(cached.gmm.means, other.means) < 1e-12
    assert rel(cached.history, recomputed.history) < 1e-12


# ---------------------------------------------------------------------------------------------
# fit: restarts, warm start, compilation, initialisation


def test_fit_restarts_keep_best_and_compile_once(x64):
    x = blobs(seed=7, k=4, spread=3.0)
    key = jax.random.key(11)
    best = em.fit(x, 4, key=key, n_init=4, init="random", max_iter=30)
    # Each restart run on its own, from the initialisation of the same split key.
    singles = [em.fit(x, 4, key=kk, max_iter=30,
                      init=em.initialize(kk, jnp.asarray(x), 4, init="random")).log_likelihood
               for kk in jax.random.split(key, 4)]
    assert len({round(float(s), 6) for s in singles}) > 1  # the restarts differ
    assert float(best.log_likelihood) == pytest.approx(max(map(float, singles)), rel=1e-10)
    hist = np.asarray(best.history)
    n = int(best.n_iter)
    assert np.all(np.isfinite(hist[:n])) and np.all(np.isnan(hist[n:]))
    assert hist[n - 1] == float(best.log_likelihood)
    # Same shapes and static config: no retrace.
    size = em._fit_from_keys._cache_size()
    em.fit(x + 1.0, 4, key=jax.random.key(3), n_init=4, init="random", max_iter=30)
    assert em._fit_from_keys._cache_size() == size
    # Warm start from the fitted model converges at once and does not lower the likelihood.
    warm = em.fit(x, 4, key=key, init=best.gmm, max_iter=30)
    assert float(warm.history[0]) >= float(best.log_likelihood) - 1e-12


def test_kmeans_plusplus_init(x64):
    x = blobs(seed=8, k=3, spread=20.0)
    centres = em.kmeans_plusplus(jax.random.key(0), jnp.asarray(x), 3)
    # Centres are data points, one in each well-separated blob.
    assert all(np.any(np.all(np.asarray(x) == c, axis=1)) for c in np.asarray(centres))
    res = em.fit(x, 3, key=jax.random.key(0), max_iter=50)
    sk = SkGMM(3, random_state=0).fit(x)
    assert bool(res.converged)
    assert float(res.log_likelihood) == pytest.approx(sk.lower_bound_, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Robustness


@pytest.mark.parametrize("cov", COV_TYPES)
def test_degenerate_data_stays_finite(x64, cov):
    rng = np.random.default_rng(0)
    # Same shapes (one compilation): duplicated points, a constant feature, K = N − 1.
    duplicated = np.repeat(rng.normal(size=(2, 2)), 3, axis=0)
    constant_feature = np.c_[rng.normal(size=(6, 1)), np.full((6, 1), 7.0)]
    nearly_n = rng.normal(size=(6, 2))
    for x in [duplicated, constant_feature, nearly_n]:
        res = em.fit(x, 5, key=jax.random.key(0), covariance_type=cov, max_iter=20)
        for leaf in jax.tree_util.tree_leaves(res.gmm):
            assert np.all(np.isfinite(leaf))
        assert np.isfinite(float(res.log_likelihood))


def test_empty_component_gets_no_nan(x64):
    x = blobs(seed=1)
    gmm, _ = init_params(x, 3, "full")
    far = gmm._replace(means=gmm.means.at[2].set(1e3))  # owns no point: responsibilities 0
    res = em.fit(x, 3, key=jax.random.key(0), init=far, max_iter=5, tol=0.0)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(res.gmm))
    assert float(res.gmm.weights[2]) < 1e-12


@pytest.mark.parametrize("cov", COV_TYPES)
def test_float32_large_offset_positive_variances(cov):
    x = blobs(seed=4, spread=2.0, offset=1e4).astype(np.float32)
    gmm0, _ = init_params(x - 1e4, 3, cov)
    gmm0 = gmm0._replace(means=gmm0.means + 1e4)
    res = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, max_iter=30, reg_covar=0.0,
                 init=jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), gmm0))
    c = np.asarray(res.gmm.covariances)
    assert c.dtype == np.float32
    if cov in ("full", "tied"):
        assert np.all(np.linalg.eigvalsh(c.astype(np.float64)) > 0.05)
    else:
        assert np.all(c > 0.05)
    # And close to the float64 fit of the same data from the same initialisation.
    with jax.enable_x64(True):
        ref = em.fit(x.astype(np.float64), 3, key=jax.random.key(0), covariance_type=cov,
                     max_iter=30, reg_covar=0.0,
                     init=jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), gmm0))
    assert abs(float(res.log_likelihood) - float(ref.log_likelihood)) < 1e-3


def test_bad_input_names_the_argument(x64):
    x = blobs()
    gmm, _ = init_params(x, 3, "full")
    key = jax.random.key(0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="`x`"):
        em.fit(bad, 3, key=key)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="`x`"):
        em.e_step(bad, gmm)
    with pytest.raises(ValueError, match="`x`.*dimensions"):
        em.fit(x[:, 0], 3, key=key)
    with pytest.raises(ValueError, match="`n_components`"):
        em.fit(x[:2], 3, key=key)
    with pytest.raises(ValueError, match="`covariance_type`"):
        em.fit(x, 3, key=key, covariance_type="banded")
    with pytest.raises(ValueError, match="`covariance_type`"):
        em.m_step(x, np.full((len(x), 3), 1 / 3), "banded")
    with pytest.raises(ValueError, match="`resp`"):
        em.m_step(x, np.full((len(x), 3), 0.5), "full")
    with pytest.raises(ValueError, match="`resp`"):
        em.free_energy(x, gmm, np.full((len(x), 3), 0.3))
    with pytest.raises(ValueError, match="`init`"):
        em.fit(x, 3, key=key, init="kmeans-ish")
    with pytest.raises(ValueError, match="`init`"):
        em.fit(x, 2, key=key, init=gmm)


# ---------------------------------------------------------------------------------------------
# Sampling, MAP, stepwise EM


def test_sample_moments(x64):
    gmm, _ = init_params(blobs(), 3, "full")
    xs, z = em.sample(jax.random.key(0), gmm, 40_000)
    mean = np.asarray(gmm.weights @ gmm.means)
    assert np.allclose(np.mean(np.asarray(xs), 0), mean, atol=0.05)
    assert np.allclose(np.bincount(np.asarray(z), minlength=3) / 40_000, gmm.weights, atol=0.01)
    cov0 = np.cov(np.asarray(xs)[np.asarray(z) == 0].T)
    assert np.allclose(cov0, gmm.covariances[0], atol=0.1)


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
def test_map_m_step_closed_form(x64, cov):
    x = blobs(seed=9, d=2)
    resp = np.random.default_rng(1).dirichlet(np.ones(3), size=len(x))
    prior = em.Prior(2.0, np.array([0.5, -1.0]), 0.5, 4.0, np.array([[2.0, 0.3], [0.3, 1.0]]))
    gmm = em.m_step(x, resp, cov, 0.0, prior=prior)
    w, means, covs = map_reference(x, resp, prior, cov)
    assert rel(gmm.weights, w) < 1e-12 and rel(gmm.means, means) < 1e-12
    assert rel(gmm.covariances, covs) < 1e-12


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_map_keeps_components_from_collapsing(x64, cov):
    # Duplicated points, no reg_covar: ML collapses (singular covariance: a ValueError, not
    # NaN), MAP does not.
    dup = np.repeat(np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]]), 8, axis=0)
    with pytest.raises(ValueError, match="`reg_covar`"):
        em.fit(dup, 3, key=jax.random.key(0), covariance_type=cov, reg_covar=0.0, max_iter=10)
    mp = em.fit(dup, 3, key=jax.random.key(0), covariance_type=cov, reg_covar=0.0,
                max_iter=10, prior=em.default_prior(dup))
    mp_cov = np.asarray(mp.gmm.covariances)
    assert np.min(mp_cov if cov == "diag" else np.linalg.eigvalsh(mp_cov)) > 1e-3
    assert np.isfinite(float(mp.log_likelihood))


def test_fit_minibatch_reaches_full_batch_likelihood(x64):
    x = blobs(seed=12, n_per=400, d=2, k=3, spread=5.0)
    # From the same rough start (k-means++ on 60 points, a few EM steps), as a user would.
    start = em.fit(x[:60], 3, key=jax.random.key(1), max_iter=3).gmm
    full = em.fit(x, 3, key=jax.random.key(0), init=start, max_iter=200, tol=1e-9)
    rng = np.random.default_rng(0)
    batches = (x[rng.choice(len(x), 100, replace=False)] for _ in range(80))
    res = em.fit_minibatch(batches, 3, key=jax.random.key(0), kappa=0.6, init=start)
    assert int(res.n_iter) == 80 and res.history.shape == (80,)
    ll = float(jnp.mean(em.log_prob(x, res.gmm)))
    assert ll > float(full.log_likelihood) - 0.01
    assert ll > float(jnp.mean(em.log_prob(x, start))) + 0.05  # it did learn
    with pytest.raises(ValueError, match="`kappa`"):
        em.fit_minibatch([x], 3, key=jax.random.key(0), kappa=0.3)


def test_fit_runs_inside_jit(x64):
    x = jnp.asarray(blobs(seed=6, n_per=20, d=2))
    eager = em.fit(x, 3, key=jax.random.key(2), max_iter=15)
    jitted = jax.jit(lambda x, key: em.fit(x, 3, key=key, max_iter=15))(x, jax.random.key(2))
    assert abs(float(jitted.log_likelihood) - float(eager.log_likelihood)) < 1e-10
    assert rel(jitted.gmm.means, eager.gmm.means) < 1e-10
