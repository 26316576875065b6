"""The one home of numerically delicate linear algebra: Cholesky factors, triangular solves,
log-determinants, and the pairwise quadratic-form kernels shared by KL, EM and the VAE.

All functions are pure, broadcast over leading batch axes and work under jit/vmap/grad.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

LOG_2PI = math.log(2.0 * math.pi)


def symmetrize(a: jax.Array) -> jax.Array:
    """(A + Aᵀ)/2 over the last two axes. a: (..., D, D)."""
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def inverse_softplus(y):
    """softplus⁻¹(y) = log(expm1(y)) for y > 0, written y + log(−expm1(−y)) so it neither
    overflows for large y nor loses digits for small y. NumPy in, NumPy (same dtype) out;
    anything else goes through jax.numpy."""
    xp = np if isinstance(y, (float, np.ndarray, np.generic)) else jnp
    return y + xp.log(-xp.expm1(-y))


def cholesky(cov: jax.Array, jitter: float = 0.0) -> jax.Array:
    """Lower Cholesky factor of a symmetrised `cov + jitter·I`. cov: (..., D, D)."""
    cov = symmetrize(cov)
    if jitter:
        cov = cov + jitter * jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return jnp.linalg.cholesky(cov)


def tril_only(scale_tril: jax.Array) -> jax.Array:
    """Zero the entries above the diagonal (so their gradient is exactly zero)."""
    return jnp.tril(scale_tril)


def solve_tril(l: jax.Array, b: jax.Array) -> jax.Array:
    """L⁻¹ b for lower-triangular L. l: (..., D, D), b: (..., D, M); batch axes broadcast."""
    batch = jnp.broadcast_shapes(l.shape[:-2], b.shape[:-2])
    l = jnp.broadcast_to(l, batch + l.shape[-2:])
    b = jnp.broadcast_to(b, batch + b.shape[-2:])
    return solve_triangular(l, b, lower=True)


def tril_inverse(l: jax.Array) -> jax.Array:
    """L⁻¹ for lower-triangular L (itself lower-triangular). l: (..., D, D)."""
    eye = jnp.broadcast_to(jnp.eye(l.shape[-1], dtype=l.dtype), l.shape)
    return solve_triangular(l, eye, lower=True)


def logdet_tril(l: jax.Array) -> jax.Array:
    """log|L Lᵀ| = 2 Σ log|diag L|. l: (..., D, D) -> (...)."""
    return 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(l, axis1=-2, axis2=-1))), axis=-1)


def precision_from_tril(l: jax.Array) -> jax.Array:
    """Σ⁻¹ = L⁻ᵀ L⁻¹ from the Cholesky factor L of Σ. l: (..., D, D)."""
    inv = tril_inverse(l)
    return jnp.swapaxes(inv, -1, -2) @ inv


def pairwise_sq_mahalanobis_diag(
    x: jax.Array, mean: jax.Array, inv_var: jax.Array, x_var: jax.Array | None = None
) -> jax.Array:
    """Σ_d ((x_nd − m_kd)² + s_nd²) / v_kd for all pairs, as one matmul.

    x: (N, D), mean: (K, D), inv_var: (K, D), x_var (s², optional): (N, D) -> (N, K).
    Without `x_var` this is the squared Mahalanobis distance; with it, its expectation under
    x ~ N(x, diag s²) (the trace-plus-Mahalanobis term of a diagonal Gaussian KL). The square
    expands into (x² + s²)·(1/v) − 2x·(m/v) + Σ m²/v: one (N, 2D)×(2D, K) matmul plus a
    per-k constant, instead of O(N·K·D) elementwise work. Both sides are centred on the mean
    of `mean` first (the result is translation invariant), which keeps the expansion from
    cancelling catastrophically when the data sit far from the origin.
    """
    shift = jax.lax.stop_gradient(jnp.mean(mean, axis=0))
    x = x - shift
    mean = mean - shift
    second_moment = x * x if x_var is None else x * x + x_var
    lhs = jnp.concatenate([second_moment, x], axis=-1)
    rhs = jnp.concatenate([inv_var, -2.0 * mean * inv_var], axis=-1)
    const = jnp.sum(mean * mean * inv_var, axis=-1)
    # Contract the last axes of both sides (no transposed copy of rhs). 2D columns, not
    # 2D + 2 with the constants folded in: an aligned K plus one fused add over the (N, K)
    # result is faster than the unaligned matmul (benchmarks/README.md).
    quad = jax.lax.dot_general(lhs, rhs, (((1,), (1,)), ((), ())))
    return jnp.maximum(quad + const, 0.0)


def pairwise_sq_mahalanobis_full(
    x: jax.Array, mean: jax.Array, precision: jax.Array
) -> jax.Array:
    """(x_n − m_k)ᵀ Λ_k (x_n − m_k) for all pairs, as matmuls.

    x: (N, D), mean: (K, D), precision: (K, D, D) -> (N, K).
    Uses xᵀΛx = ⟨x xᵀ, Λ⟩ so the work is an (N, D²)×(D², K) matmul plus an (N, D)×(D, K) one,
    with no (N, K, D) intermediate. Both sides are centred on `mean[0]` first (the result is
    translation invariant), so locations far from the origin do not cancel in the expansion.
    The shift is a copy of stored values, not an average: under jit XLA recomputes a computed
    shift inside each consumer fusion and evaluates `x − sum·(1/K)` differently in some of them
    (the multiply and subtract contracted into one rounding), so x and `mean` were shifted by
    values up to an ulp apart, which an offset of 1e5 in float32 turns into a visible error;
    a copied row is the same bits in every fusion.
    """
    shift = jax.lax.stop_gradient(mean[0] if mean.shape[0] else jnp.zeros_like(x[0]))
    x = x - shift
    mean = mean - shift
    n, d = x.shape
    k = mean.shape[0]
    outer = (x[:, :, None] * x[:, None, :]).reshape(n, d * d)
    quad = outer @ precision.reshape(k, d * d).T
    lam_mean = jnp.einsum("kij,kj->ki", precision, mean)
    cross = x @ lam_mean.T
    const = jnp.sum(mean * lam_mean, axis=-1)
    return jnp.maximum(quad - 2.0 * cross + const, 0.0)


def diag_normal_log_prob_pairwise(
    x: jax.Array, mean: jax.Array, scale: jax.Array
) -> jax.Array:
    """log N(x_n; m_k, diag s_k²) for all pairs. x: (N, D), mean, scale: (K, D) -> (N, K)."""
    d = x.shape[-1]
    maha = pairwise_sq_mahalanobis_diag(x, mean, 1.0 / jnp.square(scale))
    return -0.5 * (maha + d * LOG_2PI) - jnp.sum(jnp.log(scale), axis=-1)


def diag_normal_log_prob(x: jax.Array, mean: jax.Array, scale: jax.Array) -> jax.Array:
    """log N(x; m, diag s²) summed over the last axis; all arguments broadcast."""
    z = (x - mean) / scale
    return -0.5 * jnp.sum(jnp.square(z) + LOG_2PI, axis=-1) - jnp.sum(jnp.log(scale), axis=-1)


def sym_outer_features(x: jax.Array) -> jax.Array:
    """The D(D+1)/2 distinct entries x_i x_j (i ≤ j, row-major upper triangle) of x xᵀ.

    x: (..., D) -> (..., D(D+1)/2). With `pack_sym(A, off_diagonal=2)` this gives the quadratic
    form xᵀAx = sym_outer_features(x) · pack_sym(A, 2) for symmetric A, so N quadratic forms
    against K matrices are one (N, D(D+1)/2)×(D(D+1)/2, K) matmul, half the work of the
    (N, D²) form; `unpack_sym(Σ_n w_n sym_outer_features(x_n))` is the weighted Σ w x xᵀ.
    """
    d = x.shape[-1]
    return jnp.concatenate([x[..., i : i + 1] * x[..., i:] for i in range(d)], axis=-1)


def pack_sym(a: jax.Array, off_diagonal: float = 1.0) -> jax.Array:
    """Upper triangle (i ≤ j, row-major) of a: (..., D, D) -> (..., D(D+1)/2), with the
    off-diagonal entries multiplied by `off_diagonal` (2 to pair with `sym_outer_features`)."""
    d = a.shape[-1]
    rows, cols = jnp.triu_indices(d)
    scale = jnp.where(rows == cols, 1.0, off_diagonal).astype(a.dtype)
    return a[..., rows, cols] * scale


def unpack_sym(p: jax.Array, d: int) -> jax.Array:
    """Inverse of `pack_sym(·, 1)`: (..., D(D+1)/2) -> symmetric (..., D, D)."""
    rows, cols = jnp.triu_indices(d)
    out = jnp.zeros(p.shape[:-1] + (d, d), p.dtype)
    out = out.at[..., rows, cols].set(p)
    return out.at[..., cols, rows].set(p)


_BLAS_CONTROLLER = []


def single_threaded_lapack():
    """Context manager: BLAS/LAPACK libraries limited to one thread while it is open (CPU only).

    JAX's CPU Cholesky and triangular solves call LAPACK from scipy's OpenBLAS; for the small
    batched factorisations of an EM or KL step its multi-threaded hand-off costs tens of ms per
    call on a busy machine (benchmarks/README.md). XLA's own matmuls do not use OpenBLAS, so
    nothing else slows down.
    Scoped: the previous limits are restored on exit. A no-op without threadpoolctl or off CPU.
    """
    import contextlib

    if jax.default_backend() != "cpu":
        return contextlib.nullcontext()
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    if not _BLAS_CONTROLLER:
        _BLAS_CONTROLLER.append(ThreadpoolController())
    return _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas")


def log_positive(x: jax.Array) -> jax.Array:
    """log x for x > 0, right for subnormal x too. x: any shape, floating.

    XLA's CPU kernels (and, by default, GPU ones) flush subnormal floats to zero, so
    `jnp.log(1e-40)` in float32 is −inf although 1e-40 is representable. A subnormal's bits,
    read as an integer, are its mantissa m, and x = m · 2^(minexp − nmant), so
    log x = log m + (minexp − nmant) log 2, computed from the bits with no subnormal
    arithmetic. Normal x get `jnp.log(x)`, value and gradient; the gradient at a subnormal x
    is 0 (the true 1/x overflows anyway). Costs a few elementwise integer ops per entry.
    """
    x = jnp.asarray(x)
    info = jnp.finfo(x.dtype)
    int_dtype = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(x), int_dtype)
    subnormal = (bits > 0) & (bits < (1 << info.nmant))  # exponent field zero, x > 0
    # One log: of x itself, or of the mantissa (an integer < 2^nmant, exact as a float).
    arg = jnp.where(subnormal, bits.astype(x.dtype), x)
    offset = (int(info.minexp) - int(info.nmant)) * math.log(2.0)
    return jnp.log(arg) + jnp.where(subnormal, jnp.asarray(offset, x.dtype), 0.0)


def cholesky_floored(cov: jax.Array, floor, clip=None):
    """Lower Cholesky factor of a symmetric matrix whose eigenvalues are ≥ `floor` in exact
    arithmetic (an M step's S/n + reg_covar·I), positive definite by construction.

    cov: (..., D, D), floor: () or (...,) ≥ 0, clip (default `floor`): the eigenvalue floor of
    a repaired matrix -> (L (..., D, D), the matrices L stands for (..., D, D): `cov`
    symmetrised, or LLᵀ where repaired, repaired (...,) bool).
    A matrix whose condition number is beyond 1/eps (float32: 1.7e7, e.g. the scatter of a
    rank-deficient cluster plus reg_covar = 1e-6) is not positive definite to round-off: its
    Cholesky fails, or returns pivots far below `floor`. Such a matrix (a pivot² below floor/2,
    or a non-finite factor) is refactored from its eigendecomposition with the eigenvalues
    clipped at `floor`: L is the triangular factor of the QR of diag(√λ)Vᵀ, so that LLᵀ =
    V max(λ, floor) Vᵀ without forming, and re-rounding, that product. The eigendecomposition
    runs only when some matrix needs it (`lax.cond`; under `vmap` both branches run).
    """
    cov = symmetrize(cov)
    floor = jnp.asarray(floor, cov.dtype)[..., None]
    clip = floor if clip is None else jnp.asarray(clip, cov.dtype)[..., None]
    l = jnp.linalg.cholesky(cov)
    pivots = jnp.diagonal(l, axis1=-2, axis2=-1)
    bad = ~jnp.all(jnp.isfinite(l), axis=(-2, -1)) | jnp.any(
        pivots * pivots < 0.5 * floor, axis=-1
    )

    def repair(l):
        w, v = jnp.linalg.eigh(cov)
        root = v * jnp.sqrt(jnp.maximum(w, clip))[..., None, :]  # root rootᵀ = V max(λ,c) Vᵀ
        r = jnp.linalg.qr(jnp.swapaxes(root, -1, -2), mode="r")  # rootᵀ = QR: root rootᵀ = RᵀR
        lf = jnp.swapaxes(r, -1, -2)
        sign = jnp.where(jnp.diagonal(lf, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(lf.dtype)
        lf = lf * sign[..., None, :]
        product = lf @ jnp.swapaxes(lf, -1, -2)
        return (jnp.where(bad[..., None, None], lf, l),
                jnp.where(bad[..., None, None], product, cov))

    l, cov = jax.lax.cond(jnp.any(bad), repair, lambda l: (l, cov), l)
    return l, cov, bad


def resolution_floor(cov: jax.Array) -> jax.Array:
    """The smallest eigenvalue a symmetric cov: (..., D, D) resolves in its dtype,
    D · eps · max_i cov_ii (...,): eigenvalues below it are round-off."""
    d = cov.shape[-1]
    diag = jnp.diagonal(cov, axis1=-2, axis2=-1)
    return d * jnp.finfo(cov.dtype).eps * jnp.max(jnp.abs(diag), axis=-1)
