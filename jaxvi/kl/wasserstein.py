"""Squared 2-Wasserstein distances: closed form between Gaussians (the Bures distance) and the
mixture Wasserstein distance MW2 of Delon & Desolneux (2020) between Gaussian mixtures.

- `w2_squared_diag`: W2² between diagonal Gaussians: ‖μ_p − μ_q‖² + ‖σ_p − σ_q‖².
- `w2_squared_mvn_tril`: W2² between full-covariance Gaussians from scale factors.
- `w2_squared_mvn`: the same from covariance matrices (Cholesky inside).
- `mixture_w2_squared`: MW2²(p, q) = min_γ Σ_ab γ_ab W2²(f_a, g_b) over couplings γ of the
  component weights: a discrete optimal-transport problem, solved exactly.

All return the *squared* distance (as POT's `ot.gmm.gmm_ot_loss` and `ot.emd2` do), broadcast
over leading batch axes and work under jit, vmap and grad.

The Bures term B² = tr Σ_p + tr Σ_q − 2 tr (Σ_p^½ Σ_q Σ_p^½)^½ is never formed that way: with
Σ = L Lᵀ, tr (Σ_p^½ Σ_q Σ_p^½)^½ is the nuclear norm of L_qᵀL_p, so B² = min_U ‖L_p − L_q U‖²_F
over orthogonal U (orthogonal Procrustes), attained at U* = W Vᵀ from the SVD L_qᵀL_p = W S Vᵀ.
We evaluate the residual ‖L_p − L_q U*‖²_F: a sum of squares, never negative and free of the
cancellation of the trace formula (whose float32 error is eps·tr Σ whatever B is; here it is
about eps·‖L‖·B). Gradients hold U* fixed (`stop_gradient`), which is exact by the envelope
theorem (U* minimises), so no SVD derivative, whose repeated-singular-value terms are NaN,
is ever taken.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog

from jaxvi import _linalg, _validate
from jaxvi.kl import _layout
from jaxvi.kl._layout import check_mixture_pair
from jaxvi.mixture import Mixture

__all__ = ["mixture_w2_squared", "w2_squared_diag", "w2_squared_mvn", "w2_squared_mvn_tril"]


def _bures_squared_tril(tril_p, tril_q):
    """min_U ‖L_p − L_q U‖²_F over orthogonal U. tril_p, tril_q: (..., D, D) -> (...)."""
    m = jnp.swapaxes(tril_q, -1, -2) @ tril_p
    w, _, vt = jnp.linalg.svd(jax.lax.stop_gradient(m), full_matrices=False)
    u = jax.lax.stop_gradient(w @ vt)
    return jnp.sum(jnp.square(tril_p - tril_q @ u), axis=(-2, -1))


def _w2_squared_tril(loc_p, tril_p, loc_q, tril_q):
    """‖μ_p − μ_q‖² + B²(L_p, L_q); loc: (..., D), tril: (..., D, D) -> (...)."""
    mean_term = jnp.sum(jnp.square(loc_p - loc_q), axis=-1)
    return mean_term + _bures_squared_tril(_linalg.tril_only(tril_p), _linalg.tril_only(tril_q))


@jax.jit
def _w2_diag_impl(loc_p, scale_p, loc_q, scale_q):
    return jnp.sum(jnp.square(loc_p - loc_q) + jnp.square(scale_p - scale_q), axis=-1)


_w2_tril_impl = jax.jit(_w2_squared_tril)


@jax.jit
def _w2_cov_impl(loc_p, cov_p, loc_q, cov_q):
    return _w2_squared_tril(loc_p, _linalg.cholesky(cov_p), loc_q, _linalg.cholesky(cov_q))


def w2_squared_diag(loc_p, scale_p, loc_q, scale_q) -> jax.Array:
    """W2²(N(μ_p, diag σ_p²), N(μ_q, diag σ_q²)) = Σ_d [(μ_p − μ_q)² + (σ_p − σ_q)²].

    Args:
      loc_p: (..., D) means of p.
      scale_p: (..., D) standard deviations of p, > 0.
      loc_q: (..., D) means of q.
      scale_q: (..., D) standard deviations of q, > 0. Batch axes broadcast.

    Returns:
      (...) the squared distance.
    """
    args = _layout.checked_gaussian_pair(("loc_p", "scale_p", "loc_q", "scale_q"),
                                         (loc_p, scale_p, loc_q, scale_q), (1, 1, 1, 1),
                                         _validate.check_positive)
    return _w2_diag_impl(*args)


def w2_squared_mvn_tril(loc_p, scale_tril_p, loc_q, scale_tril_q) -> jax.Array:
    """W2² between N(μ_p, L_pL_pᵀ) and N(μ_q, L_qL_qᵀ): ‖μ_p − μ_q‖² plus the squared Bures
    distance, computed as the Procrustes residual min_U ‖L_p − L_q U‖²_F (module docstring).

    Only the lower triangle of each factor is read. Symmetric in p and q.

    Args:
      loc_p: (..., D) mean of p.
      scale_tril_p: (..., D, D) lower-triangular scale of p (positive diagonal).
      loc_q: (..., D) mean of q.
      scale_tril_q: (..., D, D) lower-triangular scale of q. Batch axes broadcast.

    Returns:
      (...) the squared distance.
    """
    args = _layout.checked_gaussian_pair(("loc_p", "scale_tril_p", "loc_q", "scale_tril_q"),
                                         (loc_p, scale_tril_p, loc_q, scale_tril_q),
                                         (1, 2, 1, 2), _validate.check_tril_scale)
    return _layout.refuse_nan("w2_squared_mvn_tril", _w2_tril_impl(*args), args[0].dtype)


def w2_squared_mvn(loc_p, cov_p, loc_q, cov_q) -> jax.Array:
    """W2²(N(μ_p, Σ_p), N(μ_q, Σ_q)) = ‖μ_p − μ_q‖² + tr Σ_p + tr Σ_q − 2 tr(Σ_p^½Σ_qΣ_p^½)^½.

    Computed from Cholesky factors as in `w2_squared_mvn_tril`; a covariance the
    Cholesky in its dtype cannot resolve (see `jaxvi.kl.mvn`) is refused with a `ValueError`.

    Args:
      loc_p: (..., D) mean of p.
      cov_p: (..., D, D) covariance of p, symmetric positive definite.
      loc_q: (..., D) mean of q.
      cov_q: (..., D, D) covariance of q, symmetric positive definite. Batch axes broadcast.

    Returns:
      (...) the squared distance.
    """
    args = _layout.checked_gaussian_pair(("loc_p", "cov_p", "loc_q", "cov_q"),
                                         (loc_p, cov_p, loc_q, cov_q), (1, 2, 1, 2),
                                         _validate.check_positive_definite)
    for name, cov in (("cov_p", args[1]), ("cov_q", args[3])):
        _validate.check_cholesky_resolvable(name, cov, cov.dtype)
    return _layout.refuse_nan("w2_squared_mvn", _w2_cov_impl(*args), args[0].dtype)


# --------------------------------------------------------------------------------------------
# Mixtures: discrete OT between components
# --------------------------------------------------------------------------------------------


def _ot_callback(a, b, cost):
    """Exact discrete OT on the host: min ⟨γ, C⟩ s.t. γ1 = a, γᵀ1 = b, γ ≥ 0 (HiGHS simplex).

    a: (K,), b: (J,), cost: (K, J) -> the plan (K, J) and dual potentials f (K,), g (J,) with
    ∂OT/∂a = f, ∂OT/∂b = g (LP sensitivities; defined up to a common constant, which the
    softmax of the logits removes)."""
    dtype = np.asarray(cost).dtype
    a, b, cost = (np.asarray(x, np.float64) for x in (a, b, cost))
    k, j = cost.shape
    a = a / a.sum()
    b = b / b.sum()
    a_eq = np.zeros((k + j, k * j))
    for i in range(k):
        a_eq[i, i * j:(i + 1) * j] = 1.0
    for i in range(j):
        a_eq[k + i, i::j] = 1.0
    res = linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([a, b]), bounds=(0, None),
                  method="highs-ds")
    if res.status != 0:  # pragma: no cover - a transport LP is always feasible and bounded
        raise FloatingPointError(f"`mixture_w2_squared`: the OT solver failed ({res.message}).")
    duals = res.eqlin.marginals
    return (res.x.reshape(k, j).astype(dtype), duals[:k].astype(dtype),
            duals[k:].astype(dtype))


def _mixture_w2_single(logits_p, loc_p, tril_p, logits_q, loc_q, tril_q):
    """Unbatched MW2²: p (K,), (K, D), (K, D, D); q (J,), (J, D), (J, D, D) -> ()."""
    cost = _w2_squared_tril(loc_p[:, None], tril_p[:, None], loc_q[None], tril_q[None])
    pi = jax.nn.softmax(logits_p)
    omega = jax.nn.softmax(logits_q)
    k, j = cost.shape
    dtype = cost.dtype
    plan, f, g = jax.pure_callback(
        _ot_callback,
        (jax.ShapeDtypeStruct((k, j), dtype), jax.ShapeDtypeStruct((k,), dtype),
         jax.ShapeDtypeStruct((j,), dtype)),
        *(jax.lax.stop_gradient(x) for x in (pi, omega, cost)),
        vmap_method="sequential",
    )
    # Value ⟨γ*, C⟩; the two zero terms carry the weights' gradients (the dual potentials).
    return (jnp.sum(plan * cost) + jnp.dot(pi - jax.lax.stop_gradient(pi), f)
            + jnp.dot(omega - jax.lax.stop_gradient(omega), g))


@jax.jit
def _mixture_w2_impl(p, q):
    return jnp.vectorize(_mixture_w2_single,
                         signature="(k),(k,d),(k,d,d),(j),(j,d),(j,d,d)->()")(*p, *q)


def mixture_w2_squared(p: Mixture, q: Mixture) -> jax.Array:
    """Mixture Wasserstein distance MW2²(p, q) of Delon & Desolneux (2020).

        MW2²(p, q) = min_{γ ∈ Π(π, ω)} Σ_ab γ_ab W2²(f_a, g_b),

    the 2-Wasserstein distance restricted to couplings that are themselves Gaussian mixtures:
    discrete OT between the K components of p (weights π) and the J of q (weights ω) with the
    closed-form Gaussian W2² as cost. MW2 is a metric on mixtures, ≥ W2(p, q), and equals W2
    when K = J = 1.

    Solver: the K × J transport LP is solved *exactly* (HiGHS dual simplex, in float64 on the
    host through `jax.pure_callback`; under vmap one solve per batch element), not by an
    entropic (Sinkhorn) approximation, whose bias at a small ε is what one would be comparing
    against. It is meant for the small K, J of mixtures (an LP of K·J variables). Gradients
    are the LP's sensitivities: the optimal plan for the cost (so through the W2² closed forms
    to the locations and scale factors) and the dual potentials for the weights; exact where
    the optimal plan is unique, a subgradient where it is not.

    Args:
      p: `jaxvi.mixture.Mixture` with K components in D dimensions, batch shape (...).
      q: `Mixture` with J components in D dimensions; batch axes broadcast with p's.

    Returns:
      (...) MW2²(p, q).
    """
    p, q = check_mixture_pair(p, q)
    return _layout.refuse_nan("mixture_w2_squared", _mixture_w2_impl(p, q), p.loc.dtype)
