"""KL(p ‖ q) between Gaussian mixtures by quadrature on each component of p:

  `mixture_unscented`                Goldberger, Gordon & Greenspan's (2003) unscented-transform
                                     approximation: deterministic, 2D sigma points per component.
  `mixture_stratified_monte_carlo`   Monte Carlo stratified by the components of p, unbiased,
                                     with its standard error.

Both write KL(p ‖ q) = Σ_a π_a E_{f_a}[log p(x) − log q(x)] and estimate each component's
expectation separately, from points x = μ_a + L_a z (reparameterised, so gradients reach the
locations and scale factors; the weights π_a enter explicitly, so unlike ancestral sampling
they are differentiated exactly too).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvi import _linalg, _validate
from jaxvi.kl._layout import check_mixture_pair
from jaxvi.kl.estimates import MonteCarloEstimate
from jaxvi.mixture import Mixture, gaussian_log_prob

__all__ = ["mixture_stratified_monte_carlo", "mixture_unscented"]


def _log_density(x, log_w, loc, tril):
    """log Σ_k w_k N(x; μ_k, L_kL_kᵀ). x: (..., D); log_w: (K,), loc: (K, D) -> (...)."""
    return jax.nn.logsumexp(log_w + gaussian_log_prob(x, loc, tril), axis=-1)


def _log_ratio(x, logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    """log p(x) − log q(x) for unbatched mixtures; x: (..., D) -> (...)."""
    return (_log_density(x, jax.nn.log_softmax(logits_p), loc_p, tril_p)
            - _log_density(x, jax.nn.log_softmax(logits_q), loc_q, tril_q))


def _unscented_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    tril_p, tril_q = _linalg.tril_only(tril_p), _linalg.tril_only(tril_q)
    d = loc_p.shape[-1]
    # Sigma points μ_a ± √D (L_a)_{:, i}: the columns of √D L_a, both signs -> (K, 2D, D).
    cols = math.sqrt(d) * jnp.swapaxes(tril_p, -1, -2)
    x = loc_p[:, None, :] + jnp.concatenate([cols, -cols], axis=1)
    log_ratio = _log_ratio(x, logits_p, loc_p, tril_p, logits_q, loc_q, tril_q)  # (K, 2D)
    return jnp.sum(jax.nn.softmax(logits_p) * jnp.mean(log_ratio, axis=-1))


@jax.jit
def _unscented_impl(p, q):
    return jnp.vectorize(_unscented_single,
                         signature="(k),(k,d),(k,d,d),(j),(j,d),(j,d,d)->()")(*p, *q)


def mixture_unscented(p: Mixture, q: Mixture) -> jax.Array:
    """Unscented-transform approximation of KL(p ‖ q) (Goldberger et al. 2003):

        KL ≈ Σ_a π_a (1/2D) Σ_{i=1}^{D} Σ_± [log p − log q](μ_a ± √D (L_a)_{:,i}).

    The 2D sigma points of
    each component integrate every polynomial of degree ≤ 3 exactly under f_a, so the value is
    exact when log p − log q is quadratic (K = J = 1) and zero when p = q; otherwise an
    approximation, neither a bound nor unbiased, at the cost of 2DK evaluations of log p and
    log q. (Any square root of Σ_a gives these properties; we use the Cholesky factor, not the
    eigendecomposition of the paper, so mixture values differ from it in the approximation.)

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) the approximation of KL(p ‖ q).
    """
    p, q = check_mixture_pair(p, q)
    return _unscented_impl(p, q)


def _stratified_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q, eps):
    """eps: (K, n, D) standard normal draws -> (estimate, stderr)."""
    tril_p, tril_q = _linalg.tril_only(tril_p), _linalg.tril_only(tril_q)
    n = eps.shape[1]
    x = loc_p[:, None, :] + jnp.einsum("kij,knj->kni", tril_p, eps)
    log_ratio = _log_ratio(x, logits_p, loc_p, tril_p, logits_q, loc_q, tril_q)  # (K, n)
    pi = jax.nn.softmax(logits_p)
    mean = jnp.mean(log_ratio, axis=-1)
    var = jnp.var(log_ratio, axis=-1, ddof=1)
    return jnp.sum(pi * mean), jnp.sqrt(jnp.sum(jnp.square(pi) * var) / n)


@jax.jit
def _stratified_impl(p, q, eps):
    return jnp.vectorize(
        _stratified_single,
        signature="(k),(k,d),(k,d,d),(j),(j,d),(j,d,d),(k,n,d)->(),()")(*p, *q, eps)


def mixture_stratified_monte_carlo(
    key: jax.Array, p: Mixture, q: Mixture, samples_per_component: int
) -> MonteCarloEstimate:
    """Monte Carlo KL(p ‖ q) stratified by the components of p, with its standard error.

    Draws n = `samples_per_component` points from every component f_a of p and returns
    Σ_a π_a mean_a[log p − log q] (unbiased) and its standard error √(Σ_a π_a² s_a² / n)
    (s_a² the sample variance within stratum a). Stratification removes the between-component
    part of the variance of plain ancestral sampling (`mixture_monte_carlo`) — large when the
    components' log-ratios differ — and makes the estimate a smooth function of the weights.
    Costs K·n evaluations of log p and log q.

    Args:
      key: PRNG key of the draws.
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.
      samples_per_component: n ≥ 2 draws from each component of p.

    Returns:
      `MonteCarloEstimate` (estimate, stderr), each of the broadcast batch shape (...).
    """
    n = _validate.check_int("samples_per_component", samples_per_component, 2)
    p, q = check_mixture_pair(p, q)
    batch = jnp.broadcast_shapes(p.logits.shape[:-1], q.logits.shape[:-1])
    k, d = p.loc.shape[-2:]
    eps = jax.random.normal(key, (*batch, k, n, d), dtype=p.loc.dtype)
    return MonteCarloEstimate(*_stratified_impl(p, q, eps))
