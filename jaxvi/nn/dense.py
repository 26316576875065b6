"""The dense layers' matmul, with a weight gradient that XLA:CPU runs at its plain-GEMM speed.

For y = x @ W the weight gradient is xᵀ @ dy: a matmul contracting the leading (batch) axis
of both operands. XLA:CPU (jaxlib 0.9.2) runs that transposed form 1.3-1.5× slower than a
plain row-major one at the VAE's shapes: 256×512 by 256×512 took 480-730 µs, against
365-395 µs for writing xᵀ out first and multiplying (copy included). `dot_general` is
`nnx.Linear`'s matmul with that gradient: on CPU it writes xᵀ out (behind an optimisation
barrier, so that XLA does not fold the transpose back into the dot); elsewhere the gradient
is XLA's own. Values and gradients are those of `x @ W`.
"""

from __future__ import annotations

import jax
from jax import lax


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x: (..., I) @ w: (I, O) -> (..., O)."""
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def _weight_grad_transposed_copy(x, dy):
    return lax.optimization_barrier(x.T) @ dy


def _weight_grad_plain(x, dy):
    return x.T @ dy


def _matmul_bwd(residuals, dy):
    x, w = residuals
    dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dw = lax.platform_dependent(
        x2, dy2, cpu=_weight_grad_transposed_copy, default=_weight_grad_plain
    )
    return dx, dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
    """`lax.dot_general` for `nnx.Linear(..., dot_general=dot_general)`: its usual call,
    lhs (..., I) against a kernel (I, O), goes through `matmul`; anything else is passed on."""
    plain = (((lhs.ndim - 1,), (0,)), ((), ()))
    if (rhs.ndim == 2 and tuple(map(tuple, dimension_numbers[0])) == plain[0]
            and not dimension_numbers[1][0] and precision is None
            and preferred_element_type is None and out_sharding is None):
        return matmul(lhs, rhs)
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type,
                           out_sharding=out_sharding)
