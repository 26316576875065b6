"""The hierarchical (Gaussian-mixture-prior) VAE's evidence bounds, as pure functions of the
distributions' parameters, usable with any networks.

The model: p(z) = Cat(π), p(w | z) = N(μ_z, diag σ_z²), p(x | w) a decoder;
inference q(w | x) = N(m(x), diag s(x)²), q(z | w, x) = Cat(softmax(ℓ(w, x))).

    ELBO(x) = E_q(w|x)[log p(x | w)]                                    (reconstruction)
            − E_q(w|x)[KL(q(z | w, x) ‖ p(z))]                          (kl_z)
            − E_q(w|x)[log q(w | x) − Σ_z q(z | w, x) log p(w | z)]     (kl_w)

Expectations over w use the S reparameterised samples the caller passes; the sum over the K
components is exact. Every function here is written for one data point (unbatched); `vmap`
over the batch at the call site.

Every public function checks its arguments' shapes against the unbatched shapes in its
docstring (static, so free under jit and vmap: it runs once, at trace time, on the per-point
shapes) and raises `ValueError` naming the argument, what was expected and what was given;
nothing is broadcast silently (a prior of K = 1 against q(z | w, x) of K = 3, or `log_px_w`
of the wrong length, is refused). Values (positive, normal-range scales; finite locations;
no NaN) are checked only when the arrays are concrete, i.e. not under jit/vmap/grad.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi._linalg import diag_normal_log_prob, diag_normal_log_prob_pairwise
from jaxvi.vae._bounds_checks import (  # the argument checks
    _arr,
    _check_log_px_w,
    _check_no_nan,
    _check_prior,
    _check_q_w,
    _check_samples,
    _check_scale,
    _check_shape,
    _check_x_and_params,
)


class ElboTerms(NamedTuple):
    """The three terms of the hierarchical ELBO (each a scalar per data point).

    elbo = reconstruction − kl_z − kl_w. Returned per point by `elbo_terms`; batched (B,)
    arrays by `HierarchicalVAE.elbo_terms`.

    Attributes:
      reconstruction: E_q(w|x)[log p(x | w)].
      kl_z: E_q(w|x)[KL(q(z | w, x) ‖ p(z))].
      kl_w: E_q(w|x)[log q(w | x) − Σ_z q(z | w, x) log p(w | z)].
    """

    reconstruction: jax.Array  # E_q(w|x)[log p(x | w)]
    kl_z: jax.Array  # E_q(w|x)[KL(q(z | w, x) ‖ p(z))]
    kl_w: jax.Array  # E_q(w|x)[log q(w | x) − Σ_z q(z | w, x) log p(w | z)]

    @property
    def elbo(self) -> jax.Array:
        """The ELBO, reconstruction − kl_z − kl_w (of the terms' shape)."""
        return self.reconstruction - self.kl_z - self.kl_w


# --------------------------------------------------------------------------- likelihoods


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, scale: jax.Array) -> jax.Array:
    """log N(x; mean, diag scale²) summed over the last axis.

    Args:
      x: (D,) one data point.
      mean: (..., D) means.
      scale: positive, broadcastable to mean's shape (e.g. (..., D), (D,) or a scalar).

    Returns:
      (...) log-likelihoods.
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    x, mean = _check_x_and_params(x, "mean", mean)
    scale = _arr(scale)
    if _validate.check_broadcastable("scale", scale.shape, "mean", mean.shape) != mean.shape:
        raise ValueError(f"`scale` must broadcast to the shape of `mean` {mean.shape}; got "
                         f"{scale.shape}.")
    _validate.check_finite("mean", mean)
    _check_scale("scale", scale)
    return diag_normal_log_prob(x, mean, scale)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Σ_d x_d log σ(ℓ_d) + (1 − x_d) log σ(−ℓ_d); x may lie anywhere in [0, 1].

    Args:
      x: (D,) one data point, in [0, 1].
      logits: (..., D) logits ℓ.

    Returns:
      (...) log-likelihoods.
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    x, logits = _check_x_and_params(x, "logits", logits)
    if _validate.is_concrete(x) and np.any((np.asarray(x) < 0) | (np.asarray(x) > 1)):
        arr = np.asarray(x)
        raise ValueError(f"`x` must lie in [0, 1] for a Bernoulli likelihood; got values in "
                         f"[{float(arr.min())!r}, {float(arr.max())!r}].")
    if _validate.is_concrete(logits) and np.any(np.isnan(np.asarray(logits))):
        raise ValueError("`logits` must not contain NaN; got "
                         f"{int(np.sum(np.isnan(np.asarray(logits))))} NaN value(s).")
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits), -1)


# --------------------------------------------------------------------------- the ELBO


def prior_component_log_prob(
    w: jax.Array, prior_mean: jax.Array, prior_scale: jax.Array
) -> jax.Array:
    """log p(w_s | z = k) for every (sample, component) pair.

    Args:
      w: (S, L) samples.
      prior_mean: (K, L) means μ_k.
      prior_scale: (K, L) standard deviations σ_k.

    Returns:
      (S, K) log densities.
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    prior_mean, prior_scale = _arr(prior_mean), _arr(prior_scale)
    _validate.check_ndim("prior_mean", prior_mean, 2, "(K, L)")
    _check_shape("prior_scale", prior_scale, prior_mean.shape, "(K, L)", "`prior_mean`")
    _validate.check_finite("prior_mean", prior_mean)
    _check_scale("prior_scale", prior_scale)
    w = _check_samples(w, prior_mean.shape[1])
    return diag_normal_log_prob_pairwise(w, prior_mean, prior_scale)


