"""The parameters of the families of q (`jaxvi.vi.families`): the NamedTuples `GaussianParams`
and `MixtureParams` of unconstrained arrays, the checks of a family's `init` arguments, and the
map from an unconstrained square matrix to a lower-triangular factor with a positive diagonal.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvi import _validate as v

Array = jax.Array


class GaussianParams(NamedTuple):
    """Unconstrained parameters of `FullCovGaussian` and `DiagGaussian`.

    Attributes:
      loc: (D,) mean.
      raw_scale: (D, D) unconstrained lower factor (full) or (D,) (diag).
    """

    loc: Array  # (D,)
    raw_scale: Array  # (D, D) unconstrained lower factor (full) or (D,) (diag)


class MixtureParams(NamedTuple):
    """Unconstrained parameters of `GaussianMixtureFamily`.

    Attributes:
      logits: (K,) unnormalised log weights.
      loc: (K, D) component means.
      raw_scale: (K, D, D) unconstrained lower factors.
    """

    logits: Array  # (K,)
    loc: Array  # (K, D)
    raw_scale: Array  # (K, D, D) unconstrained lower factors


def _init_loc_scale(family: str, loc, scale, loc_shape: tuple[int, ...]):
    """Checked (loc, scale) of a family's `init`: loc of `loc_shape`, finite; scale positive,
    finite, not subnormal and broadcastable to `loc_shape` (a scale of 0 would give a raw
    parameter of −inf). -> (loc, scale broadcast to loc_shape)."""
    loc = jnp.zeros(loc_shape) if loc is None else jnp.asarray(loc, dtype=float)
    if tuple(loc.shape) != tuple(loc_shape):
        raise ValueError(f"`loc` must have shape {tuple(loc_shape)} for {family}; got "
                         f"{tuple(loc.shape)}.")
    v.check_finite("loc", loc)
    sd = jnp.asarray(scale, dtype=loc.dtype)
    try:
        sd = jnp.broadcast_to(sd, loc_shape)
    except ValueError:
        raise ValueError(f"`scale` must be a scalar or broadcast to {tuple(loc_shape)} for "
                         f"{family}; got shape {tuple(sd.shape)}.") from None
    v.check_positive("scale", sd)
    v.check_normal_range("scale", sd, sd.dtype)
    return loc, sd


def _tril_from_raw(raw: Array) -> Array:
    """Lower-triangular factor with softplus diagonal from an unconstrained (..., D, D)."""
    diag = jax.nn.softplus(jnp.diagonal(raw, axis1=-2, axis2=-1))
    return jnp.tril(raw, -1) + diag[..., None] * jnp.eye(raw.shape[-1], dtype=raw.dtype)
