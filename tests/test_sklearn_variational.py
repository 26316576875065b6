"""jaxvi.BayesianGaussianMixture: scikit-learn's estimator checks; fits equal to scikit-learn's
BayesianGaussianMixture's from the same initial posterior (both warm-started from it through
`fit`); predict / predict_proba / score_samples equal scikit-learn's methods on copied
parameters; warm start, sample, verbose output and bad parameters."""

import contextlib
import copy
import io
import warnings

import jax
import numpy as np
import pytest
from shared_inputs import four_blobs, three_blobs
from sklearn import metrics
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBGM
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxvi
from jaxvi.sklearn_variational import BayesianGaussianMixture

K, N_ITER = 4, 8
# What a warm start copies: the variational parameters (scikit-learn's `_get_parameters`).
POSTERIOR = ("weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_",
             "covariances_", "precisions_cholesky_")
FITTED = (*POSTERIOR, "weights_", "precisions_", "weight_concentration_prior_",
          "mean_precision_prior_", "mean_prior_", "degrees_of_freedom_prior_",
          "covariance_prior_", "lower_bounds_")


# "diag": the cheapest loop to compile (one compile per data shape the checks use).
@parametrize_with_checks([BayesianGaussianMixture(covariance_type="diag")])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def blobs(seed=0):
    return three_blobs(30, seed)


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_same_fit(ours, ref, tight=1e-8):
    for name in FITTED:
        want = getattr(ref, name)
        if name == "lower_bounds_":  # scikit-learn's tied bounds are (1,) arrays
            want = np.ravel(want)
        assert np.shape(getattr(ours, name)) == np.shape(want), name
        assert rel(getattr(ours, name), want) < tight, name
    assert ours.lower_bound_ == pytest.approx(float(np.squeeze(ref.lower_bound_)), rel=tight)
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_


# Two settings cover the attribute layouts: matrix vs vector precisions, the sticks' (a, b)
# pair vs a Dirichlet's α, a scalar tied ν and a scalar spherical covariance prior; the first
# also runs in chunks of 7 rows, the second with given priors.
CASES = {
    "tied-dp": dict(covariance_type="tied", weight_concentration_prior_type="dirichlet_process",
                    chunk_size=7),
    "spherical-dd": dict(covariance_type="spherical",
                         weight_concentration_prior_type="dirichlet_distribution",
                         weight_concentration_prior=2.0, mean_precision_prior=0.5,
                         mean_prior=[1.0, 0.0, -1.0], degrees_of_freedom_prior=2.5,
                         covariance_prior=1.5),
}


@pytest.fixture(scope="module", params=list(CASES))
def fitted(request):
    """(ours, scikit-learn's, x): both fitted by `fit` with warm_start=True from the same
    posterior (scikit-learn's `_initialize` on the same random responsibilities), tol = 0,
    N_ITER iterations, verbose output captured; then both continued for N_ITER more."""
    x = blobs()
    kw = dict(n_components=K, tol=0.0, max_iter=N_ITER, warm_start=True, random_state=0,
              **CASES[request.param])
    chunk_size = kw.pop("chunk_size", None)
    ref = SkBGM(**kw)
    ref._check_parameters(x)
    resp = np.random.default_rng(1).dirichlet(np.ones(K), size=len(x))
    ref._initialize(x, resp)
    ref.converged_, ref.lower_bound_ = False, -np.inf
    ours = BayesianGaussianMixture(**kw, chunk_size=chunk_size, verbose=2,
                                   verbose_interval=3)
    for name in POSTERIOR[:-1]:
        setattr(ours, name, copy.deepcopy(getattr(ref, name)))
    ours.converged_ = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(x)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            ours.fit(x)
        first = copy.deepcopy(ours)
        ref_first = copy.deepcopy(ref)
        ref.fit(x)
        ours.fit(x)
    return dict(ours=ours, ref=ref, first=first, ref_first=ref_first, x=x, out=out.getvalue())


def test_fit_equals_sklearn_and_warm_start_continues(fitted):
    """Every fitted attribute and the lower-bound trajectory equal scikit-learn's, after the
    first fit and after the warm-started second (which continues: its bounds go on rising
    from where the first ended)."""
    assert_same_fit(fitted["first"], fitted["ref_first"])
    assert_same_fit(fitted["ours"], fitted["ref"])
    first, ours = fitted["first"], fitted["ours"]
    assert ours.n_iter_ == N_ITER and ours.lower_bounds_[0] > first.lower_bounds_[-1] - 1e-9
    assert np.all(np.diff([*first.lower_bounds_, *ours.lower_bounds_]) > -1e-9)
    assert isinstance(ours.lower_bound_, float) and ours.means_.dtype == np.float64
    assert not jax.config.jax_enable_x64
    lines = fitted["out"].splitlines()
    assert [ln.split("\t")[0].strip() for ln in lines[1:-1]] == ["Iteration 3", "Iteration 6"]
    assert lines[-1].startswith("Initialization did not converge.")
    assert f"{first.lower_bounds_[5]:.5f}" in lines[2]