def elbo_terms(
    log_px_w: jax.Array,
    w: jax.Array,
    w_mean: jax.Array,
    w_scale: jax.Array,
    qz_logits: jax.Array,
    prior_logits: jax.Array,
    prior_mean: jax.Array,
    prior_scale: jax.Array,
) -> ElboTerms:
    """The three ELBO terms for one data point, averaged over S samples of w.

    Args:
      log_px_w: (S,) log p(x | w_s).
      w: (S, L) samples of q(w | x).
      w_mean: (L,) mean of q(w | x).
      w_scale: (L,) standard deviations of q(w | x).
      qz_logits: (S, K) logits of q(z | w_s, x).
      prior_logits: (K,) logits of π.
      prior_mean: (K, L) means μ_z of p(w | z).
      prior_scale: (K, L) standard deviations σ_z of p(w | z).

    Returns:
      `ElboTerms`, each ().
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    prior_logits, prior_mean, prior_scale = _check_prior(prior_logits, prior_mean, prior_scale)
    k, latent = prior_mean.shape
    w = _check_samples(w, latent)
    s = w.shape[0]
    log_px_w = _check_log_px_w(log_px_w, s)
    w_mean, w_scale = _check_q_w(w_mean, w_scale, latent)
    qz_logits = _arr(qz_logits)
    _check_shape("qz_logits", qz_logits, (s, k), "(S, K)",
                 f"S = {s} samples of `w` and K = {k} components of the prior")
    _check_no_nan("qz_logits", qz_logits)
    log_qz = jax.nn.log_softmax(qz_logits, axis=-1)  # (S, K)
    qz = jnp.exp(log_qz)
    log_pi = jax.nn.log_softmax(prior_logits)  # (K,)
    kl_z = jnp.sum(qz * (log_qz - log_pi), axis=-1)  # (S,)
    log_qw = diag_normal_log_prob(w, w_mean, w_scale)  # (S,)
    log_pw_z = diag_normal_log_prob_pairwise(w, prior_mean, prior_scale)  # (S, K)
    kl_w = log_qw - jnp.sum(qz * log_pw_z, axis=-1)  # (S,)
    return ElboTerms(jnp.mean(log_px_w), jnp.mean(kl_z), jnp.mean(kl_w))


def elbo(*args, **kwargs) -> jax.Array:
    """The scalar ELBO for one data point.

    Args:
      *args: as for `elbo_terms`.
      **kwargs: as for `elbo_terms`.

    Returns:
      () the ELBO, `elbo_terms(...).elbo`.

    Raises:
      ValueError: as `elbo_terms`.
    """
    return elbo_terms(*args, **kwargs).elbo


def prior_posterior_logits(
    w: jax.Array, prior_logits: jax.Array, prior_mean: jax.Array, prior_scale: jax.Array
) -> jax.Array:
    """Unnormalised log p(z | w) = log π_z + log p(w | z).

    Args:
      w: (S, L) samples.
      prior_logits: (K,) logits of π.
      prior_mean: (K, L) means μ_z.
      prior_scale: (K, L) standard deviations σ_z.

    Returns:
      (S, K) logits.
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    prior_logits, prior_mean, prior_scale = _check_prior(prior_logits, prior_mean, prior_scale)
    w = _check_samples(w, prior_mean.shape[1])
    return _prior_posterior_logits(w, prior_logits, prior_mean, prior_scale)


