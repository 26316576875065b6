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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvi._linalg import diag_normal_log_prob, diag_normal_log_prob_pairwise


class ElboTerms(NamedTuple):
    """The three terms of the hierarchical ELBO (each a scalar per data point).

    elbo = reconstruction − kl_z − kl_w.
    """

    reconstruction: jax.Array  # E_q(w|x)[log p(x | w)]
    kl_z: jax.Array  # E_q(w|x)[KL(q(z | w, x) ‖ p(z))]
    kl_w: jax.Array  # E_q(w|x)[log q(w | x) − Σ_z q(z | w, x) log p(w | z)]

    @property
    def elbo(self) -> jax.Array:
        return self.reconstruction - self.kl_z - self.kl_w


# --------------------------------------------------------------------------- likelihoods


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, scale: jax.Array) -> jax.Array:
    """log N(x; mean, diag scale²) summed over the last axis. x: (D,), mean: (..., D) -> (...)."""
    return diag_normal_log_prob(x, mean, scale)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Σ_d x_d log σ(ℓ_d) + (1 − x_d) log σ(−ℓ_d); x may lie anywhere in [0, 1].

    x: (D,), logits: (..., D) -> (...).
    """
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits), -1)


# --------------------------------------------------------------------------- the ELBO


def prior_component_log_prob(
    w: jax.Array, prior_mean: jax.Array, prior_scale: jax.Array
) -> jax.Array:
    """log p(w_s | z = k) for every (sample, component) pair.

    w: (S, L), prior_mean, prior_scale: (K, L) -> (S, K).
    """
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

    log_px_w: (S,) log p(x | w_s); w: (S, L) samples of q(w | x);
    w_mean, w_scale: (L,) parameters of q(w | x); qz_logits: (S, K) logits of q(z | w_s, x);
    prior_logits: (K,) logits of π; prior_mean, prior_scale: (K, L).
    """
    log_qz = jax.nn.log_softmax(qz_logits, axis=-1)  # (S, K)
    qz = jnp.exp(log_qz)
    log_pi = jax.nn.log_softmax(prior_logits)  # (K,)
    kl_z = jnp.sum(qz * (log_qz - log_pi), axis=-1)  # (S,)
    log_qw = diag_normal_log_prob(w, w_mean, w_scale)  # (S,)
    log_pw_z = prior_component_log_prob(w, prior_mean, prior_scale)  # (S, K)
    kl_w = log_qw - jnp.sum(qz * log_pw_z, axis=-1)  # (S,)
    return ElboTerms(jnp.mean(log_px_w), jnp.mean(kl_z), jnp.mean(kl_w))


def elbo(*args, **kwargs) -> jax.Array:
    """The scalar ELBO for one data point; same arguments as `elbo_terms`."""
    return elbo_terms(*args, **kwargs).elbo


def prior_posterior_logits(
    w: jax.Array, prior_logits: jax.Array, prior_mean: jax.Array, prior_scale: jax.Array
) -> jax.Array:
    """Unnormalised log p(z | w) = log π_z + log p(w | z). w: (S, L) -> (S, K)."""
    return jax.nn.log_softmax(prior_logits) + prior_component_log_prob(w, prior_mean, prior_scale)


def log_marginal_prior(
    w: jax.Array, prior_logits: jax.Array, prior_mean: jax.Array, prior_scale: jax.Array
) -> jax.Array:
    """log p(w) = log Σ_z π_z N(w; μ_z, σ_z²), the z sum exact. w: (S, L) -> (S,)."""
    return jax.nn.logsumexp(
        prior_posterior_logits(w, prior_logits, prior_mean, prior_scale), axis=-1
    )


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
    log_px_w: (S,), w: (S, L), w_mean, w_scale: (L,), prior_*: as in `elbo_terms` -> ().
    """
    log_w = (
        log_px_w
        + log_marginal_prior(w, prior_logits, prior_mean, prior_scale)
        - diag_normal_log_prob(w, w_mean, w_scale)
    )
    return jax.nn.logsumexp(log_w) - math.log(w.shape[0])


def sample_w(w_mean: jax.Array, w_scale: jax.Array, n: int, *, key: jax.Array) -> jax.Array:
    """n reparameterised samples of q(w | x). w_mean, w_scale: (L,) -> (n, L)."""
    eps = jax.random.normal(key, (n, *w_mean.shape), w_mean.dtype)
    return w_mean + w_scale * eps
