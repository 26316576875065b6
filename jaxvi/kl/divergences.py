"""Closed-form divergences between Gaussian mixtures: no sampling, no approximation.

- `mixture_cauchy_schwarz`: D_CS(p, q) = −log ∫pq + ½ log ∫p² + ½ log ∫q²  (≥ 0, = 0 iff p = q)
- `mixture_l2_squared`: ∫(p − q)² = ∫p² + ∫q² − 2∫pq
- `mixture_jensen_renyi`: JR₂(p, q; w) = H₂(w p + (1 − w) q) − w H₂(p) − (1 − w) H₂(q),
  with the quadratic Rényi entropy H₂(f) = −log ∫f².

All three are built from the Gaussian overlap integrals ∫N(x; a, A) N(x; b, B) dx =
N(a; b, A + B) (`jaxvi.kl.mixtures._pairwise_log_overlap`), so ∫pq = Σ_ab π_a ω_b N(μ_a; μ_b,
Σ_a + Σ_b) exactly; the three integrals are combined in the log domain (`logsumexp`), so high
dimensions, where the overlaps underflow, are fine for D_CS and JR₂.

Each takes p with K components and q with J (`jaxvi.mixture.Mixture`; a single Gaussian is
K = 1), batch axes broadcasting, and returns an array of the broadcast batch shape; jit-,
vmap- and grad-able. Precision: the three integrals are each accurate to a few ulps relative;
the divergences subtract them, so their error is absolute — about eps·(D + squared Mahalanobis
distances) for D_CS and JR₂, eps·(∫p² + ∫q²) for the L2 distance — and their relative error
grows without bound as p → q (in float32, a value below ~1e-6·scale is round-off).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, _validate
from jaxvi.kl._layout import check_mixture_pair
from jaxvi.kl.mixtures import _pairwise_log_overlap
from jaxvi.mixture import Mixture

__all__ = ["mixture_cauchy_schwarz", "mixture_jensen_renyi", "mixture_l2_squared"]

_SIGNATURE = "(k),(k,d),(k,d,d),(j),(j,d),(j,d,d)->(),(),()"


class _LogOverlaps(NamedTuple):
    pp: jax.Array  # log ∫ p²
    qq: jax.Array  # log ∫ q²
    pq: jax.Array  # log ∫ p q


def _log_mixture_overlap(log_w_a, loc_a, tril_a, log_w_b, loc_b, tril_b):
    """log ∫ (Σ_a w_a f_a)(Σ_b v_b g_b) = logsumexp_ab(log w_a + log v_b + log N(μ_a; μ_b,
    Σ_a + Σ_b)). Unbatched: (K,), (K, D), (K, D, D), (J,), (J, D), (J, D, D) -> ()."""
    log_z = _pairwise_log_overlap(loc_a, tril_a, loc_b, tril_b)
    return jax.nn.logsumexp(log_w_a[:, None] + log_w_b[None, :] + log_z)


def _log_overlaps_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    log_pi, log_omega = jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q)
    tril_p, tril_q = _linalg.tril_only(tril_p), _linalg.tril_only(tril_q)
    return (_log_mixture_overlap(log_pi, loc_p, tril_p, log_pi, loc_p, tril_p),
            _log_mixture_overlap(log_omega, loc_q, tril_q, log_omega, loc_q, tril_q),
            _log_mixture_overlap(log_pi, loc_p, tril_p, log_omega, loc_q, tril_q))


def _log_overlaps(p: Mixture, q: Mixture) -> _LogOverlaps:
    return _LogOverlaps(*jnp.vectorize(_log_overlaps_single, signature=_SIGNATURE)(*p, *q))


@jax.jit
def _cauchy_schwarz_impl(p, q):
    o = _log_overlaps(p, q)
    return 0.5 * (o.pp + o.qq) - o.pq


@jax.jit
def _l2_squared_scaled(p, q):
    """(∫(p − q)² e^{−s}, s) with s = max(log ∫p², log ∫q²): the bracket is O(1), so only the
    final product can underflow, and only when the true value does."""
    o = _log_overlaps(p, q)
    s = jax.lax.stop_gradient(jnp.maximum(o.pp, o.qq))
    return jnp.exp(o.pp - s) + jnp.exp(o.qq - s) - 2.0 * jnp.exp(o.pq - s), s


@jax.jit
def _l2_squared_impl(p, q):
    scaled, s = _l2_squared_scaled(p, q)
    return scaled * jnp.exp(s)


@jax.jit
def _jensen_renyi_impl(p, q, weight):
    o = _log_overlaps(p, q)
    w = jnp.asarray(weight, o.pp.dtype)
    # ∫m² = w²∫p² + 2w(1 − w)∫pq + (1 − w)²∫q², in the log domain.
    log_mm = jax.nn.logsumexp(
        jnp.stack([2.0 * jnp.log(w) + o.pp, jnp.log(2.0 * w * (1.0 - w)) + o.pq,
                   2.0 * jnp.log1p(-w) + o.qq]), axis=0)
    return -log_mm + w * o.pp + (1.0 - w) * o.qq


def mixture_cauchy_schwarz(p: Mixture, q: Mixture) -> jax.Array:
    """Cauchy–Schwarz divergence D_CS(p, q) = −log [∫pq / √(∫p² ∫q²)] in closed form.

    Symmetric, ≥ 0 and zero
    iff p = q (the Cauchy–Schwarz inequality), invariant to rescaling both densities; not a
    metric. Exact (module docstring for the precision).

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) D_CS(p, q) ≥ 0.
    """
    p, q = check_mixture_pair(p, q)
    return _cauchy_schwarz_impl(p, q)


def mixture_l2_squared(p: Mixture, q: Mixture) -> jax.Array:
    """Squared L2 distance ∫(p(x) − q(x))² dx = ∫p² + ∫q² − 2∫pq in closed form.

    Its square root is a
    metric. In units of a density (1/volume): it scales as 1/|Σ|^½ and underflows in high
    dimensions with wide components; compare mixtures of one scale with it, or use
    `mixture_cauchy_schwarz`, which is scale free. The three terms cancel as p → q: the
    absolute error is about eps·(∫p² + ∫q²). An eager call refuses (`ValueError`) mixtures
    whose ∫p² and ∫q² both lie below the dtype's smallest normal number (float32: 1.2e-38,
    e.g. unit covariances in D ≥ 70), where the value is not representable; use float64.

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) ∫(p − q)².

    Raises:
      ValueError: (eager) ∫p² and ∫q² both below the dtype's smallest normal number.
    """
    p, q = check_mixture_pair(p, q)
    scaled, s = _l2_squared_scaled(p, q)
    if _validate.is_concrete(s):
        tiny = float(np.log(np.finfo(np.dtype(s.dtype)).tiny))
        if np.any(np.asarray(s) < tiny):
            raise ValueError(
                f"`p`, `q`: ∫p² and ∫q² underflow {np.dtype(s.dtype).name} (log ∫p², log ∫q² "
                f"down to {float(np.min(np.asarray(s))):.4g} < {tiny:.4g}), so their L2 distance "
                "is not representable; use float64 arrays (inside `jax.enable_x64(True)`) or "
                "`mixture_cauchy_schwarz`, which is scale free.")
    return scaled * jnp.exp(s)


def mixture_jensen_renyi(p: Mixture, q: Mixture, weight: float = 0.5) -> jax.Array:
    """Jensen–Rényi divergence of order 2 in closed form (Wang et al. 2009):

        JR₂(p, q) = H₂(w p + (1 − w) q) − w H₂(p) − (1 − w) H₂(q),  H₂(f) = −log ∫f².

    Zero when p = q. *Not* non-negative in general: the quadratic Rényi entropy
    is not concave, so JR₂ < 0 happens when one density is much more concentrated than the
    other (e.g. N(0, 0.01²) against N(0, 1)); JR₂ ≥ 0 whenever ∫p² = ∫q² (for w = ½, by the
    Cauchy–Schwarz inequality).

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.
      weight: w in (0, 1), a Python float.

    Returns:
      (...) JR₂(p, q).
    """
    weight = _validate.check_number("weight", weight)
    if not 0.0 < weight < 1.0:
        raise ValueError(f"`weight` must lie strictly between 0 and 1; got {weight!r}.")
    p, q = check_mixture_pair(p, q)
    return _jensen_renyi_impl(p, q, weight)