def _prior_posterior_logits(w, prior_logits, prior_mean, prior_scale):
    return (jax.nn.log_softmax(prior_logits)
            + diag_normal_log_prob_pairwise(w, prior_mean, prior_scale))


def log_marginal_prior(
    w: jax.Array, prior_logits: jax.Array, prior_mean: jax.Array, prior_scale: jax.Array
) -> jax.Array:
    """log p(w) = log Σ_z π_z N(w; μ_z, σ_z²), the z sum exact.

    Args:
      w: (S, L) samples.
      prior_logits: (K,) logits of π.
      prior_mean: (K, L) means μ_z.
      prior_scale: (K, L) standard deviations σ_z.

    Returns:
      (S,) log densities.
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    prior_logits, prior_mean, prior_scale = _check_prior(prior_logits, prior_mean, prior_scale)
    w = _check_samples(w, prior_mean.shape[1])
    return _log_marginal_prior(w, prior_logits, prior_mean, prior_scale)


def _log_marginal_prior(w, prior_logits, prior_mean, prior_scale):
    return jax.nn.logsumexp(
        _prior_posterior_logits(w, prior_logits, prior_mean, prior_scale), axis=-1)


def iwae_bound(
    log_px_w: jax.Array,
    w: jax.Array,
    w_mean: jax.Array,
    w_scale: jax.Array,
    prior_logits: jax.Array,
    prior_mean: jax.Array,
    prior_scale: jax.Array,
) -> jax.Array:
    """The k-sample importance-weighted bound on log p(x) for one data point:

        log (1/k) Σ_s p(x | w_s) p(w_s) / q(w_s | x),   p(w) = Σ_z π_z N(w; μ_z, σ_z²),

    with the k = S samples w_s ~ q(w | x) and the sum over z exact. It needs no q(z | w, x)
    and is never below the ELBO with the same q(w | x) (for k = 1, in expectation).

    Args:
      log_px_w: (S,) log p(x | w_s).
      w: (S, L) samples of q(w | x).
      w_mean: (L,) mean of q(w | x).
      w_scale: (L,) standard deviations of q(w | x).
      prior_logits: (K,) as in `elbo_terms`.
      prior_mean: (K, L) as in `elbo_terms`.
      prior_scale: (K, L) as in `elbo_terms`.

    Returns:
      () the bound.
    Raises:
      ValueError: an argument of another shape than above, or (when concrete) a bad value.
    """
    prior_logits, prior_mean, prior_scale = _check_prior(prior_logits, prior_mean, prior_scale)
    w = _check_samples(w, prior_mean.shape[1])
    log_px_w = _check_log_px_w(log_px_w, w.shape[0])
    w_mean, w_scale = _check_q_w(w_mean, w_scale, prior_mean.shape[1])
    log_w = (
        log_px_w
        + _log_marginal_prior(w, prior_logits, prior_mean, prior_scale)
        - diag_normal_log_prob(w, w_mean, w_scale)
    )
    return jax.nn.logsumexp(log_w) - math.log(w.shape[0])


def sample_w(w_mean: jax.Array, w_scale: jax.Array, n: int, *, key: jax.Array) -> jax.Array:
    """n reparameterised samples w = w_mean + w_scale · ε of q(w | x).

    Args:
      w_mean: (L,) mean.
      w_scale: (L,) standard deviations.
      n: number of samples, ≥ 1.
      key: PRNG key.

    Returns:
      (n, L) samples.

    Raises:
      ValueError: n not a positive integer, or w_mean, w_scale not (L,) (or, when concrete,
        not finite and positive).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"`n` must be a positive integer (the number of samples); got {n!r}.")
    w_mean = _arr(w_mean)
    _validate.check_ndim("w_mean", w_mean, 1, "(L,)")
    w_mean, w_scale = _check_q_w(w_mean, w_scale, w_mean.shape[0], "`w_mean`")
    eps = jax.random.normal(key, (n, *w_mean.shape), w_mean.dtype)
    return w_mean + w_scale * eps


def sample_w_batch(w_mean: jax.Array, w_scale: jax.Array, n: int, *, key: jax.Array) -> jax.Array:
    """`sample_w` for every row of a batch, one key per row split from `key`.

    Args:
      w_mean: (B, L) means.
      w_scale: (B, L) standard deviations.
      n: samples per row, ≥ 1.
      key: PRNG key.

    Returns:
      (B, n, L) samples.

    Raises:
      ValueError: as `sample_w`.
    """
    keys = jax.random.split(key, w_mean.shape[0])
    return jax.vmap(lambda m, s, k: sample_w(m, s, n, key=k))(w_mean, w_scale, keys)
