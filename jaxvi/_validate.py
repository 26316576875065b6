"""Checks for the public boundary. Each raises `ValueError` naming the argument, what was
expected and what was given. Value checks (NaN, positivity, positive-definiteness) run only on
concrete arrays: under `jit` they are skipped, so the traced math stays check-free.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(*arrays) -> bool:
    """True when none of `arrays` is a tracer (we are not inside jit/vmap/grad)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_ndim(name: str, a, ndim: int | tuple[int, ...], shape_hint: str = "") -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if np.ndim(a) not in allowed:
        want = " or ".join(str(n) for n in allowed)
        hint = f" {shape_hint}" if shape_hint else ""
        raise ValueError(
            f"`{name}` must have {want} dimensions{hint}; got shape {np.shape(a)}."
        )


def check_min_ndim(name: str, a, ndim: int, shape_hint: str = "") -> None:
    if np.ndim(a) < ndim:
        hint = f" {shape_hint}" if shape_hint else ""
        raise ValueError(
            f"`{name}` must have at least {ndim} dimensions{hint}; got shape {np.shape(a)}."
        )


def check_same_size(name_a: str, size_a: int, name_b: str, size_b: int, what: str) -> None:
    if size_a != size_b:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same {what}; got {size_a} and {size_b}."
        )


