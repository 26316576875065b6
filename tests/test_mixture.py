"""`jaxvi.mixture`: log densities against scipy.stats and distrax, moments against a NumPy
derivation and against many draws, per-component sampling frequencies, and the constructor's
argument checks."""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import hilbert
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal
from shared_inputs import random_mixture

from jaxvi.mixture import Mixture, gaussian_log_prob, moments


def _np(mix):
    """(weights (..., K), loc (..., K, D), cov (..., K, D, D)) in float64 NumPy."""
    logits, loc, tril = (np.asarray(a, np.float64) for a in mix)
    tril = np.tril(tril)
    return softmax(logits, axis=-1), loc, tril @ np.swapaxes(tril, -1, -2)


def _scipy_log_prob(x, weights, loc, cov):
    """log Σ_k w_k N(x; m_k, Σ_k) for one unbatched mixture; x: (S, D) -> (S,)."""
    comp = np.stack([multivariate_normal(loc[k], cov[k]).logpdf(x) for k in range(len(weights))],
                    axis=-1)
    return logsumexp(comp + np.log(weights), axis=-1)


# --------------------------------------------------------------------------------------------
# Densities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 4])
def test_log_prob_matches_scipy(x64, d):
    rng = np.random.default_rng(10 + d)
    mix = random_mixture(rng, 3, d=d)
    x = rng.normal(size=(7, d)) * 2.0
    want = _scipy_log_prob(x, *_np(mix))
    np.testing.assert_allclose(mix.log_prob(jnp.asarray(x)), want, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(mix.log_prob)(jnp.asarray(x)), want, rtol=1e-12)


def test_batched_log_prob_matches_scipy(x64):
    """A batch of mixtures (2, 3) evaluated at x (5, 2, 3, D): each against its own mixture."""
    rng = np.random.default_rng(11)
    mix = random_mixture(rng, 4, d=2, batch=(2, 3))
    x = rng.normal(size=(5, 2, 3, 2)) * 2.0
    got = np.asarray(mix.log_prob(jnp.asarray(x)))
    assert got.shape == (5, 2, 3)
    weights, loc, cov = _np(mix)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(
                got[:, i, j], _scipy_log_prob(x[:, i, j], weights[i, j], loc[i, j], cov[i, j]),
                rtol=1e-12)


def test_component_log_prob_matches_scipy(x64):
    rng = np.random.default_rng(12)
    mix = random_mixture(rng, 3, d=3)
    x = rng.normal(size=(6, 3))
    weights, loc, cov = _np(mix)
    want = np.stack([multivariate_normal(loc[k], cov[k]).logpdf(x) for k in range(3)], axis=-1)
    np.testing.assert_allclose(gaussian_log_prob(jnp.asarray(x), mix.loc, mix.scale_tril), want,
                               rtol=1e-12)
    np.testing.assert_allclose(mix.component_log_prob(jnp.asarray(x)), want + np.log(weights),
                               rtol=1e-12)
    # Only the lower triangle of the factors is read.
    dirty = mix.scale_tril + jnp.asarray(np.triu(rng.normal(size=(3, 3, 3)), 1))
    np.testing.assert_allclose(gaussian_log_prob(jnp.asarray(x), mix.loc, dirty), want,
                               rtol=1e-12)


def test_log_prob_and_sampling_match_distrax(x64):
    rng = np.random.default_rng(2)
    p = random_mixture(rng, 3, d=2, batch=(2,))
    ref = distrax.MixtureSameFamily(distrax.Categorical(logits=p.logits),
                                    distrax.MultivariateNormalTri(p.loc, p.scale_tril))
    x = jnp.asarray(rng.normal(size=(5, 2, 2)))
    np.testing.assert_allclose(p.log_prob(x), ref.log_prob(x), rtol=1e-10)

    @jax.jit
    def moments(key):
        ours = p.sample(seed=key, sample_shape=(20_000,))
        theirs = ref.sample(seed=key, sample_shape=(20_000,))
        return ours.shape, [(jnp.mean(x, axis=0), jnp.cov(x[:, 0].T)) for x in (ours, theirs)]

    shape, ((mean, cov), (_, cov_ref)) = moments(jax.random.key(0))
    assert shape == (20_000, 2, 2)
    np.testing.assert_allclose(mean, ref.mean(), atol=0.08)
    np.testing.assert_allclose(cov, cov_ref, atol=0.25)


def test_log_prob_checks_event_size():
    mix = Mixture(np.zeros(2), np.zeros((2, 3)), np.broadcast_to(np.eye(3), (2, 3, 3)))
    np.testing.assert_allclose(mix.log_prob(np.zeros(3)), -1.5 * math.log(2 * math.pi),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="`x` and `loc`"):
        mix.log_prob(np.zeros(2))


# --------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------


def _np_moments(weights, loc, cov):
    """Mean and covariance of a mixture from E[x] and E[x xᵀ] (float64 NumPy reference)."""
    mean = np.einsum("...k,...kd->...d", weights, loc)
    second = np.einsum("...k,...kij->...ij", weights,
                       cov + loc[..., :, None] * loc[..., None, :])
    return mean, second - mean[..., :, None] * mean[..., None, :]


