"""Closed-form, Monte Carlo and Gaussian-mixture KL divergences.

Every function here computes KL(p ‖ q) and is a pure function of arrays. The closed forms
broadcast over leading batch axes between p and q (NumPy rules) and work under `jit`, `vmap`
and `grad` in float32 and float64. Arguments are validated when called eagerly (shapes always;
NaN, positivity and positive-definiteness only on concrete arrays): bad input raises
`ValueError` naming the argument. Value checks are of what the compute dtype can do, not only
of the mathematics: a covariance that is positive definite but numerically singular in float32
is refused with a suggestion to use float64, and so is a scale of q below the dtype's smallest
normal number; p's scales may be subnormal (their logs are read from their bits). An eager
result is never NaN on accepted input (a last check raises `FloatingPointError`).
`GaussianMixture`'s `log_prob` and `sample` are traced primitives, checked only statically.

Closed forms:
  `normal_diag`   diagonal Gaussians, summed over the last axis.
  `mvn`           full-covariance Gaussians from covariances (Cholesky inside).
  `mvn_tril`      full-covariance Gaussians from lower-triangular scale factors.
  `categorical`   categorical distributions from logits (zero-probability categories allowed).

The all-pairs pattern — p with batch shape (..., N, 1) against q with (..., 1, M) — is detected
from the static shapes and routed to a factored path: each distribution is factored once and
the per-pair work becomes matmuls (full covariance: tr(Σ_q⁻¹Σ_p) = ⟨Σ_q⁻¹, Σ_p⟩ as an
(N, D²)×(D², M) matmul plus `jaxvi._linalg.pairwise_sq_mahalanobis_full`; diagonal: trace and
Mahalanobis terms fused into one (N, 2D)×(2D, M) matmul). Log-determinants are computed once
per distribution.

Monte Carlo: `monte_carlo(key, p, q, num_samples)` for anything with `sample`/`log_prob`.

Gaussian mixtures (`GaussianMixture`): no closed form exists. We give the Monte Carlo estimate,
the matched upper bound from the joint convexity of KL (best one-to-one matching of components),
the variational approximation and variational upper bound of Hershey & Olsen (2007), and the
lower/upper bounds of Durrieu, Thiran & Kelly (2012); `mixture_bounds` combines them.

`kl_divergence(p, q)` takes distrax distributions and picks the closed form where one exists.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxvi import _linalg, _validate

__all__ = [
    "GaussianMixture",
    "MixtureKLBounds",
    "MonteCarloEstimate",
    "categorical",
    "kl_divergence",
    "mixture_bounds",
    "mixture_lower_bound",
    "mixture_matched_upper_bound",
    "mixture_monte_carlo",
    "mixture_product_upper_bound",
    "mixture_variational",
    "mixture_variational_upper_bound",
    "monte_carlo",
    "mvn",
    "mvn_tril",
    "normal_diag",
]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _float_dtype(*arrays) -> Any:
    """The common floating dtype of `arrays` (float32 unless one of them is wider)."""
    return jnp.result_type(*[jnp.asarray(a).dtype for a in arrays], jnp.float32)


def _as_float(dtype, *arrays):
    return tuple(jnp.asarray(a, dtype=dtype) for a in arrays)


def _check_pair_shapes(names, arrays, event_ndims) -> tuple[int, ...]:
    """Check ranks, a common event size D and broadcastable batch shapes.

    names/arrays: the four parameters (p's two, then q's two); event_ndims: event rank of each
    (1 for a location or diagonal scale, 2 for a matrix). Returns the broadcast batch shape.
    """
    for name, a, k in zip(names, arrays, event_ndims, strict=True):
        hint = "(..., D)" if k == 1 else "(..., D, D)"
        _validate.check_min_ndim(name, a, k, hint)
        if k == 2 and a.shape[-1] != a.shape[-2]:
            raise ValueError(f"`{name}` must be square in its last two axes (..., D, D); "
                             f"got shape {a.shape}.")
    d0 = arrays[0].shape[-1]
    for name, a in zip(names[1:], arrays[1:], strict=True):
        _validate.check_same_size(names[0], d0, name, a.shape[-1], "event size (last axis)")
    batch = tuple(arrays[0].shape[: arrays[0].ndim - event_ndims[0]])
    batch_name = names[0]
    for name, a, k in zip(names[1:], arrays[1:], event_ndims[1:], strict=True):
        batch = _validate.check_broadcastable(batch_name, batch, name, a.shape[: a.ndim - k])
        batch_name = f"{batch_name}, {name}"
    return tuple(batch)


def _checked_gaussian_pair(names, arrays, event_ndims, check_scale):
    """Cast (loc_p, scale_p, loc_q, scale_q) to a common float dtype and validate them at the
    public boundary: shapes, finite locations, and `check_scale(name, a)` on both scales."""
    args = _as_float(_float_dtype(*arrays), *arrays)
    _check_pair_shapes(names, args, event_ndims)
    for name, a, check in zip(names, args, (_validate.check_finite, check_scale) * 2,
                              strict=True):
        check(name, a)
    return args


def _refuse_nan(fn: str, out, dtype) -> jax.Array:
    """The last guard of an eager call: inputs that passed validation must not give NaN.

    (+inf is a true value that overflows the dtype; NaN would be a failed factorisation or an
    inf − inf, which the argument checks are meant to rule out.) Skipped under jit.
    """
    if _validate.is_concrete(out) and np.any(np.isnan(np.asarray(out))):
        raise FloatingPointError(
            f"`kl.{fn}` gave NaN in {np.dtype(dtype).name} on inputs that passed its checks "
            "(an overflow or a failed factorisation); use float64 arrays (inside "
            "`jax.enable_x64(True)`) or rescale the problem.")
    return out


def _side_batch(a: jax.Array, b: jax.Array, ka: int, kb: int) -> tuple[int, ...]:
    return tuple(jnp.broadcast_shapes(a.shape[: a.ndim - ka], b.shape[: b.ndim - kb]))


def _all_pairs_layout(batch_p, batch_q):
    """Static test for the all-pairs pattern: p (..., N, 1) against q (..., 1, M), N, M > 1.

    Returns (lead, N, M) or None. Leading axes must agree exactly between p and q.
    """
    r = max(len(batch_p), len(batch_q))
    if r < 2:
        return None
    bp = (1,) * (r - len(batch_p)) + tuple(batch_p)
    bq = (1,) * (r - len(batch_q)) + tuple(batch_q)
    if bp[-1] != 1 or bq[-2] != 1 or bp[:-2] != bq[:-2]:
        return None
    n, m = bp[-2], bq[-1]
    if n <= 1 or m <= 1:
        return None
    return bp[:-2], n, m


def _pairs_call(core, lead, n, m, p_args, q_args, p_event, q_event):
    """Reshape p's params to (L, N, *event) and q's to (L, M, *event), vmap `core` over L and
    reshape the (L, N, M) result to (*lead, N, M)."""
    size = math.prod(lead)
    p_flat = [jnp.broadcast_to(a, (*lead, n, 1, *a.shape[a.ndim - k:])).reshape(
        size, n, *a.shape[a.ndim - k:]) for a, k in zip(p_args, p_event, strict=True)]
    q_flat = [jnp.broadcast_to(a, (*lead, 1, m, *a.shape[a.ndim - k:])).reshape(
        size, m, *a.shape[a.ndim - k:]) for a, k in zip(q_args, q_event, strict=True)]
    out = jax.vmap(core)(*p_flat, *q_flat)
    return out.reshape(*lead, n, m)


# --------------------------------------------------------------------------------------------
# Diagonal Gaussians
# --------------------------------------------------------------------------------------------


def _log_p(a, exact_log_p: bool):
    """log of p's (positive) scales: `jnp.log`, or with `exact_log_p` `_linalg.log_positive`,
    which is right for subnormal values too (XLA flushes them to zero, so `jnp.log(1e-40)` is
    −inf in float32). The eager wrappers pick `exact_log_p` only when some scale of p is
    subnormal: its bit manipulation costs 5-10 % of a small kernel."""
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
    layout = _all_pairs_layout(_side_batch(loc_p, scale_p, 1, 1), _side_batch(loc_q, scale_q, 1, 1))
    if layout is None:
        return _normal_diag_elementwise(loc_p, scale_p, loc_q, scale_q, exact_log_p)
    return _pairs_call(functools.partial(_normal_diag_pairs, exact_log_p=exact_log_p), *layout,
                       (loc_p, scale_p), (loc_q, scale_q), (1, 1), (1, 1))


def _has_subnormal(a) -> bool:
    """Concrete `a` with a positive entry below its dtype's smallest normal number."""
    if not _validate.is_concrete(a):
        return False
    arr = np.asarray(a)
    return bool(np.any((arr > 0) & (arr < np.finfo(arr.dtype).tiny)))


