"""Fitting a family to a target by either direction of the KL, on the package's training step.

`run` is the pure loop: `steps` updates of `jaxvi.training.step.make_step` in one `lax.scan`.
`fit(target, family, direction, *, key, steps, optimizer)` checks its arguments, runs that loop
under `jit` and raises `NonFiniteFitError` if it diverged (NaN/Inf parameters: checked once,
on device, after the loop); `fit_many` vmaps the same loop over initialisations and learning
rates (one compile) and returns diverged runs as they are, for the caller to filter.
`nearest_mode` reads off which mode of a mixture a fit ended on.

Validation: `fit`, `fit_many` and `nearest_mode` check shapes and configuration statically (free
under jit) and values (finite) on concrete arrays, raising `ValueError` naming the argument;
`run` checks only the configuration and the parameter shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvi import _linalg
from jaxvi import _validate as v
from jaxvi.training.step import TrainState, all_finite, init_state, make_step
from jaxvi.vi.families import FAMILY_TYPES, Family
from jaxvi.vi.losses import (
    ESTIMATORS,
    check_compatible,
    forward_kl_loss,
    resolve_family,
    reverse_kl_loss,
    target_log_prob,
)

Array = jax.Array

REVERSE = "reverse"
FORWARD = "forward"
_DIRECTIONS = {
    "reverse": REVERSE, "exclusive": REVERSE, "forward": FORWARD, "inclusive": FORWARD,
}


class NonFiniteFitError(FloatingPointError):
    """`fit` diverged: its parameters became NaN or Inf.

    Args:
      message: the error message.
      losses: the run's per-step losses.

    Attributes:
      losses: (steps,) the per-step losses of the run, as a NumPy array, to see where it went
        wrong.
    """

    def __init__(self, message: str, losses=None):
        super().__init__(message)
        self.losses = losses


class VIFitResult(NamedTuple):
    """Result of `run`, `fit` and `fit_many`, with the field names of every fit result.

    As `jaxvi.em.EMFitResult`: the fitted parameters first, then `history`; `objective`,
    `n_iter` and `converged` are read from them (a fixed number of steps, no convergence test).

    Attributes:
      params: the fitted family parameters (leading axes (...) as `history`'s).
      history: (..., steps) the Monte Carlo loss estimate at each step, before its update
        (also read as `losses`, the field's former name).
    """

    params: Any
    history: Array

    @property
    def losses(self) -> Array:
        """`history`, by what it holds (the loss at each step; the field's former name)."""
        return self.history

    @property
    def objective(self) -> Array:
        """(...) the last step's loss estimate (a minimised loss; lower is better)."""
        return self.history[..., -1]

    @property
    def n_iter(self) -> int:
        """The optimizer steps run, `steps`."""
        return self.history.shape[-1]

    @property
    def converged(self) -> bool:
        """Always False (a fixed number of steps, no convergence test), as in
        `fit_variational_minibatch`."""
        return False


def _resolve_direction(direction) -> str:
    if direction not in _DIRECTIONS:
        raise ValueError(f"`direction` must be one of {sorted(_DIRECTIONS)}; got {direction!r}.")
    return _DIRECTIONS[direction]


def _loss_fn(target, family, direction, num_samples, estimator, proposal):
    """-> loss(params, key) -> () of the direction."""
    if direction == REVERSE:
        return lambda p, k: reverse_kl_loss(p, target, family=family, key=k,
                                            num_samples=num_samples)
    return lambda p, k: forward_kl_loss(p, target, family=family, key=k, num_samples=num_samples,
                                        estimator=estimator, proposal=proposal)


def run(params, target, family: Family, direction: str, *, key: Array, steps: int,
        optimizer: optax.GradientTransformation, num_samples: int = 64,
        estimator: str = "auto", proposal=None) -> VIFitResult:
    """The pure loop behind `fit`: `steps` optax updates in `lax.scan`, one key per step.

    Traceable (jit/vmap over `params`, `key`); `family`, `direction`, `steps`, `num_samples`
    are static. Configuration and parameter shapes are checked (statically); no value checks
    and no divergence guard (`fit` has one): a diverged run returns non-finite parameters.

    Args:
      params: the starting family parameters.
      target: the target, as for `fit`.
      family: a family instance (not a name).
      direction: "reverse"/"exclusive" or "forward"/"inclusive".
      key: PRNG key, split into one key per step.
      steps: number of optimizer updates.
      optimizer: an optax GradientTransformation.
      num_samples: Monte Carlo samples per step.
      estimator: of the forward direction (see `forward_kl_loss`).
      proposal: of the forward direction (see `forward_kl_loss`).

    Returns:
      `VIFitResult(params, history: (steps,))`.

    Raises:
      ValueError: a family that is not an instance, parameters of other shapes, an unknown
        direction or steps < 1.
    """
    if not isinstance(family, FAMILY_TYPES):
        raise ValueError("`family` must be a FullCovGaussian, DiagGaussian or "
                         f"GaussianMixtureFamily instance; got {family!r}.")
    check_compatible(family, target, params)
    steps = v.check_int("steps", steps, 1)
    direction = _resolve_direction(direction)
    loss = _loss_fn(target, family, direction, num_samples, estimator, proposal)
    step = make_step(lambda p, batch, k: (loss(p, k), {}), optimizer)

    def body(state: TrainState, k):
        state, metrics = step(state, None, k)
        return state, metrics["loss"]

    final, losses = jax.lax.scan(body, init_state(params, optimizer),
                                 jax.random.split(key, steps))
    return VIFitResult(final.params, losses)


def _check_fit_args(target, family, direction, steps, optimizer, num_samples, init_params,
                    estimator):
    """The checks `fit` and `fit_many` share. -> (family, direction, steps, num_samples)."""
    target_log_prob(target)
    family = resolve_family(family, target)
    direction = _resolve_direction(direction)
    steps = v.check_int("steps", steps, 1)
    num_samples = v.check_int("num_samples", num_samples, 1)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"`optimizer` must be an optax GradientTransformation; got {optimizer!r}.")
    check_compatible(family, target, init_params, name="init_params")
    if init_params is not None:
        for name, leaf in zip(init_params._fields, init_params, strict=True):
            v.check_finite(f"init_params.{name}", leaf)
    v.check_choice("estimator", estimator, ESTIMATORS)
    return family, direction, steps, num_samples


def fit(target, family, direction: str, *, key: Array, steps: int,
        optimizer: optax.GradientTransformation, num_samples: int = 64, init_params=None,
        estimator: str = "auto", proposal=None) -> VIFitResult:
    """Minimise KL(q ‖ p) ("reverse"/"exclusive") or KL(p ‖ q) ("forward"/"inclusive").

    Args:
      target: a distribution with `log_prob` over points (D,) (and `sample` for the forward
        direction's default estimator), e.g. a `jaxvi.mixture.Mixture`, or an unnormalised
        log-density callable (D,) -> ().
      family: a family instance, or "full" | "diag" (dimension from `target.event_shape`).
      direction: "reverse"/"exclusive" or "forward"/"inclusive".
      key: PRNG key (split into the initialisation's and the loop's).
      steps: number of optimizer updates.
      optimizer: an optax GradientTransformation.
      num_samples: Monte Carlo samples per step.
      init_params: starting parameters; default `family.init(key=...)` (zeros mean, unit scale
        for Gaussians; N(0, 1) locations for a mixture).
      estimator: of the forward direction (see `forward_kl_loss`).
      proposal: of the forward direction (see `forward_kl_loss`).

    Returns:
      `VIFitResult(params, history: (steps,))`, the losses in `history`.

    Raises:
      NonFiniteFitError: the run diverged (a learning rate too large for the target, or a
        start far from it): the final parameters are checked on device after the loop (one
        scalar comes back, no per-step host check), and the message names the first step
        whose loss was not finite. The error's `losses` attribute holds the run's losses.
      ValueError: a bad target, family, direction, steps, num_samples, optimizer, estimator
        or init_params (wrong shapes or not finite).
    """
    family, direction, steps, num_samples = _check_fit_args(
        target, family, direction, steps, optimizer, num_samples, init_params, estimator)
    k_init, k_run = jax.random.split(key)
    if init_params is None:
        init_params = family.init(key=k_init)

    @jax.jit
    def go(params, k):
        res = run(params, target, family, direction, key=k, steps=steps, optimizer=optimizer,
                  num_samples=num_samples, estimator=estimator, proposal=proposal)
        bad = ~jnp.isfinite(res.history)
        first_bad = jnp.where(jnp.any(bad), jnp.argmax(bad), -1)
        return res, all_finite(res.params), first_bad

    result, finite, first_bad = go(init_params, k_run)
    if not bool(finite):
        _raise_diverged(result.history, int(first_bad), steps)
    return result


def _raise_diverged(losses, first_bad: int, steps: int):
    losses = np.asarray(losses)
    if first_bad == 0:
        raise NonFiniteFitError(
            f"`fit` diverged: the loss at the initial parameters is already {float(losses[0])}, "
            "so the parameters became NaN or Inf at the first update: the target is too far "
            f"from the start for {losses.dtype.name} (or its log density is not finite there). "
            "Pass `init_params` nearer the target, rescale the problem, or use float64 "
            "(inside `jax.enable_x64(True)`).", losses)
    if first_bad > 0:
        where = (f"the loss first became {float(losses[first_bad])} at step {first_bad + 1} "
                 f"of {steps}")
    else:
        where = f"the loss stayed finite, but the last update (step {steps}) was not"
    raise NonFiniteFitError(
        f"`fit` diverged: the parameters are NaN or Inf after {steps} steps ({where}). Try a "
        "smaller learning rate for the optimizer, or `init_params` nearer the target.",
        losses)


def _default_optimizer(lr, steps: int) -> optax.GradientTransformation:
    """Adam with b2 = 0.9 and a cosine decay from lr to 0 over `steps`. b2 = 0.9: the
    second-moment estimate forgets the huge first gradients of a forward fit started far from
    the target, which would freeze Adam's step size."""
    return optax.adam(optax.cosine_decay_schedule(lr, steps), b2=0.9)


def _batch_size(init_params) -> int:
    """The leading batch size B shared by every leaf of `init_params`."""
    leaves = jax.tree_util.tree_leaves(init_params)
    if not leaves or any(np.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("`init_params` must be family parameters with a leading batch axis.")
    batch = int(np.shape(leaves[0])[0])
    if any(np.shape(leaf)[0] != batch for leaf in leaves):
        raise ValueError("`init_params` leaves must share the leading batch size; got shapes "
                         f"{[np.shape(leaf) for leaf in leaves]}.")
    return batch


def fit_many(target, family, direction: str, init_params, *, key: Array, steps: int,
             learning_rates, num_samples: int = 64,
             make_optimizer: Callable[[Array, int], optax.GradientTransformation] | None = None,
             estimator: str = "auto", proposal=None) -> VIFitResult:
    """`fit` for every (learning rate, initialisation) pair, vmapped: one compile.

    Args:
      target: as for `fit`.
      family: as for `fit`.
      direction: as for `fit`.
      init_params: the family's parameters with a leading batch axis (B, ...).
      key: PRNG key, split into one key per fit.
      steps: optimizer updates per fit.
      learning_rates: (L,) positive.
      num_samples: as for `fit`.
      make_optimizer: make_optimizer(lr, steps) builds the optimizer from a traced learning
        rate; default Adam (b2 = 0.9) with a cosine decay from lr to 0 over `steps`.
      estimator: as for `fit`.
      proposal: as for `fit`.

    Returns:
      `VIFitResult` with params (L, B, ...) and history (L, B, steps). Unlike `fit`, a diverged
      run does not raise (a sweep is expected to contain learning rates that are too large):
      its parameters come back NaN/Inf; filter with `jnp.isfinite`.

    Raises:
      ValueError: learning_rates not (L,) and positive, init_params without a shared leading
        batch axis, or any argument `fit` refuses.
    """
    lrs = jnp.asarray(learning_rates, dtype=float)
    v.check_ndim("learning_rates", lrs, 1, "(L,)")
    v.check_positive("learning_rates", lrs)
    batch = _batch_size(init_params)
    first = jax.tree_util.tree_map(lambda a: a[0], init_params)
    if make_optimizer is None:
        make_optimizer = _default_optimizer
    family, direction, steps, num_samples = _check_fit_args(
        target, family, direction, steps, make_optimizer(1.0, 1), num_samples, first, estimator)
    keys = jax.random.split(key, (lrs.shape[0], batch))

    def one(lr, params, k):
        return run(params, target, family, direction, key=k, steps=steps,
                   optimizer=make_optimizer(lr, steps), num_samples=num_samples,
                   estimator=estimator, proposal=proposal)

    over_inits = jax.vmap(one, in_axes=(None, 0, 0))
    over_lrs = jax.vmap(over_inits, in_axes=(0, None, 0))
    return jax.jit(over_lrs)(lrs, init_params, keys)


# --------------------------------------------------------------------------------------------
# Reading off where a fit ended.
# --------------------------------------------------------------------------------------------


def _check_modes(mode_locs, mode_covs) -> None:
    """mode_locs (K, D), mode_covs (K, D, D), K ≥ 1."""
    v.check_ndim("mode_locs", mode_locs, 2, "(K, D)")
    v.check_ndim("mode_covs", mode_covs, 3, "(K, D, D)")
    k, d = mode_locs.shape
    if k < 1:
        raise ValueError(f"`mode_locs` must have at least one mode (K ≥ 1); got shape "
                         f"{mode_locs.shape}.")
    if mode_covs.shape != (k, d, d):
        raise ValueError(f"`mode_covs` must have shape (K, D, D) = {(k, d, d)} to match "
                         f"`mode_locs`; got {mode_covs.shape}.")


def nearest_mode(mean: Array, mode_locs: Array, mode_covs: Array, radius: float = 1.0
                 ) -> tuple[Array, Array]:
    """Index of the mode whose Mahalanobis distance to `mean` is smallest, and that distance.

    The index is −1 when no mode is within `radius` (the fit sits between modes).

    Args:
      mean: (..., D) the fits' means.
      mode_locs: (K, D) the modes' locations.
      mode_covs: (K, D, D) the modes' covariances, positive definite.
      radius: the largest Mahalanobis distance that counts as on a mode, ≥ 0.

    Returns:
      (index, distance): (...) int and (...) float.

    Raises:
      ValueError: shapes that do not match, K = 0, a negative radius, non-finite means or
        locations, or covariances that are not positive definite.
    """
    mean, mode_locs, mode_covs = (jnp.asarray(a) for a in (mean, mode_locs, mode_covs))
    v.check_min_ndim("mean", mean, 1, "(..., D)")
    _check_modes(mode_locs, mode_covs)
    v.check_same_size("mean", mean.shape[-1], "mode_locs", mode_locs.shape[-1],
                      "event size D (last axis)")
    if not (isinstance(radius, (int, float, np.integer, np.floating)) and radius >= 0):
        raise ValueError(f"`radius` must be a non-negative number; got {radius!r}.")
    v.check_finite("mean", mean)
    v.check_finite("mode_locs", mode_locs)
    v.check_positive_definite("mode_covs", mode_covs)
    l = _linalg.cholesky(mode_covs)
    flat = mean.reshape((-1, mean.shape[-1]))
    d2 = _linalg.pairwise_sq_mahalanobis_full(flat, mode_locs, _linalg.precision_from_tril(l))
    dist = jnp.sqrt(jnp.min(d2, axis=-1))
    idx = jnp.where(dist <= radius, jnp.argmin(d2, axis=-1), -1)
    return idx.reshape(mean.shape[:-1]), dist.reshape(mean.shape[:-1])
