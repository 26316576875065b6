"""The argument checks of `jaxvi.vae.bounds`: shapes against the unbatched shapes in each
function's docstring (static, at trace time), values (finite, positive, normal-range, no NaN)
only when the arrays are concrete. Each raises `ValueError` naming the argument, what was
expected and what was given.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate


def _arr(a) -> jax.Array:
    """As a JAX array; Python and NumPy numbers become the default float dtype."""
    a = jnp.asarray(a)
    return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.result_type(float))


def _check_shape(name: str, a, shape: tuple[int, ...], hint: str, because: str = "") -> None:
    if tuple(a.shape) != tuple(shape):
        why = f" to match {because}" if because else ""
        raise ValueError(f"`{name}` must have shape {hint} = {tuple(shape)}{why}; "
                         f"got {tuple(a.shape)}.")


def _check_no_nan(name: str, a) -> None:
    """No NaN and no +inf (−inf, a zero probability, is allowed). Concrete arrays only."""
    if not _validate.is_concrete(a):
        return
    arr = np.asarray(a)
    bad = np.isnan(arr) | (arr == np.inf)
    if np.any(bad):
        raise ValueError(f"`{name}` must not contain NaN or +inf; got {int(np.sum(bad))} "
                         "such value(s).")


def _check_scale(name: str, a) -> None:
    """Finite, strictly positive and not subnormal (flushed to zero in computation)."""
    _validate.check_positive(name, a)
    _validate.check_normal_range(name, a, a.dtype)


def _check_prior(prior_logits, prior_mean, prior_scale):
    """prior_logits: (K,), prior_mean, prior_scale: (K, L), K ≥ 1. -> the three as arrays."""
    prior_logits, prior_mean, prior_scale = map(_arr, (prior_logits, prior_mean, prior_scale))
    _validate.check_ndim("prior_logits", prior_logits, 1, "(K,)")
    k = prior_logits.shape[0]
    if k < 1:
        raise ValueError(f"`prior_logits` must have at least one component (K ≥ 1); got shape "
                         f"{prior_logits.shape}.")
    _validate.check_ndim("prior_mean", prior_mean, 2, "(K, L)")
    _check_shape("prior_mean", prior_mean, (k, prior_mean.shape[1]), "(K, L)",
                 f"K = {k} of `prior_logits`")
    _check_shape("prior_scale", prior_scale, prior_mean.shape, "(K, L)", "`prior_mean`")
    _check_no_nan("prior_logits", prior_logits)
    _validate.check_finite("prior_mean", prior_mean)
    _check_scale("prior_scale", prior_scale)
    return prior_logits, prior_mean, prior_scale


def _check_samples(w, latent: int, name: str = "w") -> jax.Array:
    """w: (S, L) with S ≥ 1 and L = `latent`."""
    w = _arr(w)
    _validate.check_ndim(name, w, 2, "(S, L)")
    if w.shape[0] < 1:
        raise ValueError(f"`{name}` must hold at least one sample (S ≥ 1); got shape {w.shape}.")
    _check_shape(name, w, (w.shape[0], latent), "(S, L)", f"L = {latent} of the prior")
    _validate.check_finite(name, w)
    return w


def _check_q_w(w_mean, w_scale, latent: int, because: str = "`w` and the prior"):
    """w_mean, w_scale: (L,), the parameters of q(w | x)."""
    w_mean, w_scale = _arr(w_mean), _arr(w_scale)
    _check_shape("w_mean", w_mean, (latent,), "(L,)", because)
    _check_shape("w_scale", w_scale, (latent,), "(L,)", because)
    _validate.check_finite("w_mean", w_mean)
    _check_scale("w_scale", w_scale)
    return w_mean, w_scale


def _check_log_px_w(log_px_w, num_samples: int) -> jax.Array:
    log_px_w = _arr(log_px_w)
    _check_shape("log_px_w", log_px_w, (num_samples,), "(S,)", "the S samples of `w`")
    _check_no_nan("log_px_w", log_px_w)
    return log_px_w


def _check_x_and_params(x, param_name: str, param):
    """x: (D,), param: (..., D). -> both as arrays."""
    x, param = _arr(x), _arr(param)
    _validate.check_ndim("x", x, 1, "(D,) (one data point; vmap over a batch)")
    _validate.check_min_ndim(param_name, param, 1, "(..., D)")
    _validate.check_same_size("x", x.shape[0], param_name, param.shape[-1],
                              "number of features D (last axis)")
    _validate.check_finite("x", x)
    return x, param
