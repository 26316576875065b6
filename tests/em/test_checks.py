"""jaxvi.em.checks: bad arguments raise a ValueError that names them, before anything runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em


def test_bad_input_names_the_argument(x64, blobs, init_params):
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


def test_em_functions_check_their_arguments():
    x = np.random.default_rng(0).normal(size=(100, 2))
    gmm = em.initialize(jax.random.key(0), x, 2)
    wrong = np.ones((100, 1))
    for fn in (em.bic, em.aic, em.log_prob, em.e_step):
        # Before: bic/aic/log_prob broadcast (100, 1) against 2 features (bic: 618.2).
        with pytest.raises(ValueError, match="`x` must have 2 features"):
            fn(wrong, gmm)
    heavy = gmm._replace(weights=jnp.asarray([0.7, 0.7]))
    with pytest.raises(ValueError, match="`init.weights` must sum to 1; got 1.39"):
        em.fit(x, 2, key=jax.random.key(0), init=heavy)
    for name, value in (("tol", float("nan")), ("tol", -1.0), ("reg_covar", float("inf")),
                        ("max_iter", 2.5), ("n_init", True)):
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            em.fit(x, 2, key=jax.random.key(0), **{name: value})
    with pytest.raises(ValueError, match="`gmm.scale_tril` must have shape"):
        em.log_prob(x, dataclass_replace(gmm, scale_tril=jnp.ones((2, 3, 3))))
    with pytest.raises(ValueError, match="`n_components` must be"):
        em.initialize(jax.random.key(0), x, 0)


def dataclass_replace(gmm, **kwargs):
    import dataclasses

    return dataclasses.replace(gmm, **kwargs)


def _nan_some(x, seed=0):
    """x with about 10 % of its entries NaN, no row all NaN."""
    x = np.array(x, dtype=float)
    hole = np.random.default_rng(seed).random(x.shape) < 0.1
    hole[:, 0] = False
    x[hole] = np.nan
    return x


def test_complex_data_are_refused_naming_x(blobs):
    """Complex data used to be fitted on their real part without a word."""
    x = blobs(n_per=20) + 0.5j
    key = jax.random.key(0)
    w = np.ones(len(x))
    for fit in (lambda: em.fit(x, 3, key=key), lambda: em.fit(x, 3, key=key, sample_weight=w),
                lambda: em.fit_variational(x, 3, key=key),
                lambda: em.fit(_nan_some(x.real) + 0.5j, 3, key=key, missing="marginalize",
                               sample_weight=w)):
        with pytest.raises(ValueError, match="`x` must be real; got complex"):
            fit()


def test_float16_data_are_fitted_in_float32(blobs):
    """float16 data (which XLA's linear algebra cannot take) give the float32 fit, as in
    scikit-learn, through every fit that takes data (weighted, variational, missing values),
    and the densities of a float32 GMM."""
    x32 = blobs(n_per=20).astype(np.float32)
    x16 = x32.astype(np.float16)
    x32 = x16.astype(np.float32)  # the same values
    key = jax.random.key(0)
    w = np.linspace(0.5, 2.0, len(x32))
    for kw in ({}, {"sample_weight": w}):
        got, want = em.fit(x16, 3, key=key, **kw), em.fit(x32, 3, key=key, **kw)
        assert got.gmm.means.dtype == jnp.float32
        np.testing.assert_array_equal(got.gmm.means, want.gmm.means)
        np.testing.assert_array_equal(em.log_prob(x16, got.gmm), em.log_prob(x32, want.gmm))
    got, want = em.fit_variational(x16, 3, key=key), em.fit_variational(x32, 3, key=key)
    np.testing.assert_array_equal(got.posterior.means, want.posterior.means)
    holes = _nan_some(x32)
    got = em.fit(holes.astype(np.float16), 3, key=key, missing="marginalize")
    want = em.fit(holes.astype(np.float32), 3, key=key, missing="marginalize")
    np.testing.assert_array_equal(got.gmm.means, want.gmm.means)


@pytest.mark.parametrize("scale", [1e-40, 1e-30])
def test_tiny_sample_weights_give_the_fit_of_their_shape(blobs, scale):
    """float32 weights of 1e-40 (subnormal, flushed to 0 in computation) used to end in a NaN
    log-likelihood, and weights of 1e-30 in means of 0 (under the empty-component guard):
    ML EM does not depend on the weights' scale, so they are rescaled, and the fit is that
    of the same weights times 1/scale, with and without missing values."""
    x = blobs(n_per=20).astype(np.float32)
    key = jax.random.key(0)
    shape = np.linspace(1.0, 3.0, len(x))
    for data, kw in ((x, {}), (_nan_some(x).astype(np.float32), {"missing": "marginalize"})):
        kw = dict(kw, max_iter=30, tol=0.0)
        tiny = em.fit(data, 3, key=key, sample_weight=(shape * scale).astype(np.float32), **kw)
        want = em.fit(data, 3, key=key, sample_weight=(shape / 3.0).astype(np.float32), **kw)
        assert np.isfinite(float(tiny.log_likelihood))
        np.testing.assert_allclose(tiny.gmm.means, want.gmm.means, rtol=1e-5, atol=1e-5)
        assert float(tiny.log_likelihood) == pytest.approx(float(want.log_likelihood), rel=2e-4)


def test_sample_weights_that_cannot_be_computed_are_refused(blobs):
    """Where the scale matters (a MAP prior) subnormal weights are refused, as is a sum
    beyond the dtype's range and a weight that is not a number, each naming sample_weight."""
    x = blobs(n_per=20).astype(np.float32)
    key = jax.random.key(0)
    prior = em.default_prior(x, covariance_type="full")
    with pytest.raises(ValueError, match="`sample_weight` must be at least the smallest normal"):
        em.fit(x, 3, key=key, prior=prior, sample_weight=np.full(len(x), 1e-40, np.float32))
    with pytest.raises(ValueError, match="`sample_weight` must sum to at most"):
        em.fit(x, 3, key=key, sample_weight=np.full(len(x), 3e37, np.float32))
    with pytest.raises(ValueError, match=r"`sample_weight` must be an array of real numbers"):
        em.fit(x, 3, key=key, sample_weight="abc")
