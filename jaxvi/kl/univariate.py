"""Guaranteed deterministic bounds on KL(p ‖ q) between one-dimensional Gaussian mixtures, after
Nielsen & Sun (2016), "Guaranteed bounds on information-theoretic measures of univariate
mixtures using piecewise log-sum-exp inequalities".

KL(p ‖ q) = ∫ p log p − ∫ p log q, and each term ∫ p log f for a mixture f = Σ_i w_i f_i is
bracketed piecewise: cut the line at every point where two weighted components l_i = log w_i f_i
cross (the roots of l_i = l_j, at most two per pair), so that on each elementary interval I one
component δ dominates; there log f = l_δ + log(1 + Σ_{i≠δ} e^{l_i − l_δ}) *exactly* (for any δ),
and the correction lies between log(1 + Σ e^{min_I (l_i − l_δ)}) and log(1 + Σ e^{max_I (l_i −
l_δ)}) — the extremes of a quadratic on an interval, at its ends or its vertex. ∫_I p l_δ is in
closed form (truncated Gaussian moments), so both bounds are exact integrals of bounds of the
integrand: guaranteed, with no quadrature error, whatever the accuracy of the cut points (they
only decide how tight the bounds are). Equal when K = J = 1.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from jaxvi import _validate
from jaxvi.kl._layout import check_mixture_pair
from jaxvi.mixture import Mixture

__all__ = ["GuaranteedBounds", "mixture_guaranteed_bounds_1d"]


class GuaranteedBounds(NamedTuple):
    """lower ≤ KL(p ‖ q) ≤ upper, each (...)."""

    lower: jax.Array
    upper: jax.Array


def _quadratics(log_w, mu, sigma):
    """l_i(x) = log w_i + log N(x; μ_i, σ_i²) = a_i x² + b_i x + c_i; each (K,)."""
    prec = 1.0 / jnp.square(sigma)
    a = -0.5 * prec
    b = mu * prec
    c = log_w - 0.5 * math.log(2 * math.pi) - jnp.log(sigma) - 0.5 * jnp.square(mu) * prec
    return a, b, c


def _crossings(a, b, c):
    """Real roots of l_i = l_j for all pairs i < j, +inf where none: (K(K−1) + 1,) sorted."""
    k = a.shape[0]
    i, j = jnp.triu_indices(k, 1)
    qa, qb, qc = a[i] - a[j], b[i] - b[j], c[i] - c[j]
    disc = jnp.square(qb) - 4 * qa * qc
    has_two = (qa != 0) & (disc >= 0)
    sq = jnp.where(has_two, jnp.sqrt(jnp.where(has_two, disc, 1.0)), 0.0)  # no sqrt'(0) = inf
    # Stable roots: t = −(b + sign(b)√disc)/2, roots t/a and c/t.
    t = -0.5 * (qb + jnp.where(qb >= 0, 1.0, -1.0) * sq)
    safe_t = jnp.where(t != 0, t, 1.0)
    r1 = jnp.where(has_two & (t != 0), t / jnp.where(qa != 0, qa, 1.0), jnp.inf)
    r2 = jnp.where(has_two & (t != 0), qc / safe_t, jnp.inf)
    linear = (qa == 0) & (qb != 0)
    r1 = jnp.where(linear, -qc / jnp.where(qb != 0, qb, 1.0), r1)
    roots = jnp.concatenate([r1, r2, jnp.array([jnp.inf], a.dtype)])
    return jnp.sort(jnp.where(jnp.isfinite(roots), roots, jnp.inf))


def _quad_at(a, b, c, x):
    """a x² + b x + c at x, with its limits at x = ±inf. Broadcasting."""
    finite = jnp.isfinite(x)
    xs = jnp.where(finite, x, 0.0)
    value = (a * xs + b) * xs + c
    # The limits as constants (no arithmetic on inf, whose derivative would be 0·inf = NaN).
    inf = jnp.asarray(jnp.inf, value.dtype)
    toward = jnp.where(x > 0, b, -b)
    limit = jnp.where(a != 0, jnp.where(a > 0, inf, -inf),
                      jnp.where(toward != 0, jnp.where(toward > 0, inf, -inf), c))
    return jnp.where(finite, value, limit)


def _extremes(a, b, c, lo, hi):
    """min and max of a x² + b x + c over [lo, hi] (ends possibly infinite). Broadcasting."""
    v_lo, v_hi = _quad_at(a, b, c, lo), _quad_at(a, b, c, hi)
    vertex = -b / jnp.where(a != 0, 2 * a, 1.0)
    inside = (a != 0) & (vertex > lo) & (vertex < hi)
    v_vx = jnp.where(inside, _quad_at(a, b, c, jnp.where(inside, vertex, 0.0)), v_lo)
    return (jnp.minimum(jnp.minimum(v_lo, v_hi), v_vx),
            jnp.maximum(jnp.maximum(v_lo, v_hi), v_vx))


def _truncated_moments(mu, sigma, lo, hi):
    """∫_lo^hi N(x; μ, σ²) yᵏ dx for y = x − μ, k = 0, 1, 2. mu, sigma: (K,); lo, hi: (M, 1)."""
    def standardise(x):  # ±inf stays a constant, so its derivative is 0, not 0·inf
        finite = jnp.isfinite(x)
        return jnp.where(finite, (jnp.where(finite, x, 0.0) - mu) / sigma, x)

    za, zb = standardise(lo), standardise(hi)
    # Φ(z_b) − Φ(z_a) from the side of the smaller tail, so no cancellation.
    m0 = jnp.where(za > 0, ndtr(-za) - ndtr(-zb), ndtr(zb) - ndtr(za))

    def phi(z):
        return jnp.where(jnp.isfinite(z), jnp.exp(-0.5 * jnp.square(jnp.where(
            jnp.isfinite(z), z, 0.0))) / math.sqrt(2 * math.pi), 0.0)

    def zphi(z):
        return jnp.where(jnp.isfinite(z), jnp.where(jnp.isfinite(z), z, 0.0) * phi(z), 0.0)

    m1 = sigma * (phi(za) - phi(zb))
    m2 = jnp.square(sigma) * (m0 + zphi(za) - zphi(zb))
    return m0, m1, m2


def _cross_entropy_bounds(log_pi, mu_p, sigma_p, log_w, mu_f, sigma_f, grid):
    """Bounds on ∫ p log f for 1-D mixtures p (K,) and f (J,) -> (lower, upper); extra cuts
    at μ_a + σ_a·grid for every component a of p (grid: (G,))."""
    a, b, c = _quadratics(log_w, mu_f, sigma_f)
    extra = (mu_p[:, None] + sigma_p[:, None] * grid).ravel()
    cuts = jnp.sort(jnp.concatenate([_crossings(a, b, c), extra]))
    lo = jnp.concatenate([jnp.array([-jnp.inf], cuts.dtype), cuts])
    hi = jnp.concatenate([cuts, jnp.array([jnp.inf], cuts.dtype)])
    nonempty = hi > lo
    # A point inside each interval picks its dominant component δ.
    span = jnp.max(jnp.where(jnp.isfinite(cuts), jnp.abs(cuts), 0.0)) + jnp.max(
        jnp.abs(mu_f)) + 10 * jnp.max(sigma_f) + 1.0
    mid = jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), 0.5 * (lo + hi),
                    jnp.where(jnp.isfinite(lo), lo + span,
                              jnp.where(jnp.isfinite(hi), hi - span, 0.0)))
    mid = jnp.where(nonempty, mid, 0.0)
    delta = jnp.argmax(_quad_at(a, b, c, mid[:, None]), axis=-1)  # (M,)
    lo_c, hi_c = lo[:, None], hi[:, None]
    # d_i = l_i − l_δ over each interval; the correction log(1 + Σ_{i≠δ} e^{d_i}).
    da, db, dc = a - a[delta][:, None], b - b[delta][:, None], c - c[delta][:, None]
    d_min, d_max = _extremes(da, db, dc, lo_c, hi_c)
    d_min, d_max = (jnp.where(nonempty[:, None], d, 0.0) for d in (d_min, d_max))
    others = jnp.arange(a.shape[0])[None, :] != delta[:, None]
    corr_lo = jnp.log1p(jnp.sum(jnp.where(others, jnp.exp(d_min), 0.0), axis=-1))
    corr_hi = jnp.log1p(jnp.sum(jnp.where(others, jnp.exp(d_max), 0.0), axis=-1))
    # ∫_I p l_δ: l_δ(x) about each μ_a: with y = x − μ_a, l_δ = A y² + B_a y + C_a.
    big_a = a[delta][:, None]
    big_b = 2 * big_a * mu_p[None, :] + b[delta][:, None]
    big_c = _quad_at(big_a, b[delta][:, None], c[delta][:, None], mu_p[None, :])
    m0, m1, m2 = _truncated_moments(mu_p[None, :], sigma_p[None, :], lo_c, hi_c)
    pi = jnp.exp(log_pi)[None, :]
    mass = jnp.sum(pi * m0, axis=-1)  # ∫_I p
    main = jnp.sum(pi * (big_a * m2 + big_b * m1 + big_c * m0), axis=-1)
    keep = nonempty & (mass > 0)
    lower = jnp.sum(jnp.where(keep, main + mass * corr_lo, 0.0))
    upper = jnp.sum(jnp.where(keep, main + mass * corr_hi, 0.0))
    return lower, upper


def _bounds_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q, *, num_cuts):
    log_pi, log_omega = jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q)
    mu_p, sig_p = loc_p[:, 0], jnp.abs(tril_p[:, 0, 0])
    mu_q, sig_q = loc_q[:, 0], jnp.abs(tril_q[:, 0, 0])
    grid = jnp.linspace(-8.0, 8.0, num_cuts, dtype=mu_p.dtype)
    pp_lo, pp_hi = _cross_entropy_bounds(log_pi, mu_p, sig_p, log_pi, mu_p, sig_p, grid)
    pq_lo, pq_hi = _cross_entropy_bounds(log_pi, mu_p, sig_p, log_omega, mu_q, sig_q, grid)
    return pp_lo - pq_hi, pp_hi - pq_lo


@functools.partial(jax.jit, static_argnames="num_cuts")
def _bounds_impl(p, q, num_cuts):
    return jnp.vectorize(functools.partial(_bounds_single, num_cuts=num_cuts),
                         signature="(k),(k,d),(k,d,d),(j),(j,d),(j,d,d)->(),()")(*p, *q)


def mixture_guaranteed_bounds_1d(p: Mixture, q: Mixture, num_cuts: int = 64) -> GuaranteedBounds:
    """Guaranteed lower and upper bounds on KL(p ‖ q) for one-dimensional Gaussian mixtures
    (Nielsen & Sun 2016; module docstring), computed without sampling or quadrature.

    Besides the crossings, the line is cut at μ_a + σ_a t for `num_cuts` values
    of t evenly spaced in [−8, 8] for every component a of p (any cut points keep the bounds
    guaranteed; more make them tighter: the width shrinks about as 1/num_cuts, measured
    on random K, J ≤ 5 mixtures 0.9–1.2 nats with none, 0.06–0.09 with 64, 0.015 with 256).
    Cost O((K² + J² + K·num_cuts)·(K + J)) per pair. The lower bound may be negative; the
    width is zero when K = J = 1. In float32 the bounds hold up to the round-off of their
    closed forms (about eps·(1 + |KL|)), not beyond.

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D = 1 dimension, batch shape (...).
      q: `Mixture` with J components in D = 1 dimension; batch axes broadcast with p's.
      num_cuts: cut points per component of p (more: tighter bounds).

    Returns:
      `GuaranteedBounds` (lower, upper), each (...).

    Raises:
      ValueError: D ≠ 1, or p and q that are not compatible mixtures.
    """
    p, q = check_mixture_pair(p, q)
    if p.loc.shape[-1] != 1:
        raise ValueError("`p.loc` must describe one-dimensional mixtures (event size D = 1) "
                         f"for the guaranteed bounds; got D = {p.loc.shape[-1]}.")
    num_cuts = _validate.check_int("num_cuts", num_cuts, 0)
    return GuaranteedBounds(*_bounds_impl(p, q, num_cuts))
