"""The training loop: `fit` runs the shared step (`jaxvi.training.step`) for a number of epochs
with a progress bar, per-epoch evaluation, checksummed orbax checkpoints
(`jaxvi.training.checkpoint`), `resume` from the newest intact one, and a guard that stops on
a non-finite loss (`NonFiniteLossError`) or non-finite parameters (`NonFiniteParamsError`)
before they are saved; it returns a `TrainFitResult` (state, history).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxvi import distributed, processes
from jaxvi.data import check_data
from jaxvi.training.checkpoint import (
    DamagedCheckpointWarning,
    has_checkpoint,
    latest_checkpoint,
    restore_into,
    save_checkpoint,
    set_aside,
)
from jaxvi.training.step import LossFn, TrainState, all_finite, init_state, make_epoch, make_step


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""


class NonFiniteParamsError(NonFiniteLossError):
    """The parameters became NaN or Inf (a non-finite gradient) while the loss was finite; no
    checkpoint of them is written, the last good one is kept."""


class TrainFitResult(NamedTuple):
    """Result of `fit`, with the field names of every fit result (`jaxvi.em.EMFitResult`).

    The fitted state first, then `history`; `objective`, `n_iter` and `converged` are read
    from them (training runs a fixed number of epochs, no convergence test). It unpacks as
    `state, history = fit(...)`.

    Attributes:
      state: the final `TrainState` (params, optimizer state, step).
      history: one dict of metrics per epoch ("epoch", "step", "loss", the loss's metrics,
        "seconds", and `eval_fn`'s entries), a resumed run's earlier epochs included.
    """

    state: TrainState
    history: list[dict]

    @property
    def objective(self) -> float:
        """The last epoch's mean loss (NaN when no epoch has run)."""
        return self.history[-1]["loss"] if self.history else math.nan

    @property
    def n_iter(self) -> int:
        """The epochs run (those of the history)."""
        return len(self.history)

    @property
    def converged(self) -> bool:
        """Always False (a fixed number of epochs, no convergence test)."""
        return False


def fit(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    params,
    x: jax.Array,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int,
    eval_fn: Callable[[Any, int], dict] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    meta: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    max_steps: int | None = None,
    lookup=None,
) -> TrainFitResult:
    """Train `params` on x: (N, D) for `epochs` epochs of shuffled batches.

    With `max_steps`, the fewer epochs of fewer batches that `epoch_plan` gives.

    Epoch e uses the key `fold_in(key, e)`, so a run resumed from a checkpoint ends where an
    uninterrupted run with the same key ends. If an epoch's mean loss is not finite
    (`NonFiniteLossError`), or its parameters are not (`NonFiniteParamsError`: a non-finite
    gradient, even on the epoch's last step; checked on device in the jitted epoch), training
    stops and no checkpoint is written, so the last good one stays.

    Args:
      loss_fn: `loss_fn(params, batch, key) -> (scalar loss, dict of scalar metrics)`.
      optimizer: the optax transformation the step applies.
      params: the initial parameters (a pytree of arrays).
      x: (N, D) training data; N ≥ `batch_size`.
      key: the run's PRNG key.
      epochs: the epoch to train up to (a resumed run continues to it).
      batch_size: rows per step; the last partial batch of an epoch is dropped. With a
        `mesh`, a multiple of the number of devices on its "data" axis.
      eval_fn: `eval_fn(params, epoch) -> dict`, run after each epoch; its entries join the
        epoch's row of the history.
      checkpoint_dir: where a checkpoint (params, optimizer state, step, and `meta` with the
        history) is written at the first epoch end after every `checkpoint_every` steps and
        at the end; None writes none. A run that does not resume refuses a folder that
        already holds checkpoints.
      checkpoint_every: optimizer steps between checkpoints.
      resume: continue from the newest intact checkpoint in `checkpoint_dir`, if any (damaged
        newer ones, see `jaxvi.training.checkpoint`, are renamed `damaged-<epoch>` and named
        in a `DamagedCheckpointWarning`; if none is intact, `ValueError`).
      meta: JSON-able metadata stored with every checkpoint.
      progress: show a progress bar.
      log: called with one line per epoch (default: printed above the bar); False: silent.
      mesh: train data-parallel over the "data" axis of this mesh
        (`jaxvi.distributed.data_mesh`; see `make_epoch`). With several processes, each
        passes the same x and the same initial params; every process takes part in the
        checkpoints (orbax writes one copy) and gets the final state on its own device.
      max_steps: the step budget (None: none); see `epoch_plan`.
      lookup: arrays every step reads whole beside its batch (`make_epoch`), e.g. the data
        that the rows of x, neighbour indices, point into.

    Returns:
      `TrainFitResult(state, history)`: the final state and one dict of metrics per epoch.

    Raises:
      ValueError: x not (N, D) and finite, batch_size > N or not a multiple of the mesh's
        devices, a fresh run in a folder holding checkpoints, or no intact checkpoint to
        resume from.
      NonFiniteLossError: an epoch's mean loss is not finite.
      NonFiniteParamsError: an epoch's parameters are not finite.
    """
    from tqdm.auto import tqdm

    _check_fit_args(x, batch_size, mesh, checkpoint_dir, resume)
    x = jnp.asarray(x)
    lookup = jax.tree.map(jnp.asarray, lookup)
    meta = dict(meta or {})
    epochs, n_batches = epoch_plan(x.shape[0], batch_size, epochs, max_steps)
    state, history, start = _start(params, optimizer, checkpoint_dir, resume)
    if mesh is not None:
        state, x, lookup = jax.device_put((state, x, lookup), distributed.replicated(mesh))
    guarded_epoch = _guarded(make_epoch(make_step(loss_fn, optimizer), batch_size, mesh,
                                        n_batches))

    emit = log or (lambda s: tqdm.write(s))
    bar = tqdm(range(start, epochs), initial=start, total=epochs, disable=not progress,
               desc="train", unit="epoch", leave=False)
    last_saved_step = int(state.step)
    for epoch in bar:
        t0 = time.perf_counter()
        new_state, info, finite = guarded_epoch(state, x, jax.random.fold_in(key, epoch),
                                                lookup)
        info, finite = jax.device_get((info, finite))  # the epoch's one host sync
        info = {k: float(v) for k, v in info.items()}
        _raise_if_non_finite(info["loss"], finite, epoch, state, n_batches, checkpoint_dir)
        state = new_state
        row = {"epoch": epoch + 1, "step": int(state.step), **info,
               "seconds": time.perf_counter() - t0}
        if eval_fn is not None:
            row.update(eval_fn(processes.to_local(state.params), epoch))
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.2f}" for k in ("elbo", "iwae") if k in row} or
                        {"loss": f"{row['loss']:.3g}"})
        if log is not False:
            emit(_format_row(row))
        if checkpoint_dir is not None and _save_due(epoch + 1 == epochs, int(state.step),
                                                    last_saved_step, checkpoint_every):
            save_checkpoint(checkpoint_dir, state, {**meta, "history": history}, epoch=epoch + 1)
            last_saved_step = int(state.step)
    bar.close()
    return TrainFitResult(processes.to_local(state), history)


