"""Initialisation of EM: k-means++ seeding, `initialize` (initial responsibilities and one M
step), and `default_prior`, a weak data-dependent prior for MAP-EM."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvi import _linalg, _validate
from jaxvi.em import checks
from jaxvi.em.model import GMM, Prior
from jaxvi.em.step import m_step_from_resp

INITS = ("kmeans++", "random", "random_from_data")
_KMEANS_STEPS = 10


def _sq_dists(x, centres):
    return _linalg.pairwise_sq_mahalanobis_diag(x, centres, jnp.ones_like(centres))


def kmeans_plusplus(key: jax.Array, x: jax.Array, n_components: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): centres (K, D) drawn from the rows of
    x: (N, D), each with probability ∝ squared distance to the nearest centre chosen so far.
    A traced primitive: no argument checks (`initialize` and `fit` validate)."""
    n = x.shape[0]
    keys = jax.random.split(key, n_components)
    first = jax.random.randint(keys[0], (), 0, n)
    centres = jnp.zeros((n_components, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = _sq_dists(x, centres[:1])[:, 0]

    def body(i, carry):
        centres, d2 = carry
        total = jnp.sum(d2)
        # All points on the chosen centres (duplicated data): fall back to uniform.
        logits = jnp.where(total > 0, jnp.log(jnp.maximum(d2, 0.0)), 0.0)
        idx = jax.random.categorical(keys[i], logits)
        centres = centres.at[i].set(x[idx])
        d2 = jnp.minimum(d2, _sq_dists(x, x[idx][None])[:, 0])
        return centres, d2

    centres, _ = jax.lax.fori_loop(1, n_components, body, (centres, d2))
    return centres


def _nearest_resp(x, centres):
    labels = jnp.argmin(_sq_dists(x, centres), axis=-1)
    return jax.nn.one_hot(labels, centres.shape[0], dtype=x.dtype)


def _kmeans(x, centres, steps):
    def body(_, c):
        resp = _nearest_resp(x, c)
        counts = jnp.sum(resp, axis=0)
        new = (resp.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, new, c)

    return jax.lax.fori_loop(0, steps, body, centres)


def init_resp(key, x, n_components, init):
    """Initial responsibilities (N, K) of x: (N, D) by the method `init` (one of `INITS`)."""
    if init == "kmeans++":
        centres = _kmeans(x, kmeans_plusplus(key, x, n_components), _KMEANS_STEPS)
        return _nearest_resp(x, centres)
    if init == "random_from_data":
        idx = jax.random.choice(key, x.shape[0], (n_components,), replace=False)
        return _nearest_resp(x, x[idx])
    resp = jax.random.uniform(key, (x.shape[0], n_components), x.dtype)
    return resp / jnp.sum(resp, axis=1, keepdims=True)


def initial_gmms(x, keys, k, covariance_type, init, reg_covar, prior) -> GMM:
    """One initial GMM of x: (N, D) per key of keys: (B,), batched along axis 0. A traced
    primitive."""
    return jax.vmap(
        lambda key: m_step_from_resp(x, init_resp(key, x, k, init), covariance_type,
                                     reg_covar, prior)
    )(keys)


def initialize(
    key: jax.Array, x: jax.Array, n_components: int, *, covariance_type: str = "full",
    init: str = "kmeans++", reg_covar: float = 1e-6, prior: Prior | None = None,
) -> GMM:
    """Initial GMM: responsibilities from `init` ("kmeans++": k-means++ seeding + 10 Lloyd
    steps, hard assignment; "random_from_data": K random points as centres; "random": uniform
    random responsibilities, as scikit-learn) followed by one M step (MAP under `prior`).
    x: (N, D) -> GMM with K = n_components. Validates its arguments (traced x skips the value
    checks)."""
    n, d = checks.check_x(x)
    k = checks.check_n_components(n_components, n)
    checks.check_covariance_type(covariance_type)
    _validate.check_choice("init", init, INITS)
    _validate.check_number("reg_covar", reg_covar)
    x = checks.as_float_data(x)
    if prior is not None:
        prior = checks.check_prior(prior, d, x.dtype)
    resp = init_resp(key, x, k, init)
    return m_step_from_resp(x, resp, covariance_type, reg_covar, prior)


def default_prior(x: jax.Array, *, covariance_type: str = "full") -> Prior:
    """A weak data-dependent prior (like scikit-learn's BayesianGaussianMixture defaults):
    α = 1 (flat Dirichlet), m0 = mean(x), κ0 = 1, ν0 = D, Ψ0 = ν0 · cov(x) / 100.
    x: (N, D) with N ≥ 2."""
    checks.check_covariance_type(covariance_type)
    n, _ = checks.check_x(x)
    if n < 2:
        raise ValueError(f"`x` must have at least 2 samples for a covariance; got {n}.")
    x = checks.as_float_data(x)
    d = x.shape[-1]
    cov = jnp.atleast_2d(jnp.cov(x, rowvar=False))
    one = jnp.ones((), x.dtype)
    return Prior(one, jnp.mean(x, axis=0), one, d * one, d * cov / 100.0)