def check_finite(name: str, a) -> None:
    if not is_concrete(a):
        return
    arr = np.asarray(a)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` must be finite; got {bad} NaN or Inf value(s).")


def check_positive(name: str, a) -> None:
    check_finite(name, a)
    if not is_concrete(a):
        return
    arr = np.asarray(a)
    if np.any(arr <= 0):
        raise ValueError(
            f"`{name}` must be strictly positive; got minimum value {float(np.min(arr))!r}."
        )


def check_real(name: str, a) -> None:
    """`a` is not complex (a fit of the real part alone would be silently wrong)."""
    if np.iscomplexobj(a):
        dtype = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
        raise ValueError(f"`{name}` must be real; got complex values (dtype {dtype}). Pass "
                         "the part you mean (x.real, abs(x)) or stack both as features.")


def as_real_array(name: str, value, shape_hint: str = ""):
    """`value` as an array of real numbers: a JAX array or tracer as it is, anything else
    through NumPy; a ValueError naming `name` for what is not numbers (strings, objects,
    complex values)."""
    if isinstance(value, (jax.Array, jax.core.Tracer)):
        check_real(name, value)
        return value
    hint = f" {shape_hint}" if shape_hint else ""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"`{name}` must be an array of real numbers{hint}; got "
                         f"{_short_repr(value)}.")
    check_real(name, arr)
    return arr


def _short_repr(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_nonnegative(name: str, a) -> None:
    check_finite(name, a)
    if not is_concrete(a):
        return
    arr = np.asarray(a)
    if np.any(arr < 0):
        raise ValueError(f"`{name}` must be >= 0; got minimum value {float(np.min(arr))!r}.")


def check_positive_definite(name: str, cov) -> None:
    """Symmetric positive-definite over the last two axes."""
    check_finite(name, cov)
    if not is_concrete(cov):
        return
    arr = np.asarray(cov, dtype=np.float64)
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"`{name}` must be square in its last two axes; got shape {arr.shape}.")
    sym_err = np.max(np.abs(arr - np.swapaxes(arr, -1, -2)), initial=0.0)
    scale = max(np.max(np.abs(arr), initial=0.0), 1.0)
    if sym_err > 1e-5 * scale:
        raise ValueError(
            f"`{name}` must be symmetric; got max |A - Aᵀ| = {sym_err:.3g}."
        )
    eig_min = float(np.min(np.linalg.eigvalsh(arr))) if arr.size else 1.0
    if eig_min <= 0:
        raise ValueError(
            f"`{name}` must be positive definite; got smallest eigenvalue {eig_min:.3g}."
        )


def check_tril_scale(name: str, scale_tril) -> None:
    """A Cholesky-style factor: finite, with a strictly positive diagonal."""
    check_finite(name, scale_tril)
    if not is_concrete(scale_tril):
        return
    diag = np.diagonal(np.asarray(scale_tril), axis1=-2, axis2=-1)
    if np.any(diag <= 0):
        raise ValueError(
            f"`{name}` must have a strictly positive diagonal; got minimum {float(np.min(diag))!r}."
        )


def check_broadcastable(name_a: str, shape_a, name_b: str, shape_b) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(tuple(shape_a), tuple(shape_b))
    except ValueError:
        raise ValueError(
            f"The batch shapes of `{name_a}` {tuple(shape_a)} and `{name_b}` {tuple(shape_b)} "
            "do not broadcast."
        ) from None


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}; got {value!r}.")


def check_normal_range(name: str, a, dtype) -> None:
    """Positive entries of `a` at least the smallest normal number of `dtype`.

    Subnormal values pass a `> 0` test but XLA's kernels flush them to zero, so a scale of
    1e-40 in float32 divides by zero. Call after the positivity check; concrete arrays only.
    """
    if not is_concrete(a):
        return
    arr = np.asarray(a)
    tiny = float(np.finfo(dtype).tiny)
    small = (arr > 0) & (arr < tiny)
    if np.any(small):
        raise ValueError(
            f"`{name}` must be at least the smallest normal {np.dtype(dtype).name} number "
            f"({tiny:.3g}): smaller values are flushed to zero in computation; got minimum "
            f"{float(np.min(arr[small]))!r}. Use float64 arrays (inside "
            "`jax.enable_x64(True)`) or rescale the problem."
        )


def check_cholesky_resolvable(name: str, cov, dtype) -> None:
    """A positive-definite `cov` (..., D, D) that a Cholesky factorisation in `dtype` resolves.

    Positive definiteness is checked in float64 (`check_positive_definite`, call it first); a
    matrix can pass it and still be numerically singular in float32 (a Hilbert(8) matrix, a
    sample covariance of nearly collinear data), where the factorisation fails (NaN) or its
    round-off swamps the answer. Refused: a condition number, after scaling to unit diagonal
    (which a Cholesky is indifferent to), above 1 / (max(D, 16)·eps) of `dtype` (NumPy's rank
    tolerance, floored: about 5e5 in float32, 3e14 in float64), or pivots below the smallest
    normal number of `dtype`. Concrete arrays only.
    """
    if not is_concrete(cov):
        return
    arr = np.asarray(cov, dtype=np.float64)
    if arr.size == 0:
        return
    d = arr.shape[-1]
    info = np.finfo(dtype)
    dname = np.dtype(dtype).name
    var = np.diagonal(arr, axis1=-2, axis2=-1)
    inv_sd = 1.0 / np.sqrt(var)
    eig = np.linalg.eigvalsh(arr * inv_sd[..., :, None] * inv_sd[..., None, :])
    lam_min, lam_max = eig[..., 0], eig[..., -1]
    with np.errstate(divide="ignore"):
        cond = np.where(lam_min > 0, lam_max / np.maximum(lam_min, 1e-300), np.inf)
    limit = 1.0 / (max(d, 16) * float(info.eps))
    where = np.unravel_index(int(np.argmax(cond)), cond.shape) if cond.ndim else ()
    at = f" (at batch index {tuple(int(i) for i in where)})" if where else ""
    if float(np.max(cond)) > limit:
        raise ValueError(
            f"`{name}` is numerically singular in {dname}: its condition number (scaled to "
            f"unit diagonal) is {float(np.max(cond)):.3g}{at}, above the {limit:.3g} that a "
            f"{dname} Cholesky factorisation resolves. Use float64 arrays (inside "
            "`jax.enable_x64(True)`), or regularise it (add a small multiple of the identity)."
        )
    pivot = var * lam_min[..., None]  # a lower bound on each Cholesky pivot
    if float(np.min(pivot)) < float(info.tiny):
        raise ValueError(
            f"`{name}` is too small for {dname}: its Cholesky pivots would fall below the "
            f"smallest normal {dname} number ({float(info.tiny):.3g}) and be flushed to zero; "
            f"got smallest variance {float(np.min(var)):.3g}. Use float64 arrays (inside "
            "`jax.enable_x64(True)`) or rescale the problem."
        )


def float_dtype(*arrays):
    """The common floating dtype of `arrays` (float32 unless one of them is wider)."""
    return jnp.result_type(*[jnp.asarray(a).dtype for a in arrays], jnp.float32)


def as_float(dtype, *arrays) -> tuple:
    """`arrays` as JAX arrays of `dtype`."""
    return tuple(jnp.asarray(a, dtype=dtype) for a in arrays)


def check_int(name: str, value, low: int) -> int:
    """An integer ≥ low (a Python or NumPy integer, not a bool or a float) -> int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}; got {value!r}.")
    return int(value)


def check_number(name: str, value, low: float = 0.0) -> float:
    """A finite real scalar ≥ low (not a bool) -> float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or v < low or np.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a finite number >= {low:g}; got {value!r}.")
    return v


def check_rows_observed(name: str, observed) -> None:
    """observed: (N, D) bool (False = missing): every row has at least one observed entry."""
    empty = np.flatnonzero(~np.any(np.asarray(observed), axis=1))
    if empty.size:
        more = f" ({empty.size} such rows)" if empty.size > 1 else ""
        raise ValueError(
            f"`{name}` row {int(empty[0])} has every entry missing (NaN){more}: a row needs "
            "at least one observed value. Drop such rows first."
        )


def check_columns_observed(name: str, observed) -> None:
    """observed: (N, D) bool (False = missing): every column has an observed entry (a feature
    never observed has no mean or variance to estimate)."""
    empty = np.flatnonzero(~np.any(np.asarray(observed), axis=0))
    if empty.size:
        raise ValueError(
            f"`{name}` column(s) {[int(j) for j in empty[:5]]} have every entry missing (NaN): "
            "a feature needs at least one observed value. Drop such columns first.")


def check_unit_interval(name: str, a, why: str = "") -> None:
    """Every value of `a` in [0, 1] (the data of a Bernoulli likelihood); `why` names what
    needs it. Concrete arrays only."""
    if not is_concrete(a):
        return
    arr = np.asarray(a)
    if arr.size and (float(np.min(arr)) < 0 or float(np.max(arr)) > 1):
        need = f" for {why}" if why else ""
        raise ValueError(
            f"`{name}` must lie in [0, 1]{need}; got values in [{float(np.min(arr)):.4g}, "
            f"{float(np.max(arr)):.4g}]. Scale it to [0, 1] (uint8 images are divided by 255 "
            "on load) or use likelihood='gaussian'."
        )


def check_gaussian_scale(name: str, x, min_scale: float, dtype=np.float32,
                         headroom: float = 1e-3) -> None:
    """x: (N, D) data of a Gaussian likelihood whose standard deviations are floored at
    `min_scale` (the VAE's decoder): its largest point's Σ_d x_d² / (2 min_scale²), the
    log-likelihood's quadratic term about a zero mean, stays within `headroom` times the
    largest `dtype` value (room for the sums over a batch and the gradients). Data of a larger
    scale overflow in training (a NaN/Inf loss in the first epoch); a `ValueError` names `name`,
    the data's largest magnitude and the scale that fits. Concrete arrays only."""
    if not is_concrete(x) or np.size(x) == 0:
        return
    arr = np.asarray(x)
    biggest = float(np.max(np.abs(arr)))
    limit = float(np.finfo(dtype).max) * headroom
    d = arr.shape[-1]
    if biggest == 0 or d * (biggest / min_scale) ** 2 / 2 <= limit:  # the bound suffices
        return
    rows = np.sum(np.square(arr / np.asarray(biggest, arr.dtype)), axis=-1, dtype=np.float64)
    quad = float(np.max(rows)) * (biggest / min_scale) ** 2 / 2
    if quad > limit:
        fits = min_scale * math.sqrt(2 * limit / d)
        raise ValueError(
            f"{name} has values up to {biggest:.3g} in magnitude: with them the Gaussian "
            f"likelihood's Σ (x − mean)²/(2σ²), σ ≥ min_scale = {min_scale:g}, reaches "
            f"{quad:.3g} at the largest point, beyond what {np.dtype(dtype).name} training "
            f"holds ({limit:.3g}; for {d} features, values up to about {fits:.3g}). Rescale "
            f"the data (e.g. divide it by {biggest:.3g}) or standardise its features."
        )
