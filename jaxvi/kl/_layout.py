"""Shared machinery of the closed forms: argument checks of a (p, q) pair of Gaussians or of
Gaussian mixtures (`check_mixture_pair`, used by every mixture divergence), the last NaN guard
of an eager call, and the all-pairs layout.

The all-pairs pattern — p with batch shape (..., N, 1) against q with (..., 1, M) — is detected
from the static shapes (`all_pairs_layout`) and `pairs_call` runs a per-(N, M) kernel over the
leading axes, so each distribution is factored once and the per-pair work becomes matmuls.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi.mixture import Mixture


def check_pair_shapes(names, arrays, event_ndims) -> tuple[int, ...]:
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


def checked_gaussian_pair(names, arrays, event_ndims, check_scale):
    """Cast (loc_p, scale_p, loc_q, scale_q) to a common float dtype and validate them at the
    public boundary: shapes, finite locations, and `check_scale(name, a)` on both scales."""
    args = _validate.as_float(_validate.float_dtype(*arrays), *arrays)
    check_pair_shapes(names, args, event_ndims)
    for name, a, check in zip(names, args, (_validate.check_finite, check_scale) * 2,
                              strict=True):
        check(name, a)
    return args


def has_subnormal(a) -> bool:
    """Concrete `a` with a positive entry below its dtype's smallest normal number."""
    if not _validate.is_concrete(a):
        return False
    arr = np.asarray(a)
    return bool(np.any((arr > 0) & (arr < np.finfo(arr.dtype).tiny)))


def refuse_nan(fn: str, out, dtype) -> jax.Array:
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


def all_pairs_layout(batch_p, batch_q):
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


def pairs_layout(p_args, q_args, event):
    """`all_pairs_layout` of the batch shapes of p's two parameters p_args = (loc, scale) and
    q's two q_args, of event ranks `event` = (1, 1) (diagonal) or (1, 2) (matrix scales)."""
    return all_pairs_layout(_side_batch(*p_args, *event), _side_batch(*q_args, *event))


def pairs_call(core, layout, p_args, q_args, event):
    """Run the all-pairs kernel `core(*p_args, *q_args)` ((N, ...) and (M, ...) -> (N, M)) on
    the `layout` = (lead, N, M) of `pairs_layout`: reshape p's params to (L, N, *event) and q's
    to (L, M, *event), vmap `core` over L and reshape the (L, N, M) result to (*lead, N, M)."""
    lead, n, m = layout
    size = math.prod(lead)
    p_flat = [jnp.broadcast_to(a, (*lead, n, 1, *a.shape[a.ndim - k:])).reshape(
        size, n, *a.shape[a.ndim - k:]) for a, k in zip(p_args, event, strict=True)]
    q_flat = [jnp.broadcast_to(a, (*lead, 1, m, *a.shape[a.ndim - k:])).reshape(
        size, m, *a.shape[a.ndim - k:]) for a, k in zip(q_args, event, strict=True)]
    out = jax.vmap(core)(*p_flat, *q_flat)
    return out.reshape(*lead, n, m)


def check_mixture(name: str, mix) -> Mixture:
    """`mix` a `Mixture` of consistent shapes, finite, with positive normal scale diagonals;
    its arrays cast to their common float dtype."""
    if not isinstance(mix, Mixture):
        raise ValueError(f"`{name}` must be a jaxvi.mixture.Mixture; got {type(mix).__name__}.")
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
    dtype = _validate.float_dtype(logits, loc, tril)
    return Mixture(*_validate.as_float(dtype, logits, loc, tril))


def check_mixture_pair(p, q) -> tuple[Mixture, Mixture]:
    """Both mixtures checked, of one event size D and broadcastable batch shapes, in one dtype."""
    p = check_mixture("p", p)
    q = check_mixture("q", q)
    _validate.check_same_size("p.loc", p.loc.shape[-1], "q.loc", q.loc.shape[-1],
                              "event size D (last axis)")
    _validate.check_broadcastable("p", p.logits.shape[:-1], "q", q.logits.shape[:-1])
    dtype = _validate.float_dtype(*p, *q)
    return Mixture(*_validate.as_float(dtype, *p)), Mixture(*_validate.as_float(dtype, *q))