def normal_diag(loc_p, scale_p, loc_q, scale_q) -> jax.Array:
    """KL(N(μ_p, diag σ_p²) ‖ N(μ_q, diag σ_q²)), summed over the last axis.

    loc_p, scale_p, loc_q, scale_q: (..., D), batch axes broadcast -> (...).
    ½ Σ_d [σ_p²/σ_q² − 1 − 2 log(σ_p/σ_q) + (μ_p − μ_q)²/σ_q²].

    Any positive σ_p is exact in an eager call, subnormal ones included (1e-40 in float32: its
    log is read from its bits; under jit a subnormal σ_p is flushed to zero, giving +inf);
    σ_q must be at least the dtype's smallest normal number (1.2e-38 in float32), since
    dividing by a subnormal divides by zero.
    """
    args = _checked_gaussian_pair(("loc_p", "scale_p", "loc_q", "scale_q"),
                                  (loc_p, scale_p, loc_q, scale_q), (1, 1, 1, 1),
                                  _validate.check_positive)
    _validate.check_normal_range("scale_q", args[3], args[3].dtype)
    out = _normal_diag_impl(*args, exact_log_p=_has_subnormal(args[1]))
    return _refuse_nan("normal_diag", out, args[0].dtype)


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
    layout = _all_pairs_layout(_side_batch(loc_p, tril_p, 1, 2), _side_batch(loc_q, tril_q, 1, 2))
    if layout is None:
        return _mvn_from_tril_elementwise(loc_p, tril_p, loc_q, tril_q, exact_log_p)
    return _pairs_call(functools.partial(_mvn_tril_pairs, exact_log_p=exact_log_p), *layout,
                       (loc_p, tril_p), (loc_q, tril_q), (1, 2), (1, 2))