def test_inference_equals_sklearn_on_copied_parameters(fitted):
    """predict, predict_proba, score_samples and score of our estimator holding scikit-learn's
    fitted parameters equal scikit-learn's own methods (the E step under q), on new points."""
    ref, ours, x = fitted["ref"], copy.deepcopy(fitted["ours"]), fitted["x"]
    for name in (*POSTERIOR, "weights_"):
        setattr(ours, name, copy.deepcopy(getattr(ref, name)))
    # New points, some far out (x's shape: the E step compiled by fit is reused).
    x_new = 1.5 * x + np.random.default_rng(2).normal(size=x.shape)
    np.testing.assert_allclose(ours.predict_proba(x_new), ref.predict_proba(x_new), rtol=0,
                               atol=1e-10)
    np.testing.assert_allclose(ours.score_samples(x_new), ref.score_samples(x_new), rtol=1e-10)
    assert ours.score(x_new) == pytest.approx(ref.score(x_new), rel=1e-10)
    np.testing.assert_array_equal(ours.predict(x_new), ref.predict(x_new))


def test_sample_and_top_level_name(fitted):
    ours = fitted["ours"]
    assert jaxvi.BayesianGaussianMixture is BayesianGaussianMixture
    xs, ys = ours.sample(600)
    assert xs.shape == (600, 3) and ys.shape == (600,) and np.all(np.diff(ys) >= 0)
    assert set(ys) <= set(range(K))
    assert np.allclose(np.bincount(ys, minlength=K) / 600, ours.weights_, atol=0.06)
    big = int(np.argmax(ours.weights_))
    assert rel(xs[ys == big].mean(axis=0), ours.means_[big]) < 0.2


@pytest.mark.parametrize("change", ["n_components", "weight_concentration_prior_type"])
def test_warm_start_with_other_options_raises(fitted, change):
    ours = copy.deepcopy(fitted["ours"])
    other = {"dirichlet_process": "dirichlet_distribution",
             "dirichlet_distribution": "dirichlet_process"}[ours.weight_concentration_prior_type]
    ours.set_params(**{change: K + 1 if change == "n_components" else other})
    with pytest.raises(ValueError, match="warm_start=True"):
        ours.fit(fitted["x"])


BAD = [
    (dict(weight_concentration_prior_type="stick"), "weight_concentration_prior_type"),
    (dict(weight_concentration_prior=0.0), "weight_concentration_prior"),
    (dict(mean_precision_prior=-1.0), "mean_precision_prior"),
    (dict(mean_prior=[0.0, 1.0]), "mean_prior"),
    (dict(degrees_of_freedom_prior=2.0), "degrees_of_freedom_prior"),
    (dict(covariance_prior=np.diag([1.0, -1.0, 1.0])), "covariance_prior"),
    (dict(covariance_prior=np.eye(2)), "covariance_prior"),
    (dict(init_params="spectral"), "init_params"),
    (dict(verbose_interval=0), "verbose_interval"),
    (dict(n_init=0), "n_init"),
    (dict(covariance_type="banded"), "covariance_type"),
]


@pytest.mark.parametrize("params, name", BAD, ids=[name for _, name in BAD])
def test_bad_parameters_raise_naming_them(params, name):
    with pytest.raises(ValueError, match=name):
        BayesianGaussianMixture(n_components=2, **params).fit(blobs())


@pytest.mark.parametrize("cov,wt", [("full", "dirichlet_process"),
                                    ("diag", "dirichlet_distribution"),
                                    ("spherical", "dirichlet_process")])
def test_pruned_components_fit_predict_and_sample(cov, wt):
    """Pruning, what the estimator is for: with K = 12 on 4 blobs and a small concentration
    the pruned components' expected-value weights underflow to 0, which is legitimate inside
    the fit (not re-checked as a user's GMM). As scikit-learn's, no component spans two blobs."""
    x = four_blobs()
    kw = dict(n_components=12, weight_concentration_prior=1e-3, covariance_type=cov,
              weight_concentration_prior_type=wt, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = BayesianGaussianMixture(**kw).fit(x)
        ref = SkBGM(**kw).fit(x)
    proba = ours.predict_proba(x)
    assert np.sum(np.all(proba == 0.0, axis=0)) >= 1  # some weight underflowed to exactly 0
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    truth = np.repeat(np.arange(4), (700, 900, 1000, 1150))
    for labels in (ours.predict(x), ref.predict(x)):  # no component spans two blobs
        assert metrics.homogeneity_score(truth, labels) > 0.99
    assert np.all(np.isfinite(ours.score_samples(x)))
    assert abs(ours.score(x) - ref.score(x)) < 0.05
    drawn, z = ours.sample(200)
    assert drawn.shape == (200, 3) and set(np.unique(z)) <= set(np.flatnonzero(ours.weights_))


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_constant_column_fits_with_the_default_prior(cov):
    """A constant column makes the data covariance, the default covariance prior, singular:
    scikit-learn fits it, and so does this estimator (the default prior floored at reg_covar);
    with reg_covar=0 the error says why and names the arguments that fix it."""
    x = np.c_[blobs(), np.ones(90)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = BayesianGaussianMixture(n_components=3, covariance_type=cov, random_state=0)
        ref = SkBGM(n_components=3, covariance_type=cov, random_state=0).fit(x)
        labels = ours.fit_predict(x)
    assert np.all(np.isfinite(ours.score_samples(x)))
    assert metrics.adjusted_rand_score(labels, ref.predict(x)) > 0.9
    psi = np.atleast_1d(ours.covariance_prior_)
    assert float(np.min(np.linalg.eigvalsh(psi) if psi.ndim == 2 else psi)) >= 1e-6 * 0.999
    with pytest.raises(ValueError, match="default `covariance_prior`.*singular.*`reg_covar`"):
        BayesianGaussianMixture(n_components=3, covariance_type=cov, reg_covar=0.0).fit(x)