def test_moments_match_numpy(x64):
    rng = np.random.default_rng(13)
    mix = random_mixture(rng, 4, d=3, batch=(2,))
    weights, loc, cov = _np(mix)
    want_mean, want_cov = _np_moments(weights, loc, cov)
    mean, got_cov = moments(jnp.asarray(weights), jnp.asarray(loc), jnp.asarray(cov))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-11, atol=1e-12)
    mean, got_cov = mix.moments()
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-11, atol=1e-12)
    assert np.array_equal(got_cov, np.swapaxes(got_cov, -1, -2))


def test_moments_match_many_draws(x64):
    """The sample mean and covariance of n draws lie within 5 standard errors of `moments`,
    each standard error estimated from the same draws."""
    n = 200_000
    mix = random_mixture(np.random.default_rng(14), 3, d=2)
    mean, cov = (np.asarray(a) for a in mix.moments())
    x = np.asarray(mix.sample(seed=jax.random.key(3), sample_shape=(n,)))
    assert x.shape == (n, 2)
    mean_se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(axis=0) - mean) < 5 * mean_se), (x.mean(axis=0), mean)
    c = x - x.mean(axis=0)
    products = c[:, :, None] * c[:, None, :]  # (n, D, D): the sample covariance is their mean
    cov_se = products.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) * n / (n - 1) - cov) < 5 * cov_se), cov


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def test_sample_component_frequencies():
    """Far-apart, narrow components: each draw is attributed to its nearest mean, and each
    component's frequency is its weight within 5 binomial standard errors, per batch entry."""
    n = 40_000
    weights = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    loc = np.broadcast_to(np.array([[-50.0, 0.0], [0.0, 50.0], [50.0, 0.0]]), (2, 3, 2))
    tril = np.broadcast_to(0.1 * np.eye(2), (2, 3, 2, 2))
    mix = Mixture(jnp.asarray(np.log(weights), jnp.float32), jnp.asarray(loc, jnp.float32),
                  jnp.asarray(tril, jnp.float32))
    x = np.asarray(mix.sample(seed=jax.random.key(4), sample_shape=n))
    assert x.shape == (n, 2, 2) and x.dtype == np.float32
    nearest = np.argmin(np.sum((x[:, :, None, :] - loc[None]) ** 2, axis=-1), axis=-1)  # (n, 2)
    freq = np.stack([(nearest == k).mean(axis=0) for k in range(3)], axis=-1)
    se = np.sqrt(weights * (1 - weights) / n)
    assert np.all(np.abs(freq - weights) < 5 * se), freq
    # Within a component, the draws have its mean and scale.
    for b in range(2):
        for k in range(3):
            pts = x[nearest[:, b] == k, b]
            np.testing.assert_allclose(pts.mean(axis=0), loc[b, k], atol=5 * 0.1 / math.sqrt(
                len(pts)))
            np.testing.assert_allclose(pts.std(axis=0), 0.1, rtol=0.05)


def test_sample_shapes():
    mix = random_mixture(np.random.default_rng(15), 2, d=3, batch=(4,))
    key = jax.random.key(0)
    assert mix.sample(seed=key).shape == (4, 3)
    assert mix.sample(seed=key, sample_shape=5).shape == (5, 4, 3)
    assert mix.sample(seed=key, sample_shape=(2, 5)).shape == (2, 5, 4, 3)


# --------------------------------------------------------------------------------------------
# from_covariance
# --------------------------------------------------------------------------------------------


def test_from_covariance_factors_the_covariances(x64):
    rng = np.random.default_rng(16)
    a = rng.normal(size=(3, 2, 2))
    cov = a @ np.swapaxes(a, -1, -2) + np.eye(2)
    mix = Mixture.from_covariance(np.zeros(3), rng.normal(size=(3, 2)), cov)
    np.testing.assert_allclose(mix.scale_tril, np.linalg.cholesky(cov), rtol=1e-12)
    np.testing.assert_allclose(mix.covariance, cov, rtol=1e-12)
    assert mix.event_shape == (2,)
    np.testing.assert_allclose(np.exp(mix.log_weights), np.full(3, 1 / 3), rtol=1e-12)


def test_from_covariance_errors_name_the_argument():
    eye = np.broadcast_to(np.eye(2), (3, 2, 2))
    loc, logits = np.zeros((3, 2)), np.zeros(3)
    cases = [
        ((logits, loc, np.eye(2)), "`cov` must have at least 3 dimensions"),
        ((logits, loc, np.zeros((3, 2, 3))), "`cov` must be square"),
        ((logits, np.zeros(2), eye), "`loc` must have at least 2 dimensions"),
        ((logits, np.zeros((3, 3)), eye), "`loc` must have shape"),
        ((logits, np.zeros((2, 2)), eye), "`loc` must have shape"),
        ((np.float32(0.0), loc, eye), "`logits` must have at least 1 dimensions"),
        ((np.zeros(2), loc, eye), "`logits` and `cov` must have the same number of components"),
        ((logits, loc, -eye), "`cov` must be positive definite"),
        ((logits, loc, eye + np.triu(np.ones((2, 2)), 1)), "`cov` must be symmetric"),
        ((logits, loc, eye * np.nan), "`cov` must be finite"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            Mixture.from_covariance(*args)


def test_mixture_constructors_refuse_float32_singular_covariance():
    c32 = hilbert(8).astype(np.float32)[None]
    with pytest.raises(ValueError, match="`cov` is numerically singular in float32"):
        Mixture.from_covariance(np.zeros(1), np.zeros((1, 8)), c32)