@jax.jit
def _mvn_impl(loc_p, cov_p, loc_q, cov_q):
    layout = _all_pairs_layout(_side_batch(loc_p, cov_p, 1, 2), _side_batch(loc_q, cov_q, 1, 2))
    if layout is None:
        return _mvn_from_tril_elementwise(
            loc_p, _linalg.cholesky(cov_p), loc_q, _linalg.cholesky(cov_q))
    return _pairs_call(_mvn_cov_pairs, *layout, (loc_p, cov_p), (loc_q, cov_q), (1, 2), (1, 2))


def mvn_tril(loc_p, scale_tril_p, loc_q, scale_tril_q) -> jax.Array:
    """KL(N(μ_p, L_pL_pᵀ) ‖ N(μ_q, L_qL_qᵀ)) from lower-triangular scale factors.

    loc_*: (..., D), scale_tril_*: (..., D, D), batch axes broadcast -> (...).
    Only the lower triangle of each factor is read (the gradient above the diagonal is exactly
    zero); its diagonal must be positive, and L_q's at least the dtype's smallest normal
    number (L_p's may be subnormal in an eager call, as σ_p in `normal_diag`). Computed with
    one triangular solve per pair:
    ½(‖L_q⁻¹L_p‖²_F + ‖L_q⁻¹(μ_q − μ_p)‖² − D) + Σ log diag L_q − Σ log diag L_p.
    """
    args = _checked_gaussian_pair(("loc_p", "scale_tril_p", "loc_q", "scale_tril_q"),
                                  (loc_p, scale_tril_p, loc_q, scale_tril_q), (1, 2, 1, 2),
                                  _validate.check_tril_scale)
    _validate.check_normal_range(
        "scale_tril_q", jnp.diagonal(args[3], axis1=-2, axis2=-1), args[3].dtype)
    exact = _has_subnormal(jnp.diagonal(args[1], axis1=-2, axis2=-1))
    return _refuse_nan("mvn_tril", _mvn_tril_impl(*args, exact_log_p=exact), args[0].dtype)


