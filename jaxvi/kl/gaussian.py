"""Closed-form KL(p ‖ q) between Gaussians and between categoricals.

  `normal_diag`   diagonal Gaussians, summed over the last axis.
  `mvn`           full-covariance Gaussians from covariances (Cholesky inside).
  `mvn_tril`      full-covariance Gaussians from lower-triangular scale factors.
  `categorical`   categorical distributions from logits (zero-probability categories allowed).

Each broadcasts over leading batch axes between p and q (NumPy rules) and works under `jit`,
`vmap` and `grad` in float32 and float64. Arguments are validated when called eagerly (shapes
always; NaN, positivity and positive-definiteness only on concrete arrays): bad input raises
`ValueError` naming the argument. Value checks are of what the compute dtype can do, not only
of the mathematics: a covariance that is positive definite but numerically singular in float32
is refused with a suggestion to use float64, and so is a scale of q below the dtype's smallest
normal number; p's scales may be subnormal (their logs are read from their bits). An eager
result is never NaN on accepted input (a last check raises `FloatingPointError`).

The all-pairs pattern — p with batch shape (..., N, 1) against q with (..., 1, M) — is routed
to a factored path (`jaxvi.kl._layout`): each distribution is factored once and the per-pair
work becomes matmuls (full covariance: tr(Σ_q⁻¹Σ_p) = ⟨Σ_q⁻¹, Σ_p⟩ as an (N, D²)×(D², M)
matmul plus `jaxvi._linalg.pairwise_sq_mahalanobis_full`; diagonal: trace and Mahalanobis
terms fused into one (N, 2D)×(2D, M) matmul). Log-determinants are computed once per
distribution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, _validate
from jaxvi.kl import _layout

__all__ = ["categorical", "mvn", "mvn_tril", "normal_diag"]

# --------------------------------------------------------------------------------------------
# Diagonal Gaussians
# --------------------------------------------------------------------------------------------


def _log_p(a, exact_log_p: bool):
    """log of p's (positive) scales: `jnp.log`, or with `exact_log_p` `_linalg.log_positive`,
    which is right for subnormal values too (XLA flushes them to zero, so `jnp.log(1e-40)` is
    −inf in float32). The eager wrappers pick `exact_log_p` only when some scale of p is
    subnormal, since its bit manipulation is not free."""
    return _linalg.log_positive(a) if exact_log_p else jnp.log(a)


def _normal_diag_elementwise(loc_p, scale_p, loc_q, scale_q, exact_log_p=False):
    ratio = scale_p / scale_q
    z = (loc_p - loc_q) / scale_q
    if exact_log_p:  # log σ_p − log σ_q: σ_p/σ_q flushes a subnormal σ_p to zero
        log_ratio = _log_p(scale_p, True) - jnp.log(scale_q)
    else:
        log_ratio = jnp.log(ratio)
    return 0.5 * jnp.sum(jnp.square(ratio) - 1.0 - 2.0 * log_ratio + jnp.square(z), axis=-1)


def _normal_diag_pairs(loc_p, scale_p, loc_q, scale_q, exact_log_p=False):
    """All pairs. loc_p, scale_p: (N, D); loc_q, scale_q: (M, D) -> (N, M).

    Σ_d (σ_p² + (μ_p − μ_q)²)/σ_q² is `_linalg.pairwise_sq_mahalanobis_diag` with x_var = σ_p²
    (one matmul, the kernel the E step and the VAE's log p(w | z) use); the log-determinants
    are per-row and per-column constants.
    """
    d = loc_p.shape[-1]
    quad = _linalg.pairwise_sq_mahalanobis_diag(
        loc_p, loc_q, 1.0 / jnp.square(scale_q), x_var=jnp.square(scale_p))
    log_det_q = jnp.sum(jnp.log(scale_q), axis=-1)
    log_det_p = jnp.sum(_log_p(scale_p, exact_log_p), axis=-1)
    return 0.5 * (quad - d) + (log_det_q[None, :] - log_det_p[:, None])


@functools.partial(jax.jit, static_argnames="exact_log_p")
def _normal_diag_impl(loc_p, scale_p, loc_q, scale_q, exact_log_p=False):
    layout = _layout.pairs_layout((loc_p, scale_p), (loc_q, scale_q), (1, 1))
    if layout is None:
        return _normal_diag_elementwise(loc_p, scale_p, loc_q, scale_q, exact_log_p)
    return _layout.pairs_call(functools.partial(_normal_diag_pairs, exact_log_p=exact_log_p),
                              layout, (loc_p, scale_p), (loc_q, scale_q), (1, 1))


def normal_diag(loc_p, scale_p, loc_q, scale_q) -> jax.Array:
    """KL(N(μ_p, diag σ_p²) ‖ N(μ_q, diag σ_q²)), summed over the last axis.

    ½ Σ_d [σ_p²/σ_q² − 1 − 2 log(σ_p/σ_q) + (μ_p − μ_q)²/σ_q²].

    Any positive σ_p is exact in an eager call, subnormal ones included (1e-40 in float32: its
    log is read from its bits; under jit a subnormal σ_p is flushed to zero, giving +inf);
    σ_q must be at least the dtype's smallest normal number (1.2e-38 in float32), since
    dividing by a subnormal divides by zero.

    Args:
      loc_p: (..., D) means of p.
      scale_p: (..., D) standard deviations of p, > 0.
      loc_q: (..., D) means of q.
      scale_q: (..., D) standard deviations of q, > 0. Batch axes broadcast between p and q.

    Returns:
      (...) KL(p ‖ q), the broadcast batch shape.

    Raises:
      ValueError: an argument of the wrong shape, with NaN or a non-positive scale (eager).
    """
    args = _layout.checked_gaussian_pair(("loc_p", "scale_p", "loc_q", "scale_q"),
                                  (loc_p, scale_p, loc_q, scale_q), (1, 1, 1, 1),
                                  _validate.check_positive)
    _validate.check_normal_range("scale_q", args[3], args[3].dtype)
    out = _normal_diag_impl(*args, exact_log_p=_layout.has_subnormal(args[1]))
    return _layout.refuse_nan("normal_diag", out, args[0].dtype)


# --------------------------------------------------------------------------------------------
# Full-covariance Gaussians
# --------------------------------------------------------------------------------------------


def _mvn_from_tril_elementwise(loc_p, tril_p, loc_q, tril_q, exact_log_p=False):
    """½(‖L_q⁻¹L_p‖² + ‖L_q⁻¹(μ_q − μ_p)‖² − D) + log|L_q| − log|L_p|, one triangular solve
    with the right-hand side [L_p | μ_q − μ_p]."""
    d = loc_p.shape[-1]
    diff = loc_q - loc_p
    batch = jnp.broadcast_shapes(tril_p.shape[:-2], tril_q.shape[:-2], diff.shape[:-1])
    rhs = jnp.concatenate(
        [jnp.broadcast_to(tril_p, (*batch, d, d)), jnp.broadcast_to(diff, (*batch, d))[..., None]],
        axis=-1,
    )
    sol = _linalg.solve_tril(tril_q, rhs)
    sq = jnp.sum(jnp.square(sol), axis=(-2, -1))
    return 0.5 * (sq - d + _linalg.logdet_tril(tril_q) - _logdet_tril_p(tril_p, exact_log_p))


def _logdet_tril_p(tril_p, exact_log_p=False):
    """log|L_p L_pᵀ|; with `exact_log_p` right for a subnormal diagonal entry too (see `_log_p`):
    p may be as narrow as the dtype represents, while q's factor must be normal (it is
    divided by)."""
    if not exact_log_p:
        return _linalg.logdet_tril(tril_p)
    diag = jnp.abs(jnp.diagonal(tril_p, axis1=-2, axis2=-1))
    return 2.0 * jnp.sum(_log_p(diag, True), axis=-1)


def _mvn_pairs(loc_p, cov_p, logdet_p, loc_q, tril_q):
    """All pairs from Σ_p and L_q. loc_p: (N, D), cov_p: (N, D, D), logdet_p: (N,);
    loc_q: (M, D), tril_q: (M, D, D) -> (N, M)."""
    n, d = loc_p.shape
    m = loc_q.shape[0]
    prec_q = _linalg.precision_from_tril(tril_q)
    trace = cov_p.reshape(n, d * d) @ prec_q.reshape(m, d * d).T
    maha = _linalg.pairwise_sq_mahalanobis_full(loc_p, loc_q, prec_q)
    logdet_q = _linalg.logdet_tril(tril_q)
    return 0.5 * (trace + maha - d + logdet_q[None, :] - logdet_p[:, None])


def _mvn_tril_pairs(loc_p, tril_p, loc_q, tril_q, exact_log_p=False):
    cov_p = tril_p @ jnp.swapaxes(tril_p, -1, -2)
    return _mvn_pairs(loc_p, cov_p, _logdet_tril_p(tril_p, exact_log_p), loc_q, tril_q)


def _mvn_cov_pairs(loc_p, cov_p, loc_q, cov_q):
    cov_p = _linalg.symmetrize(cov_p)
    logdet_p = _linalg.logdet_tril(_linalg.cholesky(cov_p))
    return _mvn_pairs(loc_p, cov_p, logdet_p, loc_q, _linalg.cholesky(cov_q))


@functools.partial(jax.jit, static_argnames="exact_log_p")
def _mvn_tril_impl(loc_p, tril_p, loc_q, tril_q, exact_log_p=False):
    tril_p = _linalg.tril_only(tril_p)
    tril_q = _linalg.tril_only(tril_q)
    layout = _layout.pairs_layout((loc_p, tril_p), (loc_q, tril_q), (1, 2))
    if layout is None:
        return _mvn_from_tril_elementwise(loc_p, tril_p, loc_q, tril_q, exact_log_p)
    return _layout.pairs_call(functools.partial(_mvn_tril_pairs, exact_log_p=exact_log_p),
                              layout, (loc_p, tril_p), (loc_q, tril_q), (1, 2))


@jax.jit
def _mvn_impl(loc_p, cov_p, loc_q, cov_q):
    layout = _layout.pairs_layout((loc_p, cov_p), (loc_q, cov_q), (1, 2))
    if layout is None:
        return _mvn_from_tril_elementwise(
            loc_p, _linalg.cholesky(cov_p), loc_q, _linalg.cholesky(cov_q))
    return _layout.pairs_call(_mvn_cov_pairs, layout, (loc_p, cov_p), (loc_q, cov_q), (1, 2))


def mvn_tril(loc_p, scale_tril_p, loc_q, scale_tril_q) -> jax.Array:
    """KL(N(μ_p, L_pL_pᵀ) ‖ N(μ_q, L_qL_qᵀ)) from lower-triangular scale factors.

    Only the lower triangle of each factor is read (the gradient above the diagonal is exactly
    zero); its diagonal must be positive, and L_q's at least the dtype's smallest normal
    number (L_p's may be subnormal in an eager call, as σ_p in `normal_diag`). Computed with
    one triangular solve per pair:
    ½(‖L_q⁻¹L_p‖²_F + ‖L_q⁻¹(μ_q − μ_p)‖² − D) + Σ log diag L_q − Σ log diag L_p.

    Args:
      loc_p: (..., D) mean of p.
      scale_tril_p: (..., D, D) lower-triangular scale of p (positive diagonal).
      loc_q: (..., D) mean of q.
      scale_tril_q: (..., D, D) lower-triangular scale of q. Batch axes broadcast.

    Returns:
      (...) KL(p ‖ q), the broadcast batch shape.

    Raises:
      ValueError: a wrong shape, NaN, or a non-positive (or, for q, subnormal) diagonal.
    """
    args = _layout.checked_gaussian_pair(("loc_p", "scale_tril_p", "loc_q", "scale_tril_q"),
                                  (loc_p, scale_tril_p, loc_q, scale_tril_q), (1, 2, 1, 2),
                                  _validate.check_tril_scale)
    _validate.check_normal_range(
        "scale_tril_q", jnp.diagonal(args[3], axis1=-2, axis2=-1), args[3].dtype)
    exact = _layout.has_subnormal(jnp.diagonal(args[1], axis1=-2, axis2=-1))
    return _layout.refuse_nan("mvn_tril", _mvn_tril_impl(*args, exact_log_p=exact), args[0].dtype)


def mvn(loc_p, cov_p, loc_q, cov_q) -> jax.Array:
    """KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q)) from covariance matrices.

    ½(tr(Σ_q⁻¹Σ_p) + (μ_q − μ_p)ᵀΣ_q⁻¹(μ_q − μ_p) − D + ln|Σ_q|/|Σ_p|), computed through
    Cholesky factors and triangular solves; no explicit inverse or determinant.

    For the all-pairs pattern (p batch (..., N, 1), q batch (..., 1, M)) Σ_q⁻¹ is formed once
    per q from its Cholesky factor and the pairs cost two matmuls.

    Eagerly, positive definiteness is checked in float64 and then what the Cholesky in the
    compute dtype can do: a covariance that is numerically singular in that dtype (condition
    number, scaled to unit diagonal, above 1/(max(D, 16)·eps): about 5e5 in float32, e.g. a
    Hilbert(8) matrix or the sample covariance of nearly collinear data) is refused with a
    `ValueError` suggesting float64, rather than factorised into NaN or a wrong value.

    Args:
      loc_p: (..., D) mean of p.
      cov_p: (..., D, D) covariance of p, symmetric positive definite.
      loc_q: (..., D) mean of q.
      cov_q: (..., D, D) covariance of q, symmetric positive definite. Batch axes broadcast.

    Returns:
      (...) KL(p ‖ q), the broadcast batch shape.

    Raises:
      ValueError: a wrong shape, NaN, or a covariance that is not positive definite (or
        numerically singular in the compute dtype).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxvi import kl
      >>> kl_pq = kl.mvn(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 2.0 * jnp.eye(2))
      >>> round(float(kl_pq), 4)  # ½(1 + 1 − 2 + ln 4) = ln 2
      0.6931
    """
    args = _layout.checked_gaussian_pair(("loc_p", "cov_p", "loc_q", "cov_q"),
                                  (loc_p, cov_p, loc_q, cov_q), (1, 2, 1, 2),
                                  _validate.check_positive_definite)
    for name, cov in (("cov_p", args[1]), ("cov_q", args[3])):
        _validate.check_cholesky_resolvable(name, cov, cov.dtype)
    return _layout.refuse_nan("mvn", _mvn_impl(*args), args[0].dtype)


# --------------------------------------------------------------------------------------------
# Categorical
# --------------------------------------------------------------------------------------------


@jax.jit
def _categorical_impl(logits_p, logits_q):
    log_p = jax.nn.log_softmax(logits_p, axis=-1)
    log_q = jax.nn.log_softmax(logits_q, axis=-1)
    log_p, log_q = jnp.broadcast_arrays(log_p, log_q)
    support = log_p > -jnp.inf
    prob_p = jnp.where(support, jnp.exp(jnp.where(support, log_p, 0.0)), 0.0)
    # Where p = 0 both branches stay finite, so neither the value nor the gradient is NaN.
    diff = jnp.where(support, log_p, 0.0) - jnp.where(support, log_q, 0.0)
    return jnp.sum(jnp.where(support, prob_p * diff, 0.0), axis=-1)


def _check_logits(name: str, logits) -> None:
    """Finite or −inf (a zero-probability category); at least one finite entry per row."""
    if not _validate.is_concrete(logits):
        return
    arr = np.asarray(logits)
    if np.any(np.isnan(arr)) or np.any(arr == np.inf):
        raise ValueError(f"`{name}` must not contain NaN or +inf; got "
                         f"{int(np.sum(np.isnan(arr) | (arr == np.inf)))} such value(s).")
    if arr.size and np.any(np.all(arr == -np.inf, axis=-1)):
        raise ValueError(f"`{name}` must have at least one finite logit per distribution; "
                         "got a row that is all -inf.")


def categorical(logits_p, logits_q) -> jax.Array:
    """KL(Cat(softmax(logits_p)) ‖ Cat(softmax(logits_q))) over the last axis.

    Normalised with log_softmax, so very negative logits are fine; categories with p = 0
    (logit −inf) contribute exactly 0 to the value and the gradient. A category with p > 0 and
    q = 0 gives +inf.

    Args:
      logits_p: (..., K) unnormalised log-probabilities of p (finite or −inf).
      logits_q: (..., K) those of q. Batch axes broadcast.

    Returns:
      (...) KL(p ‖ q), the broadcast batch shape.

    Raises:
      ValueError: NaN or +inf logits, a row that is all −inf, or K = 0.
    """
    dtype = _validate.float_dtype(logits_p, logits_q)
    logits_p, logits_q = _validate.as_float(dtype, logits_p, logits_q)
    _layout.check_pair_shapes(("logits_p", "logits_q"), (logits_p, logits_q), (1, 1))
    if logits_p.shape[-1] < 1:
        raise ValueError("`logits_p` must have at least one category (K ≥ 1) in its last axis "
                         f"(..., K); got shape {logits_p.shape}.")
    _check_logits("logits_p", logits_p)
    _check_logits("logits_q", logits_q)
    return _categorical_impl(logits_p, logits_q)