def epoch_plan(n: int, batch_size: int, epochs: int, max_steps: int | None) -> tuple[int, int]:
    """The epochs and batches per epoch of a run over n points in batches of `batch_size`.

    At most `epochs` full passes (N // batch_size batches each) and, with a step budget, about
    `max_steps` optimizer steps in all, whatever n is: min(epochs, ⌈max_steps / batches⌉)
    epochs of ⌈max_steps / epochs⌉ batches (a random subset of each shuffled pass) when a
    full pass is more than the budget leaves. A budget that covers `epochs` full passes
    changes nothing.

    Args:
      n: N, the number of training points.
      batch_size: rows per batch.
      epochs: the most full passes.
      max_steps: the step budget, or None (none).

    Returns:
      (epochs, batches per epoch), two ints.
    """
    per_pass = n // batch_size
    if max_steps is None or epochs * per_pass <= max_steps:
        return epochs, per_pass
    epochs = min(epochs, math.ceil(max_steps / per_pass))
    return epochs, min(per_pass, math.ceil(max_steps / epochs))


# ----------------------------------------------------------------------------- argument checks


def _check_fit_args(x, batch_size: int, mesh, checkpoint_dir, resume: bool) -> None:
    """x is (N, D) and finite, `batch_size` ≤ N (a multiple of the mesh's devices), and a run
    that does not resume does not start in a folder holding checkpoints."""
    check_data("x", x)
    if x.shape[0] < batch_size:
        raise ValueError(
            f"`batch_size` ({batch_size}) must not exceed the number of training points "
            f"({x.shape[0]})."
        )
    check_batch_size_on_mesh(batch_size, mesh)
    _refuse_existing(checkpoint_dir, resume)