def mvn(loc_p, cov_p, loc_q, cov_q) -> jax.Array:
    """KL(N(μ_p, Σ_p) ‖ N(μ_q, Σ_q)) from covariance matrices.

    loc_*: (..., D), cov_*: (..., D, D) symmetric positive definite, batch axes broadcast -> (...).
    ½(tr(Σ_q⁻¹Σ_p) + (μ_q − μ_p)ᵀΣ_q⁻¹(μ_q − μ_p) − D + ln|Σ_q|/|Σ_p|), computed through
    Cholesky factors and triangular solves; no explicit inverse or determinant.

    For the all-pairs pattern (p batch (..., N, 1), q batch (..., 1, M)) Σ_q⁻¹ is formed once
    per q from its Cholesky factor and the pairs cost two matmuls.

    Eagerly, positive definiteness is checked in float64 and then what the Cholesky in the
    compute dtype can do: a covariance that is numerically singular in that dtype (condition
    number, scaled to unit diagonal, above 1/(max(D, 16)·eps): about 5e5 in float32, e.g. a
    Hilbert(8) matrix or the sample covariance of nearly collinear data) is refused with a
    `ValueError` suggesting float64, rather than factorised into NaN or a wrong value.
    """
    args = _checked_gaussian_pair(("loc_p", "cov_p", "loc_q", "cov_q"),
                                  (loc_p, cov_p, loc_q, cov_q), (1, 2, 1, 2),
                                  _validate.check_positive_definite)
    for name, cov in (("cov_p", args[1]), ("cov_q", args[3])):
        _validate.check_cholesky_resolvable(name, cov, cov.dtype)
    return _refuse_nan("mvn", _mvn_impl(*args), args[0].dtype)


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

    logits_p, logits_q: (..., K), batch axes broadcast -> (...). Normalised with log_softmax,
    so very negative logits are fine; categories with p = 0 (logit −inf) contribute exactly 0
    to the value and the gradient. A category with p > 0 and q = 0 gives +inf.
    """
    dtype = _float_dtype(logits_p, logits_q)
    logits_p, logits_q = _as_float(dtype, logits_p, logits_q)
    _check_pair_shapes(("logits_p", "logits_q"), (logits_p, logits_q), (1, 1))
    if logits_p.shape[-1] < 1:
        raise ValueError("`logits_p` must have at least one category (K ≥ 1) in its last axis "
                         f"(..., K); got shape {logits_p.shape}.")
    _check_logits("logits_p", logits_p)
    _check_logits("logits_q", logits_q)
    return _categorical_impl(logits_p, logits_q)


# --------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate of KL(p ‖ q) and its standard error, each of p's batch shape."""

    estimate: jax.Array
    stderr: jax.Array


def monte_carlo(key: jax.Array, p, q, num_samples: int) -> MonteCarloEstimate:
    """Monte Carlo KL(p ‖ q) = E_p[log p(x) − log q(x)] with its standard error.

    p, q: objects with `sample(seed=key, sample_shape=(S,))` and `log_prob(x)` (distrax or TFP
    distributions, `GaussianMixture`); num_samples: S ≥ 2. The standard error is the sample
    standard deviation of the log-ratio over √S.
    """
    if int(num_samples) < 2:
        raise ValueError(f"`num_samples` must be at least 2; got {num_samples!r}.")
    for name, dist in (("p", p), ("q", q)):
        if not (hasattr(dist, "sample") and hasattr(dist, "log_prob")):
            raise ValueError(f"`{name}` must have `sample` and `log_prob` methods; "
                             f"got {type(dist).__name__}.")
    x = p.sample(seed=key, sample_shape=(int(num_samples),))
    log_ratio = p.log_prob(x) - q.log_prob(x)
    estimate = jnp.mean(log_ratio, axis=0)
    stderr = jnp.std(log_ratio, axis=0, ddof=1) / jnp.sqrt(float(num_samples))
    return MonteCarloEstimate(estimate, stderr)


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------


