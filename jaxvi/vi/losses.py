"""The two directions of the KL divergence as losses of a family's parameters, and the checks
of what they are given.

* exclusive (reverse) KL, KL(q ‖ p) = E_q[log q − log p]: mode seeking; estimated with
  reparameterised samples from q, so p may be an unnormalised log density (the loss is then
  KL − log Z, with the same gradient);
* inclusive (forward) KL, KL(p ‖ q) = E_p[log p − log q]: mass covering; estimated from
  samples of p when p can be sampled, else by self-normalised importance sampling (SNIS) from
  q itself or from a proposal.

A *target* is anything with `log_prob(x)` for one point x: (D,) (a `jaxvi.mixture.Mixture`, a
distrax or TFP distribution with event shape (D,)), or a plain callable `log_prob(x) -> ()`.
Sampling targets follow the distrax/TFP convention `sample(seed=key, sample_shape=(n,)) ->
(n, D)`. `snis_forward_kl_surrogate` is the encoder objective of reweighted wake-sleep for an
amortised q(z | x).

The checks here are static (shapes and configuration), so they also run at trace time.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate as v
from jaxvi.vi.families import FAMILY_NAMES, FAMILY_TYPES, Family, make_family

Array = jax.Array

ESTIMATORS = ("auto", "target-samples", "snis")


# --------------------------------------------------------------------------------------------
# Checks of targets, families, parameters and proposals.
# --------------------------------------------------------------------------------------------


def resolve_family(family, target) -> Family:
    """A family instance as it is, or a family name with the dimension of `target`.

    Args:
      family: a family instance, or "full" | "diag" | "mixture".
      target: the target; a name needs its `event_shape` (D,).

    Returns:
      The family instance.

    Raises:
      ValueError: an unknown name, a name with a target without `event_shape`, or anything
        else that is not a family.
    """
    if isinstance(family, FAMILY_TYPES):
        return family
    if isinstance(family, str):
        v.check_choice("family", family, FAMILY_NAMES)
        dim = _target_dim(target)
        if dim is None:
            raise ValueError(
                f"`family` given by name ({family!r}) needs a target with an `event_shape` to "
                "infer the dimension; pass a family instance such as FullCovGaussian(dim) "
                "instead.")
        return make_family(family, dim)
    raise ValueError(
        "`family` must be a FullCovGaussian, DiagGaussian or GaussianMixtureFamily instance or "
        f"one of {list(FAMILY_NAMES)}; got {family!r}.")


def _target_dim(target) -> int | None:
    shape = getattr(target, "event_shape", None)
    if shape is None:
        return None
    shape = tuple(shape)
    if len(shape) != 1:
        raise ValueError(f"`target` must have event shape (D,); got event shape {shape}.")
    return int(shape[0])


def target_log_prob(target) -> Callable[[Array], Array]:
    """The target's log density of one point.

    Args:
      target: an object with `log_prob`, or a callable.

    Returns:
      log_prob(x): (D,) -> ().

    Raises:
      ValueError: a target with no `log_prob` that is not callable.
    """
    if hasattr(target, "log_prob"):
        return target.log_prob
    if callable(target):
        return target
    raise ValueError(f"`target` must have a `log_prob` method or be callable; got {target!r}.")


def batched_log_prob(target) -> Callable[[Array], Array]:
    """The target's log densities of n points, checked by shape at trace time (free under jit).

    Args:
      target: as for `target_log_prob`.

    Returns:
      log_prob(x): (n, D) -> (n,). A target returning more than one number per point makes it
      raise a `ValueError` naming the shape it returned.
    """
    log_p = jax.vmap(target_log_prob(target))

    def batched(x: Array) -> Array:
        lp = log_p(x)
        if jnp.shape(lp) != jnp.shape(x)[:1]:
            raise ValueError(
                "`target` must return one log-density (a scalar) per point; for points of "
                f"shape {tuple(jnp.shape(x)[1:])} it returned shape "
                f"{tuple(jnp.shape(lp)[1:])} per point.")
        return lp

    return batched


def check_compatible(family: Family, target, params=None, name: str = "params") -> None:
    """Check that the family's dimension is the target's, and `params` (if given) has its shapes.

    Args:
      family: a family instance.
      target: the target.
      params: the family's parameters, or None.
      name: the parameters' name in the error messages.

    Raises:
      ValueError: another dimension, or params of another type or shapes than
        `family.param_shapes()`.
    """
    dim = _target_dim(target)
    if dim is not None and dim != family.dim:
        raise ValueError(
            f"`family` has dimension {family.dim} but `target` has event shape ({dim},).")
    if params is not None:
        want = family.param_shapes()
        if not isinstance(params, type(want)):
            raise ValueError(f"`{name}` must be a {type(want).__name__} for {family!r}; got "
                             f"{type(params).__name__}.")
        for field, shape, leaf in zip(want._fields, want, params, strict=True):
            if tuple(np.shape(leaf)) != tuple(shape):
                raise ValueError(f"`{name}.{field}` must have shape {tuple(shape)} for "
                                 f"{family!r}; got {tuple(np.shape(leaf))}.")


def _check_proposal(proposal) -> None:
    if proposal is not None and not (hasattr(proposal, "sample") and hasattr(proposal, "log_prob")):
        raise ValueError("`proposal` must have `sample(seed=, sample_shape=)` and `log_prob` "
                         f"methods, or be None; got {type(proposal).__name__}.")


# --------------------------------------------------------------------------------------------
# The losses.
# --------------------------------------------------------------------------------------------


def reverse_kl_loss(params, target, *, family: Family, key: Array, num_samples: int = 64
                    ) -> Array:
    """Exclusive KL(q ‖ p) ≈ Σ_i w_i [log q(x_i) − log p(x_i)], x_i reparameterised from q.

    Unbiased for KL(q ‖ p) when `target` is normalised; for an unnormalised log density p̃ it
    estimates KL − log Z (same gradient).

    Args:
      params: the family's parameters.
      target: a target (see the module docstring) of event shape (D,).
      family: a family instance, or a name (see `resolve_family`).
      key: PRNG key of the draws from q.
      num_samples: n of `family.weighted_rsample`: draws (per component for a mixture).

    Returns:
      () the loss.

    Raises:
      ValueError: a family, target or parameters that do not fit together, or num_samples < 1.
    """
    family = resolve_family(family, target)
    check_compatible(family, target, params)
    num_samples = v.check_int("num_samples", num_samples, 1)
    log_p = batched_log_prob(target)
    x, w = family.weighted_rsample(params, key=key, n=num_samples)
    return jnp.sum(w * (family.log_prob(params, x) - log_p(x)))


def forward_kl_loss(params, target, *, family: Family, key: Array, num_samples: int = 64,
                    estimator: str = "auto", proposal=None) -> Array:
    """Inclusive KL(p ‖ q), a scalar whose gradient is −E_p[∇ log q].

    Args:
      params: the family's parameters.
      target: a target (see the module docstring) of event shape (D,).
      family: a family instance, or a name (see `resolve_family`).
      key: PRNG key of the draws.
      num_samples: n draws.
      estimator: one of

        - "target-samples": x_i ~ p (`target.sample`); (1/n) Σ [log p(x_i) − log q(x_i)],
          unbiased for a normalised target.
        - "snis": x_i from `proposal`, or from q itself with its parameters held fixed when
          `proposal` is None; self-normalised weights w̄ = softmax(log p̃ − log r) give
          Σ w̄_i [log p̃(x_i) − log Ẑ − log q(x_i)] with Ẑ = mean exp(log p̃ − log r):
          consistent (biased for finite n), and valid for an unnormalised target.
        - "auto": "target-samples" when the target has `sample` and no proposal is given,
          else "snis".
      proposal: a distribution r with `sample`/`log_prob` for "snis", or None.

    Returns:
      () the loss.

    Raises:
      ValueError: a family, target or parameters that do not fit together, num_samples < 1,
        an unknown estimator, a bad proposal, or "target-samples" for a target without
        `sample`.
    """
    family = resolve_family(family, target)
    check_compatible(family, target, params)
    num_samples = v.check_int("num_samples", num_samples, 1)
    v.check_choice("estimator", estimator, ESTIMATORS)
    _check_proposal(proposal)
    if estimator == "auto":
        estimator = "target-samples" if (proposal is None and hasattr(target, "sample")) else "snis"
    log_p = batched_log_prob(target)
    if estimator == "target-samples":
        if not hasattr(target, "sample"):
            raise ValueError("`target` must have a `sample(seed=, sample_shape=)` method for "
                             "estimator='target-samples'; use estimator='snis'.")
        x = jax.lax.stop_gradient(target.sample(seed=key, sample_shape=(num_samples,)))
        return jnp.mean(log_p(x) - family.log_prob(params, x))
    if proposal is None:
        fixed = jax.lax.stop_gradient(params)
        x = jax.lax.stop_gradient(family.sample(fixed, key=key, n=num_samples))
        log_r = family.log_prob(fixed, x)
    else:
        x = jax.lax.stop_gradient(proposal.sample(seed=key, sample_shape=(num_samples,)))
        log_r = jax.vmap(proposal.log_prob)(x)
    lp = log_p(x)
    log_w = jax.lax.stop_gradient(lp - log_r)
    w = jax.nn.softmax(log_w)
    log_z = jax.nn.logsumexp(log_w) - jnp.log(num_samples)
    return jnp.sum(w * (jax.lax.stop_gradient(lp) - log_z - family.log_prob(params, x)))


def snis_forward_kl_surrogate(log_q: Array, log_weights: Array, axis: int = -1) -> Array:
    """Encoder objective of reweighted wake-sleep for an amortised q(z | x).

    −Σ_s w̄_s log q(z_s | x), w̄ = softmax(log_weights) with no gradient, whose gradient
    estimates ∇ KL(p(z | x) ‖ q(z | x)) = −E_{p(z|x)}[∇ log q(z | x)] (consistently, as S
    grows; exactly when the z_s enumerate a discrete latent under a uniform proposal). Its
    value is the cross-entropy, KL + H[p(z | x)]. The z_s must be held fixed (`stop_gradient`
    on reparameterised draws), so only the density is differentiated.

    Args:
      log_q: (..., S) log q(z_s | x) under the parameters being trained.
      log_weights: (..., S) log p(x, z_s) − log q(z_s | x) (any proposal density in place of
        q works).
      axis: the samples' axis S.

    Returns:
      (...) the surrogate, S summed out.

    Raises:
      ValueError: log_q and log_weights of different shapes.
    """
    log_q = jnp.asarray(log_q)
    log_weights = jnp.asarray(log_weights)
    if log_q.shape != log_weights.shape:
        raise ValueError(f"`log_q` and `log_weights` must have the same shape; got "
                         f"{log_q.shape} and {log_weights.shape}.")
    w = jax.nn.softmax(jax.lax.stop_gradient(log_weights), axis=axis)
    return -jnp.sum(w * log_q, axis=axis)
