"""The training step, for every optax loop in the package: `make_step(loss_fn, optimizer)`
builds a pure `step(state, batch, key) -> (state, metrics)` from any
`loss_fn(params, batch, key) -> (loss, metrics)`, and `make_epoch` runs it over a shuffled data
set in one `lax.scan` (data-parallel over a mesh's "data" axis when given one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvi import distributed
from jaxvi.data import epoch_batches

LossFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, dict]]


class TrainState(NamedTuple):
    """What the training step carries from one step to the next (and a checkpoint holds).

    Attributes:
      params: pytree of arrays (the model's parameters as a pure dict).
      opt_state: the optax optimizer's state.
      step: () int32, optimizer steps taken.
    """

    params: Any  # pytree of arrays (the model's parameters as a pure dict)
    opt_state: optax.OptState
    step: jax.Array  # () int32, optimizer steps taken


def all_finite(tree) -> jax.Array:
    """Whether every element of every inexact leaf of `tree` is finite.

    One fused reduction, traceable (run it on device inside the jitted epoch, fetch one bool).

    Args:
      tree: a pytree of arrays (integer and boolean leaves are skipped).

    Returns:
      () bool; True for a tree without inexact leaves.
    """
    flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
             if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """The state before the first step.

    Args:
      params: the initial parameters (a pytree of arrays).
      optimizer: the optax transformation whose state is initialised.

    Returns:
      `TrainState(params, optimizer.init(params), step=0)`.
    """
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_step(loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """The training step of `loss_fn` and `optimizer`: one gradient, one optax update.

    Args:
      loss_fn: loss_fn(params, batch, key) -> (scalar loss, dict of scalar metrics).
      optimizer: the optax transformation applied to the gradient.

    Returns:
      step(state, batch, key) -> (state, metrics), pure and jit/vmap-able; metrics holds
      "loss" and `loss_fn`'s metrics, each ().
    """

    def step(state: TrainState, batch: jax.Array, key: jax.Array):
        (loss, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), {"loss": loss, **info}

    return step


def make_epoch(step, batch_size: int, mesh: jax.sharding.Mesh | None = None,
               n_batches: int | None = None):
    """One epoch of `step` over a shuffled data set, in one `lax.scan`.

    The epoch shuffles x: (N, D) with `key`, runs `step` over the batches (all
    N // batch_size, or the first `n_batches`) and averages the metrics on device. With a
    `lookup` (a pytree of arrays the rows of x index into, such as the data behind a table of
    neighbour indices), each step gets `(batch, lookup)` for its batch.

    With a `mesh`, every batch is split over its "data" axis (data parallelism): XLA runs the
    step on each device's rows of the batch with the parameters replicated and sums the
    gradient across devices, so an epoch equals the single-device epoch for the same global
    batch (up to the order of floating-point sums).

    Args:
      step: step(state, batch, key) -> (state, metrics), as `make_step` builds it.
      batch_size: rows per batch; the last partial batch is dropped.
      mesh: a mesh with a "data" axis, or None (one device).
      n_batches: batches per epoch, or None (all N // batch_size).

    Returns:
      jitted epoch(state, x, key, lookup=None) -> (state, mean metrics), x: (N, D).
    """

    @jax.jit
    def epoch(state: TrainState, x: jax.Array, key: jax.Array, lookup=None):
        key_perm, key_steps = jax.random.split(key)
        batches = epoch_batches(x, batch_size, key=key_perm, n_batches=n_batches)
        if mesh is not None:
            batches = jax.lax.with_sharding_constraint(
                batches, distributed.batch_sharding(mesh, batch_axis=1)
            )
        keys = jax.random.split(key_steps, batches.shape[0])

        def body(s, inputs):
            batch, k = inputs
            return step(s, batch if lookup is None else (batch, lookup), k)

        state, info = jax.lax.scan(body, state, (batches, keys))
        return state, jax.tree.map(jnp.mean, info)

    return epoch