class GaussianMixture(NamedTuple):
    """A mixture of K full-covariance Gaussians in D dimensions (batch axes lead).

    logits: (..., K) unnormalised log weights; loc: (..., K, D);
    scale_tril: (..., K, D, D) lower-triangular factors with positive diagonals (Σ_k = L_kL_kᵀ).
    Has `sample` and `log_prob`, so `monte_carlo` takes it directly.
    """

    logits: jax.Array
    loc: jax.Array
    scale_tril: jax.Array

    @classmethod
    def from_covariance(cls, logits, loc, cov) -> GaussianMixture:
        """Build from covariances cov: (..., K, D, D) (Cholesky-factored here).

        logits: (..., K), loc: (..., K, D). The covariances must be positive definite and
        resolvable by a Cholesky factorisation in their dtype (see `mvn`).
        """
        dtype = _float_dtype(logits, loc, cov)
        logits, loc, cov = _as_float(dtype, logits, loc, cov)
        _validate.check_min_ndim("cov", cov, 3, "(..., K, D, D)")
        k, d = cov.shape[-3], cov.shape[-1]
        if cov.shape[-2] != d:
            raise ValueError(f"`cov` must be square in its last two axes (..., K, D, D); got "
                             f"shape {cov.shape}.")
        _validate.check_min_ndim("loc", loc, 2, "(..., K, D)")
        if loc.shape[-2:] != (k, d):
            raise ValueError(f"`loc` must have shape (..., {k}, {d}) to match `cov` "
                             f"{cov.shape}; got {loc.shape}.")
        _validate.check_min_ndim("logits", logits, 1, "(..., K)")
        _validate.check_same_size("logits", logits.shape[-1], "cov", k, "number of components K")
        _validate.check_positive_definite("cov", cov)
        _validate.check_cholesky_resolvable("cov", cov, dtype)
        return cls(logits, loc, _linalg.cholesky(cov))

    @property
    def log_weights(self) -> jax.Array:
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def covariance(self) -> jax.Array:
        tril = _linalg.tril_only(self.scale_tril)
        return tril @ jnp.swapaxes(tril, -1, -2)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log density. x: (..., D) broadcasting against the batch shape -> (...)."""
        tril = _linalg.tril_only(self.scale_tril)
        d = self.loc.shape[-1]
        _validate.check_min_ndim("x", x, 1, "(..., D)")
        _validate.check_same_size("x", x.shape[-1], "loc", d, "event size D (last axis)")
        diff = x[..., None, :] - self.loc
        z = _linalg.solve_tril_vec(tril, diff)
        comp = (-0.5 * (jnp.sum(jnp.square(z), axis=-1) + d * _linalg.LOG_2PI)
                - 0.5 * _linalg.logdet_tril(tril))
        return jax.nn.logsumexp(self.log_weights + comp, axis=-1)

    def sample(self, seed: jax.Array, sample_shape=()) -> jax.Array:
        """Draws of shape (*sample_shape, *batch, D)."""
        sample_shape = tuple(np.atleast_1d(sample_shape).astype(int)) if sample_shape else ()
        batch = self.logits.shape[:-1]
        d = self.loc.shape[-1]
        key_k, key_z = jax.random.split(seed)
        comp = jax.random.categorical(key_k, self.logits, shape=(*sample_shape, *batch))
        eps = jax.random.normal(key_z, (*sample_shape, *batch, d), dtype=self.loc.dtype)
        loc = jnp.take_along_axis(
            jnp.broadcast_to(self.loc, (*sample_shape, *self.loc.shape)),
            comp[..., None, None], axis=-2)[..., 0, :]
        tril = jnp.broadcast_to(_linalg.tril_only(self.scale_tril),
                                (*sample_shape, *self.scale_tril.shape))
        tril = jnp.take_along_axis(tril, comp[..., None, None, None], axis=-3)[..., 0, :, :]
        return loc + jnp.einsum("...ij,...j->...i", tril, eps)


def _check_mixture(name: str, mix) -> GaussianMixture:
    if not isinstance(mix, GaussianMixture):
        raise ValueError(f"`{name}` must be a jaxvi.kl.GaussianMixture; got {type(mix).__name__}.")
    logits, loc, tril = (jnp.asarray(a) for a in mix)
    _validate.check_min_ndim(f"{name}.logits", logits, 1, "(..., K)")
    _validate.check_min_ndim(f"{name}.loc", loc, 2, "(..., K, D)")
    _validate.check_min_ndim(f"{name}.scale_tril", tril, 3, "(..., K, D, D)")
    k, d = loc.shape[-2:]
    _validate.check_same_size(f"{name}.logits", logits.shape[-1], f"{name}.loc", k,
                              "number of components K")
    _validate.check_same_size(f"{name}.scale_tril", tril.shape[-3], f"{name}.loc", k,
                              "number of components K")
    if tril.shape[-2:] != (d, d):
        raise ValueError(f"`{name}.scale_tril` must have shape (..., K, {d}, {d}) to match "
                         f"`{name}.loc`; got {tril.shape}.")
    _validate.check_finite(f"{name}.logits", logits)
    _validate.check_finite(f"{name}.loc", loc)
    _validate.check_tril_scale(f"{name}.scale_tril", tril)
    _validate.check_normal_range(f"{name}.scale_tril",
                                 jnp.diagonal(tril, axis1=-2, axis2=-1), tril.dtype)
    dtype = _float_dtype(logits, loc, tril)
    return GaussianMixture(*_as_float(dtype, logits, loc, tril))


def _check_mixture_pair(p, q):
    p = _check_mixture("p", p)
    q = _check_mixture("q", q)
    _validate.check_same_size("p.loc", p.loc.shape[-1], "q.loc", q.loc.shape[-1],
                              "event size D (last axis)")
    _validate.check_broadcastable("p", p.logits.shape[:-1], "q", q.logits.shape[:-1])
    dtype = _float_dtype(*p, *q)
    return GaussianMixture(*_as_float(dtype, *p)), GaussianMixture(*_as_float(dtype, *q))


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
    d = loc_a.shape[-1]
    cov_a = tril_a @ jnp.swapaxes(tril_a, -1, -2)
    cov_b = tril_b @ jnp.swapaxes(tril_b, -1, -2)
    chol = _linalg.cholesky(cov_a[:, None] + cov_b[None, :])
    z = _linalg.solve_tril_vec(chol, loc_a[:, None, :] - loc_b[None, :, :])
    return -0.5 * (jnp.sum(jnp.square(z), axis=-1) + d * _linalg.LOG_2PI
                   + _linalg.logdet_tril(chol))


def _expect(log_w, values):
    """Σ_a w_a v_a with w = exp(log_w), zero where w = 0."""
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
    terms = log_joint - log_psi - log_omega[None, :] + kl
    w = jnp.exp(log_joint)
    return jnp.sum(jnp.where(w > 0, w * terms, 0.0))


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


def _mixture_apply(single, p: GaussianMixture, q: GaussianMixture, **kwargs):
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


def mixture_variational(p: GaussianMixture, q: GaussianMixture) -> jax.Array:
    """Hershey & Olsen's (2007) variational approximation of KL between Gaussian mixtures.

    p: K components, q: J components, batch axes broadcast -> (...). An approximation, not a
    bound: D_var = Σ_a π_a log[Σ_α π_α e^{−KL(f_a‖f_α)} / Σ_b ω_b e^{−KL(f_a‖g_b)}]. Exact when
    p and q are single Gaussians; zero when p = q.
    """
    p, q = _check_mixture_pair(p, q)
    return _variational_impl(p, q)


def mixture_matched_upper_bound(p: GaussianMixture, q: GaussianMixture) -> jax.Array:
    """Upper bound from the joint convexity of KL with the best one-to-one matching σ:

        KL(Σ_a π_a f_a ‖ Σ_b ω_b g_b) ≤ min_σ Σ_a π_a [log(π_a/ω_σ(a)) + KL(f_a ‖ g_σ(a))].

    p: K components, q: J ≥ K components (unmatched q components only loosen the bound), batch
    axes broadcast -> (...). The pairwise component KL matrix comes from the all-pairs fast path;
    the matching is an exact linear assignment by `scipy.optimize.linear_sum_assignment` run
    through `jax.pure_callback`, so this works under `jit` and `vmap` (sequentially); gradients
    flow through the matched terms (the matching itself is locally constant).
    """
    p, q = _check_mixture_pair(p, q)
    k, j = p.logits.shape[-1], q.logits.shape[-1]
    if k > j:
        raise ValueError(f"`p` must have no more components than `q` for a one-to-one matching; "
                         f"got K={k} and J={j}.")
    return _matched_impl(p, q)


def mixture_variational_upper_bound(
    p: GaussianMixture, q: GaussianMixture, num_iters: int = 20
) -> jax.Array:
    """Hershey & Olsen's (2007) variational upper bound: joint convexity over the product
    index (a, b), with the split weights φ_{b|a}, ψ_{a|b} optimised by `num_iters` rounds of
    their alternating closed-form updates (each round can only lower the bound).

    p: K components, q: J components (any K, J), batch axes broadcast -> (...).
    """
    p, q = _check_mixture_pair(p, q)
    if int(num_iters) < 0:
        raise ValueError(f"`num_iters` must be non-negative; got {num_iters!r}.")
    return _variational_upper_impl(p, q, int(num_iters))


def mixture_lower_bound(p: GaussianMixture, q: GaussianMixture) -> jax.Array:
    """Lower bound of Durrieu, Thiran & Kelly (2012):

        KL ≥ Σ_a π_a [log Σ_α π_α e^{−KL(f_a‖f_α)} − H(f_a) − log Σ_b ω_b ∫f_a g_b].

    (The variational lower bound on E_p log p, and Jensen's bound E_{f_a} log q ≤ log ∫ f_a q.)
    p: K components, q: J components, batch axes broadcast -> (...). May be negative.
    """
    p, q = _check_mixture_pair(p, q)
    return _lower_impl(p, q)


def mixture_product_upper_bound(p: GaussianMixture, q: GaussianMixture) -> jax.Array:
    """Upper bound of Durrieu, Thiran & Kelly (2012):

        KL ≤ Σ_a π_a [log Σ_α π_α ∫f_a f_α − log Σ_b ω_b e^{−KL(f_a‖g_b)} + H(f_a)].

    p: K components, q: J components, batch axes broadcast -> (...).
    """
    p, q = _check_mixture_pair(p, q)
    return _product_upper_impl(p, q)


class MixtureKLBounds(NamedTuple):
    """Bounds on and an approximation of KL(p ‖ q) between Gaussian mixtures, each (...)."""

    lower: jax.Array  # max(0, Durrieu et al. lower bound)
    upper: jax.Array  # min of the matched, variational and product upper bounds
    variational: jax.Array  # Hershey–Olsen approximation, clipped into [lower, upper]


def mixture_bounds(p: GaussianMixture, q: GaussianMixture, num_iters: int = 20) -> MixtureKLBounds:
    """Every bound we have, combined: lower ≤ KL(p ‖ q) ≤ upper, plus the variational estimate.

    The matched bound is included when p has no more components than q.
    """
    p, q = _check_mixture_pair(p, q)
    uppers = [_variational_upper_impl(p, q, int(num_iters)), _product_upper_impl(p, q)]
    if p.logits.shape[-1] <= q.logits.shape[-1]:
        uppers.append(_matched_impl(p, q))
    upper = uppers[0]
    for u in uppers[1:]:
        upper = jnp.minimum(upper, u)
    lower = jnp.maximum(_lower_impl(p, q), 0.0)
    upper = jnp.maximum(upper, lower)
    variational = jnp.clip(_variational_impl(p, q), lower, upper)
    return MixtureKLBounds(lower, upper, variational)


def mixture_monte_carlo(
    key: jax.Array, p: GaussianMixture, q: GaussianMixture, num_samples: int
) -> MonteCarloEstimate:
    """Monte Carlo KL between Gaussian mixtures with its standard error; batch shape of p.

    Unbiased; the standard error shrinks as 1/√num_samples.
    """
    p, q = _check_mixture_pair(p, q)
    return monte_carlo(key, p, q, num_samples)


# --------------------------------------------------------------------------------------------
# One entry point for distrax distributions
# --------------------------------------------------------------------------------------------


def _as_mvn_tril(dist):
    """(loc, scale_tril) of a distrax MVN (Diag/Tri/FullCovariance), else None."""
    import distrax

    if isinstance(dist, distrax.MultivariateNormalDiag):
        return dist.loc, jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(dist.scale_diag)
    if isinstance(dist, (distrax.MultivariateNormalTri, distrax.MultivariateNormalFullCovariance)):
        return dist.loc, dist.scale_tri
    return None


def _as_mixture(dist) -> GaussianMixture | None:
    import distrax

    if isinstance(dist, GaussianMixture):
        return dist
    mvn_params = _as_mvn_tril(dist)
    if mvn_params is not None:  # a single Gaussian is a one-component mixture
        loc, tril = mvn_params
        return GaussianMixture(jnp.zeros((*loc.shape[:-1], 1), loc.dtype),
                               loc[..., None, :], tril[..., None, :, :])
    if isinstance(dist, distrax.MixtureSameFamily):
        comp = _as_mvn_tril(dist.components_distribution)
        if comp is not None:
            return GaussianMixture(dist.mixture_distribution.logits, *comp)
    return None


_MIXTURE_METHODS = ("auto", "monte_carlo", "variational", "matched", "variational_upper",
                    "lower", "upper")


def kl_divergence(p, q, *, key: jax.Array | None = None, method: str = "auto",
                  num_samples: int = 10_000) -> jax.Array:
    """KL(p ‖ q) for distrax distributions, closed form where one exists.

    Closed forms: `Normal`‖`Normal` and `MultivariateNormalDiag`‖`MultivariateNormalDiag`
    (`normal_diag`), `MultivariateNormalFullCovariance` pairs (`mvn`), any other pair of
    `MultivariateNormalDiag/Tri/FullCovariance` (`mvn_tril`), `Categorical` (`categorical`).

    Gaussian mixtures (`distrax.MixtureSameFamily` with MVN components, `GaussianMixture`, or a
    mixture against a single MVN) have no closed form; `method` picks the estimate:
    "auto" = Monte Carlo with `num_samples` draws if `key` is given, otherwise the Hershey–Olsen
    variational approximation; "monte_carlo" (needs `key`; for its standard error call
    `monte_carlo`), "variational", "matched" (matched upper bound), "variational_upper",
    "lower", "upper" (the tightest of our upper bounds). Returns an array of the batch shape.
    """
    import distrax

    _validate.check_choice("method", method, _MIXTURE_METHODS)
    if isinstance(p, distrax.Categorical) and isinstance(q, distrax.Categorical):
        return categorical(p.logits, q.logits)
    if isinstance(p, distrax.Normal) and isinstance(q, distrax.Normal):
        return normal_diag(jnp.asarray(p.loc)[..., None], jnp.asarray(p.scale)[..., None],
                           jnp.asarray(q.loc)[..., None], jnp.asarray(q.scale)[..., None])
    full, diag = distrax.MultivariateNormalFullCovariance, distrax.MultivariateNormalDiag
    if isinstance(p, diag) and isinstance(q, diag):
        return normal_diag(p.loc, p.scale_diag, q.loc, q.scale_diag)
    if isinstance(p, full) and isinstance(q, full):
        return mvn(p.loc, p.covariance_matrix, q.loc, q.covariance_matrix)
    p_tril, q_tril = _as_mvn_tril(p), _as_mvn_tril(q)
    if p_tril is not None and q_tril is not None:
        return mvn_tril(*p_tril, *q_tril)
    p_mix, q_mix = _as_mixture(p), _as_mixture(q)
    if p_mix is None or q_mix is None:
        raise ValueError(
            f"`p` and `q` must be a supported pair (Normal, MultivariateNormalDiag/Tri/"
            f"FullCovariance, Categorical, MixtureSameFamily of MVNs, GaussianMixture); got "
            f"{type(p).__name__} and {type(q).__name__}.")
    if method == "auto":
        method = "monte_carlo" if key is not None else "variational"
    if method == "monte_carlo":
        if key is None:
            raise ValueError("`key` is required for method='monte_carlo'; got None.")
        return mixture_monte_carlo(key, p_mix, q_mix, num_samples).estimate
    if method == "variational":
        return mixture_variational(p_mix, q_mix)
    if method == "matched":
        return mixture_matched_upper_bound(p_mix, q_mix)
    if method == "variational_upper":
        return mixture_variational_upper_bound(p_mix, q_mix)
    if method == "lower":
        return mixture_bounds(p_mix, q_mix).lower
    return mixture_bounds(p_mix, q_mix).upper
