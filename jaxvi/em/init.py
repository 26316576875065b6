"""Initialisation of EM: k-means++ seeding, a converged k-means (`kmeans`, scikit-learn's
`init_params="kmeans"`), `initialize` (initial responsibilities and one M step), and
`default_prior`, a weak data-dependent prior for MAP-EM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, _validate
from jaxvi.em import checks
from jaxvi.em.model import GMM, Prior
from jaxvi.em.stats import weighted_covariance, weighted_mean
from jaxvi.em.step import m_step_from_resp

INITS = ("kmeans++", "kmeans", "random", "random_from_data")
_KMEANS_STEPS = 10  # the Lloyd steps after the seeding of "kmeans++"
# scikit-learn's KMeans defaults: Lloyd until the centres move less than tol times the data's
# mean per-feature variance (squared), at most 300 iterations; the best by inertia of up to
# _KMEANS_STARTS greedy k-means++ seedings (fewer when N·K exceeds _KMEANS_BUDGET / starts:
# on large data the seedings agree and each costs a k-means).
_KMEANS_MAX_ITER = 300
_KMEANS_TOL = 1e-4
_KMEANS_STARTS = 10
_KMEANS_BUDGET = 1 << 21


def _sq_dists(x, centres):
    return _linalg.pairwise_sq_mahalanobis_diag(x, centres, jnp.ones_like(centres))


def kmeans_plusplus(key: jax.Array, x: jax.Array, n_components: int,
                    sample_weight: jax.Array | None = None, n_local_trials: int = 1
                    ) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007).

    Each centre is drawn from the rows of x with probability ∝ squared distance to the
    nearest centre chosen so far (times its sample weight when given, as scikit-learn's
    `kmeans_plusplus`); with n_local_trials > 1 (static), the greedy variant: that many
    candidates drawn per centre, the one that lowers the (weighted) potential most kept
    (scikit-learn uses 2 + ⌊log K⌋). A traced primitive: no argument checks (`initialize`
    and `fit` validate).

    Args:
      key: PRNG key.
      x: (N, D) points.
      n_components: K centres.
      sample_weight: (N,) ≥ 0, default 1.
      n_local_trials: candidates per centre (static).

    Returns:
      (K, D) centres, rows of x.
    """
    n = x.shape[0]
    keys = jax.random.split(key, n_components)
    log_w = 0.0 if sample_weight is None else jnp.log(sample_weight)
    if sample_weight is None:
        first = jax.random.randint(keys[0], (), 0, n)
    else:
        first = jax.random.categorical(keys[0], log_w)
    centres = jnp.zeros((n_components, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = _sq_dists(x, centres[:1])[:, 0]

    def body(i, carry):
        centres, d2 = carry
        total = jnp.sum(d2) if sample_weight is None else jnp.sum(d2 * sample_weight)
        # All points on the chosen centres (duplicated data): fall back to uniform.
        logits = jnp.where(total > 0, jnp.log(jnp.maximum(d2, 0.0)), 0.0) + log_w
        if n_local_trials == 1:
            idx = jax.random.categorical(keys[i], logits)
        else:
            # one 1-D draw per candidate: the draw of row n does not depend on N (padding)
            cands = jax.vmap(lambda k: jax.random.categorical(k, logits))(
                jax.random.split(keys[i], n_local_trials))
            new_d2 = jnp.minimum(d2[:, None], _sq_dists(x, x[cands]))  # (N, T)
            w = 1.0 if sample_weight is None else sample_weight[:, None]
            idx = cands[jnp.argmin(jnp.sum(w * new_d2, axis=0))]
        centres = centres.at[i].set(x[idx])
        d2 = jnp.minimum(d2, _sq_dists(x, x[idx][None])[:, 0])
        return centres, d2

    centres, _ = jax.lax.fori_loop(1, n_components, body, (centres, d2))
    return centres


def _nearest_resp(x, centres):
    labels = jnp.argmin(_sq_dists(x, centres), axis=-1)
    return jax.nn.one_hot(labels, centres.shape[0], dtype=x.dtype)


def _lloyd_step(x, centres, weights):
    """One Lloyd step: each centre moved to the weighted mean of its points (kept when it
    has none)."""
    resp = _nearest_resp(x, centres) * weights[:, None]
    counts = jnp.sum(resp, axis=0)
    new = (resp.T @ x) / jnp.where(counts > 0, counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, new, centres)


def n_starts(n: int, k: int) -> int:
    """The number of k-means++ seedings `kmeans` runs.

    Args:
      n: N, the rows.
      k: K, the centres.

    Returns:
      min(10, 2^21 // (N·K)), at least 1.
    """
    return max(1, min(_KMEANS_STARTS, _KMEANS_BUDGET // (n * k)))


def kmeans(key: jax.Array, x: jax.Array, n_components: int,
           sample_weight: jax.Array | None = None) -> jax.Array:
    """A converged k-means of x, as scikit-learn's `KMeans` that `init_params="kmeans"` runs.

    From each of `_KMEANS_STARTS` greedy k-means++ seedings, Lloyd steps (`lax.while_loop`)
    until the centres move by less than 1e-4 times the mean per-feature variance of x (squared,
    summed over centres) or 300 steps; the seeding with the lowest inertia Σ w min_k |x − c_k|²
    is kept (`n_starts`: 10 seedings for N·K up to 2^21 / 10, fewer above, at least 1). Weighted
    by sample_weight throughout (zero-weight rows are never drawn and move no centre). A
    traced primitive.

    Args:
      key: PRNG key.
      x: (N, D) points.
      n_components: K centres.
      sample_weight: (N,) ≥ 0, default 1.

    Returns:
      (K, D) centres.
    """
    w = jnp.ones(x.shape[:1], x.dtype) if sample_weight is None else sample_weight
    mean = (w @ x) / jnp.sum(w)
    tol = _KMEANS_TOL * jnp.mean((w @ jnp.square(x - mean)) / jnp.sum(w))
    trials = 2 + int(np.log(n_components))

    def one(key):
        seeds = kmeans_plusplus(key, x, n_components, w, n_local_trials=trials)

        def cond(state):
            _, shift, it = state
            return (it < _KMEANS_MAX_ITER) & (shift > tol)

        def body(state):
            c, _, it = state
            new = _lloyd_step(x, c, w)
            return new, jnp.sum(jnp.square(new - c)), it + 1

        c, _, _ = jax.lax.while_loop(cond, body, (seeds, jnp.asarray(jnp.inf, x.dtype), 0))
        return c, jnp.sum(w * jnp.min(jnp.maximum(_sq_dists(x, c), 0.0), axis=1))

    centres, inertia = jax.vmap(one)(jax.random.split(key, n_starts(x.shape[0], n_components)))
    # the first seeding within round-off of the lowest inertia: seedings that reach the same
    # partition (in another order) tie, and the choice must not hang on their last bits
    best = jnp.argmax(inertia <= jnp.min(inertia) * (1 + 1e-9))
    return centres[best]


def init_resp(key, x, n_components, init, sample_weight=None):
    """Initial responsibilities of x by the method `init`.

    "kmeans++": hard assignment after k-means++ seeding and 10 Lloyd steps; "kmeans": hard
    assignment to the centres of a converged k-means (`kmeans`); "random_from_data": to the
    nearest of K distinct rows of x; "random": uniform random responsibilities. The seeding and
    Lloyd steps are weighted by sample_weight when given (k-means++ and "random_from_data" draw
    centres ∝ weight; zero-weight rows are never drawn).

    Args:
      key: PRNG key.
      x: (N, D) points.
      n_components: K.
      init: one of `INITS`.
      sample_weight: (N,) ≥ 0, or None (1).

    Returns:
      (N, K) responsibilities, rows summing to 1.
    """
    if init == "kmeans":
        return _nearest_resp(x, kmeans(key, x, n_components, sample_weight))
    if init == "kmeans++":
        w = jnp.ones(x.shape[:1], x.dtype) if sample_weight is None else sample_weight
        centres = jax.lax.fori_loop(0, _KMEANS_STEPS, lambda _, c: _lloyd_step(x, c, w),
                                    kmeans_plusplus(key, x, n_components, sample_weight))
        return _nearest_resp(x, centres)
    if init == "random_from_data":
        p = None if sample_weight is None else sample_weight / jnp.sum(sample_weight)
        idx = jax.random.choice(key, x.shape[0], (n_components,), replace=False, p=p)
        return _nearest_resp(x, x[idx])
    resp = jax.random.uniform(key, (x.shape[0], n_components), x.dtype)
    return resp / jnp.sum(resp, axis=1, keepdims=True)


def initial_gmms(x, keys, k, covariance_type, init, reg_covar, prior, sample_weight=None
                 ) -> GMM:
    """One initial GMM of x per key, batched along axis 0.

    `init_resp`, then the M step of those responsibilities times sample_weight. A traced
    primitive.

    Args:
      x: (N, D) points.
      keys: (B,) PRNG keys.
      k: K components.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: one of `INITS`.
      reg_covar: added to the covariances' diagonal.
      prior: a `Prior` for a MAP M step, or None.
      sample_weight: (N,) ≥ 0, or None (1).

    Returns:
      A `GMM` batched along axis 0 (B, ...), full/tied with their Cholesky factors.
    """

    def one(key):
        resp = init_resp(key, x, k, init, sample_weight)
        if sample_weight is not None:
            resp = resp * sample_weight[:, None]
        return m_step_from_resp(x, resp, covariance_type, reg_covar, prior)

    return jax.vmap(one)(keys)


def initialize(
    key: jax.Array, x: jax.Array, n_components: int, *, covariance_type: str = "full",
    init: str = "kmeans++", reg_covar: float = 1e-6, prior: Prior | None = None,
    sample_weight: jax.Array | None = None,
) -> GMM:
    """Initial GMM: responsibilities from `init` followed by one M step.

    `init`: "kmeans++" (k-means++ seeding + 10 Lloyd steps, hard assignment); "kmeans" (hard
    assignment to a converged k-means from the best of several greedy k-means++ seedings
    (`kmeans`), as scikit-learn's "kmeans"); "random_from_data" (K random points as
    centres); "random" (uniform random responsibilities, as scikit-learn). The M step is MAP
    under `prior`; everything is weighted by `sample_weight` when given (`init_resp`).
    Validates its arguments (traced x skips the value checks).

    Args:
      key: PRNG key.
      x: (N, D) points.
      n_components: K.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: one of `INITS` (above).
      reg_covar: added to the covariances' diagonal.
      prior: a `Prior` for a MAP M step.
      sample_weight: (N,) ≥ 0, default 1.

    Returns:
      The initial `GMM` with K = n_components.
    """
    n, d = checks.check_x(x)
    k = checks.check_n_components(n_components, n)
    checks.check_covariance_type(covariance_type)
    _validate.check_choice("init", init, INITS)
    _validate.check_number("reg_covar", reg_covar)
    x = checks.as_float_data(x)
    if prior is not None:
        prior = checks.check_prior(prior, d, x.dtype)
    w = checks.check_sample_weight(sample_weight, n, x.dtype, k, rescale=prior is None)
    resp = init_resp(key, x, k, init, w)
    if w is not None:
        resp = resp * w[:, None]
    return m_step_from_resp(x, resp, covariance_type, reg_covar, prior)


def default_prior(x: jax.Array, *, covariance_type: str = "full",
                  sample_weight: jax.Array | None = None) -> Prior:
    """A weak data-dependent prior (like scikit-learn's BayesianGaussianMixture defaults).

    α = 1 (flat Dirichlet), m0 = mean(x), κ0 = 1, ν0 = D, Ψ0 = ν0 · cov(x) / 100; with
    sample_weight the weighted mean and the frequency-weighted covariance
    (`stats.weighted_covariance`: those of x with rows repeated). MAP-EM's `Prior`;
    variational Bayes's conjugate prior is `jaxvi.em.variational.default_variational_prior`.

    Args:
      x: (N, D) points, N ≥ 2.
      covariance_type: "full", "tied", "diag" or "spherical" (the shape of Ψ0).
      sample_weight: (N,) ≥ 0, default 1.

    Returns:
      A `Prior`.
    """
    checks.check_covariance_type(covariance_type)
    n, _ = checks.check_x(x)
    if n < 2:
        raise ValueError(f"`x` must have at least 2 samples for a covariance; got {n}.")
    x = checks.as_float_data(x)
    d = x.shape[-1]
    w = checks.check_sample_weight(sample_weight, n, x.dtype)
    if w is None:
        cov, mean = jnp.atleast_2d(jnp.cov(x, rowvar=False)), jnp.mean(x, axis=0)
    else:
        checks.check_weight_total(w)
        cov, mean = weighted_covariance(x, w), weighted_mean(x, w)
    one = jnp.ones((), x.dtype)
    return Prior(one, mean, one, d * one, d * cov / 100.0)

