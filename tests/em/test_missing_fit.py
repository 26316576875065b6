"""jaxvi.em.missing_fit (`fit(..., missing="marginalize")`): with no NaN it is complete-data
EM; the observed-data log-likelihood never decreases (hypothesis over missing patterns); with
30 % of the entries removed it recovers the truth better than EM on mean-imputed data; a NaN
is still refused by default. `GaussianMixture(missing="marginalize")`
(jaxvi/estimators/gaussian_mixture.py's hook into this fit) is tested here too, on the same
fit, whose compiled loop it reuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_inputs import MISSING_COV, MISSING_LOC, missing_data

from jaxvi import GaussianMixture, em
from jaxvi.em.missing_fit import mean_imputed

ITERS = 30


def _fit(x, init, missing=None):
    g0 = em.GMM(*(jnp.asarray(a) for a in init), "full")
    return em.fit(x, 2, key=jax.random.key(0), init=g0, max_iter=ITERS, tol=0.0,
                  missing=missing)


@pytest.fixture(scope="module")
def fits():
    """float64 fits from one initial GMM: complete-data EM, missing-value EM on the same
    complete data, on the data with 30 % removed, and EM on those data mean-imputed."""
    x, holey, init = missing_data()
    with jax.enable_x64(True):
        return dict(complete=_fit(x, init), complete_missing=_fit(x, init, "marginalize"),
                    missing=_fit(holey, init, "marginalize"),
                    imputed=_fit(mean_imputed(holey), init), holey=holey)


def test_without_nan_it_is_complete_data_em(fits):
    a, b = fits["complete"], fits["complete_missing"]
    for name in ("weights", "means", "covariances"):
        got, want = np.asarray(getattr(b.gmm, name)), np.asarray(getattr(a.gmm, name))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(b.history, a.history, rtol=1e-12)


def _errors(gmm):
    """(max |μ̂ − μ|, max |Σ̂ − Σ|) against the truth, components matched by their means."""
    means, covs = np.asarray(gmm.means), np.asarray(gmm.covariances)
    order = np.argsort(means[:, 0])
    return (np.max(np.abs(means[order] - MISSING_LOC)),
            np.max(np.abs(covs[order] - MISSING_COV)))


def test_with_30_percent_missing_it_beats_mean_imputation(fits):
    mean_err, cov_err = _errors(fits["missing"].gmm)
    imp_mean_err, imp_cov_err = _errors(fits["imputed"].gmm)
    full_mean_err, full_cov_err = _errors(fits["complete"].gmm)
    # Margin: at most half of mean imputation's error, within 2.5× of the complete data's.
    assert mean_err < 0.5 * imp_mean_err, (mean_err, imp_mean_err)
    assert cov_err < 0.5 * imp_cov_err, (cov_err, imp_cov_err)
    assert mean_err < max(2.5 * full_mean_err, 0.1) and cov_err < 2.5 * full_cov_err
    hist = np.asarray(fits["missing"].history)
    assert np.all(np.diff(hist) >= -1e-10), np.diff(hist)
    # Its log-likelihoods are observed-data ones, of the parameters before each M step.
    with jax.enable_x64(True):
        _, ll = em.marginal_e_step(fits["holey"], fits["missing"].gmm)
    assert float(ll) >= hist[-1] - 1e-12 and float(ll) - hist[-1] < 1e-6


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), columns=st.permutations(range(3)))
def test_observed_log_likelihood_never_decreases(fits, seed, columns):
    # Masks: the fixture's, rows shuffled and coordinates permuted, on fresh data from the
    # same mixture: the pattern counts, hence the shapes (one compiled loop), stay fixed.
    rng = np.random.default_rng(seed)
    holes = np.isnan(fits["holey"])[rng.permutation(len(fits["holey"]))][:, list(columns)]
    x, _, init = missing_data(seed=seed + 1)
    with jax.enable_x64(True):
        hist = np.asarray(_fit(np.where(holes, np.nan, x), init, "marginalize").history)
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[1:])), np.diff(hist)


def test_a_mostly_missing_column_exact_em_never_decreases_and_reg_covar_is_what_breaks_it():
    """With reg_covar = 0 each M step is the exact maximiser, so the observed-data
    log-likelihood never decreases (to round-off) even with a 90 %-missing column; scikit-learn's
    reg_covar, added after the maximisation, is what can make it fall while it converges (the
    documented exception): the same fit with reg_covar = 1e-3 drops by far more than round-off."""
    x, holey, _ = missing_data(seed=2)
    rng = np.random.default_rng(1)
    holey[(rng.random(len(holey)) < 0.9) & np.isfinite(holey[:, :2]).any(axis=1), 2] = np.nan
    drops = {}
    with jax.enable_x64(True):
        for reg in (0.0, 1e-3):
            hist = np.asarray(em.fit(holey, 2, key=jax.random.key(2), max_iter=400, tol=0.0,
                                     reg_covar=reg, missing="marginalize").history)
            drops[reg] = float(np.min(np.diff(hist)))
    assert drops[0.0] >= -1e-13, drops
    assert drops[1e-3] < -1e-9, drops  # measured -5e-7 nats/point


def test_nan_is_refused_unless_asked_for():
    _, holey, _ = missing_data(n=20)
    with pytest.raises(ValueError, match=r"`x` must be finite; got \d+ NaN"):
        em.fit(holey, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`missing` must be one of"):
        em.fit(holey, 2, key=jax.random.key(0), missing="mean")
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(holey)
    with pytest.raises(ValueError, match="`missing` must be one of"):
        GaussianMixture(2, missing="drop").fit(holey)


def test_a_column_never_observed_is_refused_in_fit_only():
    """A feature with no observed entry used to be accepted (its variance growing by reg_covar
    every iteration); a fit refuses it naming the column, while the densities of a fitted
    model still take a batch in which a column happens to be missing throughout."""
    _, holey, _ = missing_data(n=20)
    blank = holey.copy()
    blank[:, 1] = np.nan
    blank[np.all(np.isnan(blank), axis=1), 0] = 0.5
    with pytest.raises(ValueError, match=r"`x` column\(s\) \[1\] have every entry missing"):
        em.fit(blank, 2, key=jax.random.key(0), missing="marginalize")
    with pytest.raises(ValueError, match=r"`X` column\(s\) \[1\]|`x` column\(s\) \[1\]"):
        GaussianMixture(2, missing="marginalize").fit(blank)
    gmm = em.fit(np.nan_to_num(holey), 2, key=jax.random.key(0), max_iter=3).gmm
    assert np.all(np.isfinite(np.asarray(em.marginal_log_prob(blank, gmm))))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_accepts_nan_rows_and_matches_em(fits):
    _, holey, (w, m, c) = missing_data()
    est = GaussianMixture(2, missing="marginalize", max_iter=ITERS, tol=0.0, weights_init=w,
                          means_init=m, precisions_init=np.linalg.inv(c)).fit(holey)
    ref = fits["missing"]
    with jax.enable_x64(True):
        log_resp, _ = em.marginal_e_step(holey, ref.gmm)
        log_p = em.marginal_log_prob(holey, ref.gmm)
    np.testing.assert_allclose(est.means_, ref.gmm.means, rtol=1e-10)
    np.testing.assert_allclose(est.covariances_, ref.gmm.covariances, rtol=1e-10)
    np.testing.assert_allclose(est.lower_bound_, ref.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(est.predict_proba(holey), np.exp(log_resp), atol=1e-10)
    np.testing.assert_array_equal(est.predict(holey), np.argmax(log_resp, axis=1))
    np.testing.assert_allclose(est.score_samples(holey), log_p, rtol=1e-10)
    assert np.isfinite(est.bic(holey))
    with pytest.raises(ValueError, match="row 0 has every entry missing"):
        est.predict(np.full((2, 3), np.nan))


def test_weights_and_frozen_means_compose_with_missing_values(fits, rel):
    """Integer sample weights (zeros included) give the fit of the rows repeated; frozen
    means stay bit for bit while the observed-data log-likelihood still never decreases."""
    holey = fits["holey"]
    x, _, init = missing_data()
    g0 = em.GMM(*(jnp.asarray(a) for a in init), "full")
    w = np.random.default_rng(3).integers(0, 3, size=len(holey))
    kw = dict(key=jax.random.key(0), init=g0, max_iter=ITERS, tol=0.0, missing="marginalize")
    with jax.enable_x64(True):
        weighted = em.fit(holey, 2, sample_weight=w.astype(float), **kw)
        repeated = em.fit(np.repeat(holey, w, axis=0), 2, **kw)
        frozen = em.fit(holey, 2, fixed=("means",), **kw)
    assert rel(weighted.gmm.means, repeated.gmm.means) < 1e-10
    assert rel(weighted.gmm.covariances, repeated.gmm.covariances) < 1e-10
    assert rel(weighted.history, repeated.history) < 1e-10
    assert np.array_equal(np.asarray(frozen.gmm.means), np.asarray(g0.means))
    assert not np.allclose(frozen.gmm.covariances, fits["missing"].gmm.covariances)
    h = np.asarray(frozen.history)
    assert np.all(np.diff(h) >= -1e-12 * np.abs(h[1:]))