def check_batch_size_on_mesh(batch_size: int, mesh: jax.sharding.Mesh | None) -> None:
    """Check that, with a `mesh`, `batch_size` is a multiple of the devices on its "data" axis.

    Each device takes an equal share of every batch.

    Args:
      batch_size: rows per batch.
      mesh: a mesh with a "data" axis, or None (nothing to check).

    Raises:
      ValueError: a batch size that is not a multiple of the devices, or a bad mesh.
    """
    if mesh is None:
        return
    n_dev = distributed.check_mesh(mesh).shape[distributed.DATA_AXIS]
    if batch_size % n_dev:
        raise ValueError(
            f"`batch_size` ({batch_size}) must be a multiple of the {n_dev} devices of "
            "`mesh` for data-parallel training."
        )


def _refuse_existing(directory, resume: bool) -> None:
    """`fit`'s own check: a run that does not resume must not write into a folder that already
    holds checkpoints (subfolders, such as a recipe's pretraining, are not its business)."""
    step = None if directory is None or resume else latest_checkpoint(directory)
    if step is not None:
        raise ValueError(
            f"{str(directory)!r} already holds checkpoints (latest: epoch {step}); resume from "
            "it (`resume=True`, `--resume`), write to another folder, or delete it first "
            "(`jaxvi train --overwrite`)."
        )


# ----------------------------------------------------------------------------- resume


def _start(params, optimizer, checkpoint_dir, resume: bool) -> tuple[TrainState, list[dict], int]:
    """-> (state, history, first epoch): fresh, or restored from the newest intact checkpoint
    when resuming from a folder that holds one."""
    state = init_state(params, optimizer)
    if resume and has_checkpoint(checkpoint_dir):
        state, saved = _resume_from(checkpoint_dir, state)
        return state, list(saved.get("history", [])), int(saved["epoch"])
    return state, [], 0


def _resume_from(directory, target: TrainState) -> tuple[TrainState, dict]:
    """Restore the newest intact checkpoint; damaged newer ones are set aside (renamed, so the
    resumed run can write those epochs again) and named in one warning."""
    state, saved, damaged = restore_into(directory, target)
    if not damaged:
        return state, saved
    processes.wait_for_all("damaged checkpoints read")  # by every process of a job
    if processes.is_main_process():  # renames them and tells
        moved = set_aside(directory, [d.step for d in damaged])
        listing = "; ".join(f"epoch {d.step}: {d.reason}" for d in damaged)
        warnings.warn(
            f"the newest checkpoint(s) in {str(directory)!r} are damaged ({listing}); resuming "
            f"from epoch {saved['epoch']}, the newest intact one; the damaged one(s) are kept "
            f"as {', '.join(repr(m.name) for m in moved)}.",
            DamagedCheckpointWarning, stacklevel=4,
        )
    processes.wait_for_all("damaged checkpoints set aside")
    return state, saved


# ----------------------------------------------------------------------------- the guard


def _guarded(epoch_fn):
    """-> jitted guarded_epoch(state, x, key, lookup) -> (state, mean metrics, () bool: every
    parameter finite), the check run on device with the epoch."""

    @jax.jit
    def guarded_epoch(state, x, key, lookup):
        new_state, info = epoch_fn(state, x, key, lookup)
        return new_state, info, all_finite(new_state.params)

    return guarded_epoch


def _raise_if_non_finite(loss: float, finite: bool, epoch: int, state: TrainState,
                         steps_per_epoch: int, checkpoint_dir) -> None:
    """Stop (before anything is saved) if the epoch's mean loss or its parameters are not
    finite, naming the epoch, the steps and the checkpoint that is kept."""
    if math.isfinite(loss) and finite:
        return
    kept = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    where = (f"; the last good checkpoint (epoch {kept}) is kept in {checkpoint_dir}"
             if kept is not None else "")
    steps = f"step ≤ {int(state.step) + steps_per_epoch}"
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"training loss became {loss} during epoch {epoch + 1} "
            f"({steps}){where}. Try a smaller learning rate."
        )
    raise NonFiniteParamsError(
        f"the parameters became NaN or Inf during epoch {epoch + 1} ({steps}) while "
        f"the loss stayed finite ({loss:.4g}): a non-finite gradient; they "
        f"were not saved{where}. Try a smaller learning rate."
    )


# ----------------------------------------------------------------------------- saving, logging


def _save_due(done: bool, step: int, last_saved_step: int, checkpoint_every: int) -> bool:
    """Save at the end and at the first epoch end after every `checkpoint_every` steps."""
    return done or step // checkpoint_every > last_saved_step // checkpoint_every


def _format_row(row: dict) -> str:
    parts = [f"epoch {row['epoch']:4d}"]
    for k, v in row.items():
        if k in ("epoch", "step", "seconds"):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)
