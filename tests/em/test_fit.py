"""jaxvi.em.fit: trajectories against scikit-learn, the feature cache, restarts and
compilation, robustness on degenerate data, MAP-EM, fit inside jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

from jaxvi import em
from jaxvi.em import driver
from jaxvi.em import stats as em_stats
from jaxvi.em.driver import fit_from_keys as _fit_from_keys

COV_TYPES = em.COVARIANCE_TYPES


@pytest.mark.parametrize("cov", COV_TYPES)
def test_trajectory_matches_sklearn(x64, cov, blobs, init_params, rel):
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


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_fit_with_cached_features_equals_recomputed(x64, monkeypatch, cov, blobs, init_params, rel):
    # `fit` computes φ(x − c) once when it fits in memory; without the cache it recomputes it
    # in every iteration. Same numbers either way, and the same as em_step iterated by hand.
    x = jnp.asarray(blobs(seed=3, offset=50.0))
    gmm, _ = init_params(np.asarray(x), 3, cov)
    cached = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, init=gmm, max_iter=5,
                    tol=0.0, chunk_size=50)
    monkeypatch.setattr(em_stats, "_FEATURE_CACHE_BYTES", 0)
    recomputed = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov, init=gmm,
                        max_iter=5, tol=0.0, chunk_size=50)
    by_hand = gmm
    for _ in range(5):
        by_hand, _ = em.em_step(x, by_hand)
    for other in (recomputed.gmm, by_hand):
        assert rel(cached.gmm.covariances, other.covariances) < 1e-10
        assert rel(cached.gmm.means, other.means) < 1e-12
    assert rel(cached.history, recomputed.history) < 1e-12


def test_fit_restarts_keep_best_and_compile_once(x64, blobs):
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
    # The figure reported is that of the returned model, which the last M step raised above
    # the last E step's.
    assert float(best.log_likelihood) == pytest.approx(
        float(jnp.mean(em.log_prob(x, best.gmm))), rel=1e-12)
    assert float(best.log_likelihood) >= hist[n - 1]
    # Same shapes and static config: no retrace.
    # (These 240 rows fit one bucket: the loop is `fit_from_starts`, its start `initial_params`.)
    programs = (_fit_from_keys, driver.fit_from_starts, driver._initial_params)
    sizes = [p._cache_size() for p in programs]
    size = _fit_from_keys._cache_size()
    em.fit(x + 1.0, 4, key=jax.random.key(3), n_init=4, init="random", max_iter=30)
    assert _fit_from_keys._cache_size() == size
    assert [p._cache_size() for p in programs] == sizes
    # Warm start from the fitted model converges at once and does not lower the likelihood.
    warm = em.fit(x, 4, key=key, init=best.gmm, max_iter=30)
    assert float(warm.history[0]) >= float(best.log_likelihood) - 1e-12


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


def test_empty_component_gets_no_nan(x64, blobs, init_params):
    x = blobs(seed=1)
    gmm, _ = init_params(x, 3, "full")
    far = gmm._replace(means=gmm.means.at[2].set(1e3))  # owns no point: responsibilities 0
    res = em.fit(x, 3, key=jax.random.key(0), init=far, max_iter=5, tol=0.0)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(res.gmm))
    assert float(res.gmm.weights[2]) < 1e-12


@pytest.mark.parametrize("cov", COV_TYPES)
def test_float32_large_offset_positive_variances(cov, blobs, init_params):
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


def test_fit_runs_inside_jit(x64, blobs, rel):
    x = jnp.asarray(blobs(seed=6, n_per=20, d=2))
    eager = em.fit(x, 3, key=jax.random.key(2), max_iter=15)
    jitted = jax.jit(lambda x, key: em.fit(x, 3, key=key, max_iter=15))(x, jax.random.key(2))
    assert abs(float(jitted.log_likelihood) - float(eager.log_likelihood)) < 1e-10
    assert rel(jitted.gmm.means, eager.gmm.means) < 1e-10
