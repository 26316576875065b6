"""The dense layers' matmul, with a weight gradient that XLA:CPU runs at its plain-GEMM speed.

For y = x @ W the weight gradient is xᵀ @ dy: a matmul contracting the leading (batch) axis
of both operands. XLA:CPU runs that transposed form slower than writing xᵀ out first and
multiplying, copy included, at every shape of the VAE (see benchmarks/README.md).
`dot_general` is `nnx.Linear`'s matmul with that gradient: on CPU it writes xᵀ out (behind an
optimisation barrier, so that XLA does not fold the transpose back into the dot); elsewhere
the gradient is XLA's own. Values and derivatives (both modes) are those of `x @ W`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


def _times_tangent_transposed(x, dw):
    """x @ dw, written so that its transpose in dw (the weight gradient) is xᵀ@dy with xᵀ
    computed once in the forward pass and kept (an optimisation barrier keeps XLA from folding
    the transpose back into the dot)."""
    xt = lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)  # (I, N)
    out = lax.dot_general(xt, dw, (((0,), (0,)), ((), ())))
    return out.reshape(*x.shape[:-1], dw.shape[-1])


def _times_tangent(x, dw):
    return x @ dw


@jax.custom_jvp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w, with the weight gradient described in the module's docstring.

    Args:
      x: (..., I) inputs.
      w: (I, O) weights.

    Returns:
      (..., O) x @ w.
    """
    return x @ w


def _matmul_jvp(primals, tangents):
    # A JVP rule, not a VJP one: JAX transposes it into the gradient itself, so forward mode
    # works and vmap over examples with shared weights still gives one weight-gradient matmul
    # over the whole batch (a custom VJP's backward would be vmapped per example). Symbolic
    # zeros skip the term of an input that is not differentiated (data, frozen weights).
    x, w = primals
    dx, dw = tangents
    y = x @ w
    tangent = None if isinstance(dx, SymbolicZero) else dx @ w
    if not isinstance(dw, SymbolicZero):
        x_dw = lax.platform_dependent(x, dw, cpu=_times_tangent_transposed,
                                      default=_times_tangent)
        tangent = x_dw if tangent is None else tangent + x_dw
    return y, jnp.zeros_like(y) if tangent is None else tangent


matmul.defjvp(_matmul_jvp, symbolic_zeros=True)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
    """`lax.dot_general` for `nnx.Linear(..., dot_general=dot_general)`: its usual call,
    lhs (..., I) against a kernel (I, O), goes through `matmul`; anything else is passed on.

    Args:
      lhs: (..., I) the inputs.
      rhs: (I, O) the kernel (or any operand `lax.dot_general` takes).
      dimension_numbers: as `lax.dot_general`'s.
      precision: as `lax.dot_general`'s.
      preferred_element_type: as `lax.dot_general`'s.
      out_sharding: as `lax.dot_general`'s.

    Returns:
      (..., O) for the usual call; else what `lax.dot_general` returns.
    """
    plain = (((lhs.ndim - 1,), (0,)), ((), ()))
    if (rhs.ndim == 2 and tuple(map(tuple, dimension_numbers[0])) == plain[0]
            and not dimension_numbers[1][0] and precision is None
            and preferred_element_type is None and out_sharding is None):
        return matmul(lhs, rhs)
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type,
                           out_sharding=out_sharding)
