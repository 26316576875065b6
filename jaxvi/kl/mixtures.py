"""KL(p ‖ q) between Gaussian mixtures (`jaxvi.mixture.Mixture`): bounds and estimates.

No closed form exists. We give the Monte Carlo estimate, the matched upper bound from the joint
convexity of KL (best one-to-one matching of components), the variational approximation and
variational upper bound of Hershey & Olsen (2007), and the lower/upper bounds of Durrieu,
Thiran & Kelly (2012); `mixture_bounds` combines them.

Each takes p with K components and q with J, batch axes broadcasting between them, and
returns an array of the broadcast batch shape. The per-pair math is written for unbatched
mixtures and vectorised over the batch (`jnp.vectorize`); the pairwise component KL matrices
come from the all-pairs kernel of `jaxvi.kl.gaussian`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxvi import _linalg
from jaxvi.kl._layout import check_mixture_pair
from jaxvi.kl.estimates import MonteCarloEstimate, monte_carlo
from jaxvi.kl.gaussian import _mvn_tril_pairs
from jaxvi.kl.univariate import _bounds_impl
from jaxvi.mixture import Mixture, gaussian_log_prob

__all__ = [
    "MixtureKLBounds",
    "mixture_bounds",
    "mixture_lower_bound",
    "mixture_matched_upper_bound",
    "mixture_monte_carlo",
    "mixture_product_upper_bound",
    "mixture_variational",
    "mixture_variational_upper_bound",
]


_MIX_SIGNATURE = "(k),(k,d),(k,d,d),(j),(j,d),(j,d,d)->()"


class _MixtureTerms(NamedTuple):
    """Per-pair quantities for unbatched mixtures p (K components) and q (J components)."""

    log_pi: jax.Array  # (K,)
    log_omega: jax.Array  # (J,)
    kl_pp: jax.Array  # (K, K) KL(f_a ‖ f_α)
    kl_pq: jax.Array  # (K, J) KL(f_a ‖ g_b)
    entropy_p: jax.Array  # (K,) H(f_a)


def _mixture_terms(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q) -> _MixtureTerms:
    tril_p = _linalg.tril_only(tril_p)
    tril_q = _linalg.tril_only(tril_q)
    d = loc_p.shape[-1]
    kl_pp = _mvn_tril_pairs(loc_p, tril_p, loc_p, tril_p)
    kl_pq = _mvn_tril_pairs(loc_p, tril_p, loc_q, tril_q)
    # Exactly zero on the diagonal of KL(f_a ‖ f_a) (the matmul form leaves round-off).
    kl_pp = jnp.where(jnp.eye(kl_pp.shape[0], dtype=bool), 0.0, jnp.maximum(kl_pp, 0.0))
    kl_pq = jnp.maximum(kl_pq, 0.0)
    entropy = 0.5 * (d * (1.0 + _linalg.LOG_2PI) + _linalg.logdet_tril(tril_p))
    return _MixtureTerms(jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q),
                         kl_pp, kl_pq, entropy)


def _pairwise_log_overlap(loc_a, tril_a, loc_b, tril_b):
    """log ∫ N(x; μ_a, Σ_a) N(x; μ_b, Σ_b) dx = log N(μ_a; μ_b, Σ_a + Σ_b) for all pairs.
    loc_a: (K, D), tril_a: (K, D, D), loc_b: (J, D), tril_b: (J, D, D) -> (K, J)."""
    cov_a = tril_a @ jnp.swapaxes(tril_a, -1, -2)
    cov_b = tril_b @ jnp.swapaxes(tril_b, -1, -2)
    chol = _linalg.cholesky(cov_a[:, None] + cov_b[None, :])  # (K, J, D, D)
    return gaussian_log_prob(loc_a, loc_b, chol)


def _expect(log_w, values):
    """Σ w v over all entries with w = exp(log_w), zero where w = 0 (any shape)."""
    w = jnp.exp(log_w)
    return jnp.sum(jnp.where(w > 0, w * values, 0.0))


def _variational_single(*params):
    t = _mixture_terms(*params)
    self_term = jax.nn.logsumexp(t.log_pi[None, :] - t.kl_pp, axis=-1)
    cross_term = jax.nn.logsumexp(t.log_omega[None, :] - t.kl_pq, axis=-1)
    return _expect(t.log_pi, self_term - cross_term)


def _lower_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    t = _mixture_terms(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q)
    log_t = _pairwise_log_overlap(
        loc_p, _linalg.tril_only(tril_p), loc_q, _linalg.tril_only(tril_q))
    self_term = jax.nn.logsumexp(t.log_pi[None, :] - t.kl_pp, axis=-1) - t.entropy_p
    cross_term = jax.nn.logsumexp(t.log_omega[None, :] + log_t, axis=-1)
    return _expect(t.log_pi, self_term - cross_term)


def _product_upper_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    t = _mixture_terms(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q)
    tril_p = _linalg.tril_only(tril_p)
    log_z = _pairwise_log_overlap(loc_p, tril_p, loc_p, tril_p)
    self_term = jax.nn.logsumexp(t.log_pi[None, :] + log_z, axis=-1)
    cross_term = jax.nn.logsumexp(t.log_omega[None, :] - t.kl_pq, axis=-1) - t.entropy_p
    return _expect(t.log_pi, self_term - cross_term)


def _variational_upper_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q, *, num_iters):
    t = _mixture_terms(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q)
    log_pi, log_omega, kl = t.log_pi, t.log_omega, t.kl_pq

    def update_phi(log_psi):  # φ_{b|a} ∝ ψ_{a|b} ω_b exp(−D_ab)
        return jax.nn.log_softmax(log_psi + log_omega[None, :] - kl, axis=1)

    def update_psi(log_phi):  # ψ_{a|b} ∝ π_a φ_{b|a}
        return jax.nn.log_softmax(log_pi[:, None] + log_phi, axis=0)

    def body(_, log_phi):
        return update_phi(update_psi(log_phi))

    log_phi = update_phi(jnp.broadcast_to(log_pi[:, None], kl.shape))
    log_phi = jax.lax.fori_loop(0, num_iters, body, log_phi)
    log_psi = update_psi(log_phi)
    log_joint = log_pi[:, None] + log_phi
    return _expect(log_joint, log_joint - log_psi - log_omega[None, :] + kl)


def _assignment_callback(cost):
    cost = np.asarray(cost, dtype=np.float64)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(cost.shape[0], dtype=np.int32)
    out[rows] = cols
    return out


def _matched_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    t = _mixture_terms(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q)
    # cost_ab = π_a (log π_a − log ω_b + KL(f_a ‖ g_b)); a one-to-one matching σ gives the
    # bound Σ_a cost_{a σ(a)} (joint convexity with q written as Σ_a ω_σ(a) g_σ(a) + rest).
    pi = jnp.exp(t.log_pi)
    cost = jnp.where(pi[:, None] > 0,
                     pi[:, None] * (t.log_pi[:, None] - t.log_omega[None, :] + t.kl_pq), 0.0)
    cols = jax.pure_callback(
        _assignment_callback,
        jax.ShapeDtypeStruct((cost.shape[0],), jnp.int32),
        jax.lax.stop_gradient(cost),
        vmap_method="sequential",
    )
    return jnp.sum(jnp.take_along_axis(cost, cols[:, None], axis=1))


def _mixture_apply(single, p: Mixture, q: Mixture, **kwargs):
    fn = functools.partial(single, **kwargs) if kwargs else single
    return jnp.vectorize(fn, signature=_MIX_SIGNATURE)(*p, *q)


@jax.jit
def _variational_impl(p, q):
    return _mixture_apply(_variational_single, p, q)


@jax.jit
def _lower_impl(p, q):
    return _mixture_apply(_lower_single, p, q)


@jax.jit
def _product_upper_impl(p, q):
    return _mixture_apply(_product_upper_single, p, q)


@jax.jit
def _matched_impl(p, q):
    return _mixture_apply(_matched_single, p, q)


@functools.partial(jax.jit, static_argnames="num_iters")
def _variational_upper_impl(p, q, num_iters):
    return _mixture_apply(_variational_upper_single, p, q, num_iters=num_iters)


def mixture_variational(p: Mixture, q: Mixture) -> jax.Array:
    """Hershey & Olsen's (2007) variational approximation of KL between Gaussian mixtures.

    An approximation, not a bound: D_var = Σ_a π_a log[Σ_α π_α e^{−KL(f_a‖f_α)} /
    Σ_b ω_b e^{−KL(f_a‖g_b)}]. Exact when p and q are single Gaussians; zero when p = q.

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) the approximation of KL(p ‖ q).
    """
    p, q = check_mixture_pair(p, q)
    return _variational_impl(p, q)


def mixture_matched_upper_bound(p: Mixture, q: Mixture) -> jax.Array:
    """Upper bound from the joint convexity of KL with the best one-to-one matching σ:

        KL(Σ_a π_a f_a ‖ Σ_b ω_b g_b) ≤ min_σ Σ_a π_a [log(π_a/ω_σ(a)) + KL(f_a ‖ g_σ(a))].

    Unmatched q components only loosen the bound. The pairwise component KL matrix comes from
    the all-pairs fast path; the matching is an exact linear assignment by
    `scipy.optimize.linear_sum_assignment` run through `jax.pure_callback`, so this works under
    `jit` and `vmap` (sequentially); gradients flow through the matched terms (the matching
    itself is locally constant).

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J ≥ K components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) an upper bound on KL(p ‖ q).

    Raises:
      ValueError: K > J, or p and q that are not compatible mixtures.
    """
    p, q = check_mixture_pair(p, q)
    k, j = p.logits.shape[-1], q.logits.shape[-1]
    if k > j:
        raise ValueError(f"`p` must have no more components than `q` for a one-to-one matching; "
                         f"got K={k} and J={j}.")
    return _matched_impl(p, q)


def mixture_variational_upper_bound(
    p: Mixture, q: Mixture, num_iters: int = 20
) -> jax.Array:
    """Hershey & Olsen's (2007) variational upper bound: joint convexity over the product
    index (a, b), with the split weights φ_{b|a}, ψ_{a|b} optimised by `num_iters` rounds of
    their alternating closed-form updates (each round can only lower the bound).

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.
      num_iters: rounds of the alternating updates, ≥ 0.

    Returns:
      (...) an upper bound on KL(p ‖ q).
    """
    p, q = check_mixture_pair(p, q)
    if int(num_iters) < 0:
        raise ValueError(f"`num_iters` must be non-negative; got {num_iters!r}.")
    return _variational_upper_impl(p, q, int(num_iters))


def mixture_lower_bound(p: Mixture, q: Mixture) -> jax.Array:
    """Lower bound of Durrieu, Thiran & Kelly (2012):

        KL ≥ Σ_a π_a [log Σ_α π_α e^{−KL(f_a‖f_α)} − H(f_a) − log Σ_b ω_b ∫f_a g_b].

    (The variational lower bound on E_p log p, and Jensen's bound E_{f_a} log q ≤ log ∫ f_a q.)

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) a lower bound on KL(p ‖ q); may be negative.
    """
    p, q = check_mixture_pair(p, q)
    return _lower_impl(p, q)


def mixture_product_upper_bound(p: Mixture, q: Mixture) -> jax.Array:
    """Upper bound of Durrieu, Thiran & Kelly (2012):

        KL ≤ Σ_a π_a [log Σ_α π_α ∫f_a f_α − log Σ_b ω_b e^{−KL(f_a‖g_b)} + H(f_a)].

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) an upper bound on KL(p ‖ q).
    """
    p, q = check_mixture_pair(p, q)
    return _product_upper_impl(p, q)


class MixtureKLBounds(NamedTuple):
    """Bounds on and an approximation of KL(p ‖ q) between Gaussian mixtures, each (...)."""

    lower: jax.Array  # max(0, Durrieu et al. lower bound)
    upper: jax.Array  # min of the matched, variational and product upper bounds
    variational: jax.Array  # Hershey–Olsen approximation, clipped into [lower, upper]


def mixture_bounds(p: Mixture, q: Mixture, num_iters: int = 20) -> MixtureKLBounds:
    """Every bound we have, combined: lower ≤ KL(p ‖ q) ≤ upper, plus the variational estimate.

    The matched bound is included when p has no more components than q; for one-dimensional
    mixtures (D = 1) the guaranteed bounds of `jaxvi.kl.mixture_guaranteed_bounds_1d` (64 cuts
    per component) too.

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.
      num_iters: rounds of the variational upper bound's updates.

    Returns:
      `MixtureKLBounds` (lower, upper, variational), each (...).
    """
    p, q = check_mixture_pair(p, q)
    uppers = [_variational_upper_impl(p, q, int(num_iters)), _product_upper_impl(p, q)]
    if p.logits.shape[-1] <= q.logits.shape[-1]:
        uppers.append(_matched_impl(p, q))
    upper = uppers[0]
    for u in uppers[1:]:
        upper = jnp.minimum(upper, u)
    lower = jnp.maximum(_lower_impl(p, q), 0.0)
    if p.loc.shape[-1] == 1:
        guaranteed_lower, guaranteed_upper = _bounds_impl(p, q, 64)
        lower = jnp.maximum(lower, guaranteed_lower)
        upper = jnp.minimum(upper, guaranteed_upper)
    upper = jnp.maximum(upper, lower)
    variational = jnp.clip(_variational_impl(p, q), lower, upper)
    return MixtureKLBounds(lower, upper, variational)


def mixture_bound_list(p: Mixture, q: Mixture,
                       num_iters: int = 20) -> list[tuple[str, str, jax.Array]]:
    """Every bound on KL(p ‖ q) that holds for these mixtures, one by one (what
    `mixture_bounds` combines), ordered: the lower bounds first, then the upper bounds, each
    kind from the tightest to the loosest on average over the batch.

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.
      num_iters: rounds of the variational upper bound's updates.

    Returns:
      [(name, "lower" | "upper", value (...)), ...]: Durrieu's lower bound (floored at 0), and
      for D = 1 the guaranteed lower bound; the variational and product upper bounds, the
      matched bound when p has no more components than q, and for D = 1 the guaranteed upper
      bound.
    """
    p, q = check_mixture_pair(p, q)
    lowers = [("durrieu_lower", jnp.maximum(_lower_impl(p, q), 0.0))]
    uppers = [("variational_upper", _variational_upper_impl(p, q, int(num_iters))),
              ("product_upper", _product_upper_impl(p, q))]
    if p.logits.shape[-1] <= q.logits.shape[-1]:
        uppers.append(("matched_upper", _matched_impl(p, q)))
    if p.loc.shape[-1] == 1:
        guaranteed_lower, guaranteed_upper = _bounds_impl(p, q, 64)
        lowers.append(("guaranteed_lower_1d", guaranteed_lower))
        uppers.append(("guaranteed_upper_1d", guaranteed_upper))
    lowers.sort(key=lambda item: -float(jnp.mean(item[1])))
    uppers.sort(key=lambda item: float(jnp.mean(item[1])))
    return [(n, "lower", v) for n, v in lowers] + [(n, "upper", v) for n, v in uppers]


def mixture_monte_carlo(
    key: jax.Array, p: Mixture, q: Mixture, num_samples: int
) -> MonteCarloEstimate:
    """Monte Carlo KL between Gaussian mixtures with its standard error; batch shape of p.

    Unbiased; the standard error shrinks as 1/√num_samples.

    Args:
      key: PRNG key of the draws from p.
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.
      num_samples: S ≥ 2 draws.

    Returns:
      `MonteCarloEstimate` (estimate, stderr), each (...).
    """
    p, q = check_mixture_pair(p, q)
    return monte_carlo(key, p, q, num_samples)
