"""jaxvi.GaussianMixture: scikit-learn's estimator checks, agreement with scikit-learn's
GaussianMixture, and use inside a Pipeline."""

import warnings

import jax
import numpy as np
import pytest
from shared_inputs import three_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxvi
from jaxvi.sklearn import GaussianMixture


@parametrize_with_checks([GaussianMixture()])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def blobs(seed=0):
    return three_blobs(50, seed)


def inits(cov, k=3, d=3):
    rng = np.random.default_rng(5)
    w = rng.dirichlet(np.full(k, 5.0))
    m = rng.normal(size=(k, d)) * 3
    p = {"full": np.stack([np.eye(d) * (0.5 + i) for i in range(k)]), "tied": np.eye(d) * 0.7,
         "diag": rng.uniform(0.3, 2.0, size=(k, d)), "spherical": rng.uniform(0.3, 2.0, k)}[cov]
    return dict(weights_init=w, means_init=m, precisions_init=p)


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_matches_sklearn_from_same_init(cov):
    x = blobs()
    kw = dict(n_components=3, covariance_type=cov, tol=0.0, max_iter=15, **inits(cov))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(**kw).fit(x)
        ref = SkGMM(**kw).fit(x)
    for name in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8,
                                   atol=1e-12, err_msg=name)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-10)
    assert ours.n_iter_ == ref.n_iter_ == 15 and ours.converged_ == ref.converged_ is False
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-10)
    np.testing.assert_allclose(ours.score_samples(x), ref.score_samples(x), rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
    assert ours.bic(x) == pytest.approx(ref.bic(x), rel=1e-10)
    assert ours.aic(x) == pytest.approx(ref.aic(x), rel=1e-10)
    # Computation was float64, yet nothing global changed.
    assert ours.means_.dtype == np.float64 and not jax.config.jax_enable_x64


def test_pipeline_warm_start_sample_and_top_level_name():
    x = blobs(1) * 10 + 100
    assert jaxvi.GaussianMixture is GaussianMixture
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0, n_init=2))
    labels = pipe.fit_predict(x)
    assert labels.shape == (150,) and set(labels) == {0, 1, 2}
    np.testing.assert_array_equal(pipe.predict(x), labels)
    assert np.isfinite(pipe.score(x))
    gm = pipe[-1]
    assert gm.converged_ and gm.n_iter_ >= 1
    ref = SkGMM(3, random_state=0, n_init=2).fit(StandardScaler().fit_transform(x))
    assert gm.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-6)
    # Warm start continues from the fitted parameters: converges at once, no worse.
    gm.set_params(warm_start=True, max_iter=5)
    bound = gm.lower_bound_
    gm.fit(StandardScaler().fit_transform(x))
    assert gm.n_iter_ <= 2 and gm.lower_bound_ >= bound - 1e-9
    xs, ys = gm.sample(400)
    assert xs.shape == (400, 3) and np.all(np.diff(ys) >= 0)
    assert np.allclose(np.bincount(ys, minlength=3) / 400, gm.weights_, atol=0.08)


def test_bad_parameters_raise():
    x = blobs()
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, covariance_type="banded").fit(x)
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(4).fit(x[:3])
    with pytest.raises(ValueError, match="means_init"):
        GaussianMixture(3, means_init=np.zeros((2, 3))).fit(x)
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(3, init_params="spectral").fit(x)


def test_sample_weight_fixed_and_partial_fit():
    x = blobs(2)
    # Weights 0..3 summing to len(x): the weighted and the repeated data have one shape.
    w = np.random.default_rng(0).permutation(np.tile([0.0, 2, 1, 1, 3, 0, 0, 1, 1, 1], 15))
    x_rep = np.repeat(x, w.astype(int), axis=0)
    kw = dict(n_components=3, tol=0.0, max_iter=8, fixed=("means",), **inits("full"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = GaussianMixture(**kw).fit(x, sample_weight=w)
        repeated = GaussianMixture(**kw).fit(x_rep, sample_weight=np.ones(len(x_rep)))
    for name in ["weights_", "means_", "covariances_"]:
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name),
                                   rtol=1e-9, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)
    assert weighted.score(x, sample_weight=w) == pytest.approx(repeated.score(x_rep), rel=1e-12)
    np.testing.assert_array_equal(weighted.means_, kw["means_init"])
    assert np.all(np.diff(weighted.lower_bounds_) >= -1e-12)
    for bad in [-w, w[:-1], 0 * w, np.where(w > 1, np.nan, w)]:
        with pytest.raises(ValueError, match="sample_weight"):
            GaussianMixture(3).fit(x, sample_weight=bad)
    with pytest.raises(ValueError, match="fixed"):
        GaussianMixture(3, fixed=("precisions",)).fit(x)

    # partial_fit over the batches of a shuffled data set ends near fit on the whole set.
    big = np.concatenate([blobs(s) for s in range(4)])
    big = big[np.random.default_rng(1).permutation(len(big))]
    full = GaussianMixture(3, random_state=0).fit(big)
    online = GaussianMixture(3, random_state=0)
    for batch in np.array_split(big, 20):
        online.partial_fit(batch)
    assert online.n_iter_ == 20 and len(online.lower_bounds_) == 20
    # Within 0.02 nats per point of the full-batch optimum, and the same clusters: means
    # within 0.25 (the clusters' standard deviations are 0.6 to 1.4; the last steps still
    # move by ρ ≈ 0.17 of a 30-point batch's statistics).
    assert online.score(big) > full.score(big) - 0.02
    order = np.argsort(online.means_[:, 0])
    np.testing.assert_allclose(online.means_[order], full.means_[np.argsort(full.means_[:, 0])],
                               atol=0.25)
    with pytest.raises(ValueError, match="features"):
        online.partial_fit(big[:10, :2])


def test_unclear_errors_name_the_argument():
    """score(sample_weight="abc"), singular or indefinite precisions_init and partial_fit on
    a batch with NaN (with missing="marginalize") each name what the user passed."""
    x = blobs()
    gm = GaussianMixture(2, random_state=0, max_iter=5).fit(x)
    with pytest.raises(ValueError, match="`sample_weight` must be an array of real numbers"):
        gm.score(x, sample_weight="abc")
    eye = np.eye(3)
    for bad, what in ((np.stack([eye, np.diag([1.0, 1.0, 0.0])]), "positive definite"),
                      (np.stack([eye, -eye]), "positive definite")):
        with pytest.raises(ValueError, match=f"`precisions_init` must be {what}"):
            GaussianMixture(2, precisions_init=bad).fit(x)
    with pytest.raises(ValueError, match="`precisions_init` must be strictly positive"):
        GaussianMixture(2, covariance_type="diag", precisions_init=np.c_[
            np.ones((2, 2)), [0.0, 1.0]]).fit(x)
    holes = x.copy()
    holes[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN.*partial_fit does not take"):
        GaussianMixture(2, missing="marginalize", random_state=0).partial_fit(holes)
