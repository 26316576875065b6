"""Orbax checkpoints that notice damage: each one carries SHA-256 digests of its state's array
bytes, of the state's structure and of its JSON metadata, and a restore checks them.

A checkpoint folder holds numbered steps (`<folder>/<step>/state` for the arrays,
`<folder>/<step>/meta/metadata` for the JSON). Reading (`load_meta`, `restore_checkpoint`)
takes the newest step that reads back intact: a damaged newer one (a flipped bit, a cut or
deleted file) is named in a `DamagedCheckpointWarning`, and when no step is intact a
`ValueError` names the folder and what is wrong with each step. A state whose structure
differs from the one asked for (another model) is a `ValueError` at once, not damage.

Replacing and removing checkpoints (`replace_checkpoint`, `set_aside_steps`, `remove_saved`)
touches only what a save wrote (the step folders, an interrupted save's temporary folders and
the staging folders below), never any other file or folder that sits beside them, and a new
checkpoint is complete on disk before the one it replaces goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

CHECKSUM_KEY = "checksum"
META_FILE = Path("meta") / "metadata"  # where orbax's JsonSave puts a step's metadata


class DamagedCheckpointWarning(UserWarning):
    """A newer checkpoint could not be read back intact; an older one is used instead."""


class Damaged(NamedTuple):
    """A checkpoint step that could not be read back intact.

    Attributes:
      step: the step (epoch) number.
      reason: what is wrong with it, one line.
    """

    step: int
    reason: str  # one line


# ----------------------------------------------------------------------------- digests


def state_digest(tree) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in the tree's leaf order.

    Args:
      tree: a pytree of arrays (fetched to the host).

    Returns:
      The hex digest, a str.
    """
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.name}{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def structure_digest(tree) -> str:
    """SHA-256 of the leaves' dtypes and shapes.

    Args:
      tree: a pytree of arrays or `jax.ShapeDtypeStruct` objects.

    Returns:
      The hex digest, a str.
    """
    leaves = [(np.dtype(x.dtype).name, tuple(x.shape)) for x in jax.tree.leaves(tree)]
    return hashlib.sha256(repr(leaves).encode()).hexdigest()


def meta_digest(meta: dict) -> str:
    """SHA-256 of `meta` (without its checksum) as JSON, keys sorted, after a JSON round trip.

    So tuples and lists, or int and str keys, hash as they are read back.

    Args:
      meta: JSON-able metadata.

    Returns:
      The hex digest, a str.
    """
    body = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    canonical = json.loads(json.dumps(body))
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- folders


_DRAIN_SECONDS = 30.0  # how long a closing read loop waits for the reads it abandoned


class _DrainingLoop(asyncio.SelectorEventLoop):
    """The event loop orbax runs our reads on (see `_quiet_reads`). When one of its parallel
    array reads fails, orbax returns the error and closes the loop while the other reads are
    still under way in TensorStore's threads; each of them, on finishing, would call
    `call_soon_threadsafe` on the closed loop and have "Event loop is closed" printed (one
    traceback per array). This loop lets those reads finish first: `close` waits for its
    pending tasks (collecting their errors) and then closes; a read still not done after
    `_DRAIN_SECONDS` is cancelled, and a result arriving after the close is dropped."""

    def close(self):
        if not self.is_running() and not self.is_closed():
            pending = asyncio.all_tasks(self)
            if pending:
                _, late = self.run_until_complete(asyncio.wait(pending, timeout=_DRAIN_SECONDS))
                for task in late:
                    task.cancel()
                self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        super().close()

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():  # a read cancelled above that finished after all
            return None
        return super().call_soon_threadsafe(callback, *args, context=context)


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _DrainingLoop()


@contextlib.contextmanager
def _quiet_reads():
    """While reading possibly damaged checkpoints: orbax's event loops are `_DrainingLoop`s
    (they wait for the reads a failed restore abandons, instead of leaving them to fail on a
    closed loop), and orbax's absl log lines about the failed reads stay off stderr (the
    caller reports the damage once, in one line). Both are restored on exit."""
    logger = logging.getLogger("absl")
    level, policy = logger.level, asyncio.get_event_loop_policy()
    logger.setLevel(logging.CRITICAL)
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(policy)
        logger.setLevel(level)


def _manager(directory, *, max_to_keep: int = 2, create: bool = True):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create),
    )


def checkpoint_steps(directory) -> list[int]:
    """The finished checkpoint steps in `directory`, oldest first.

    Args:
      directory: a checkpoint folder (need not exist).

    Returns:
      The steps, a list of ints ([] when there is none).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    with _quiet_reads():
        mngr = _manager(directory, create=False)
        steps = sorted(mngr.all_steps())
        mngr.close()
    return steps


def latest_checkpoint(directory) -> int | None:
    """The newest checkpoint step in `directory` (intact or not).

    Args:
      directory: a checkpoint folder (need not exist).

    Returns:
      The step, an int, or None when there is none.
    """
    steps = checkpoint_steps(directory)
    return steps[-1] if steps else None


def has_checkpoint(directory) -> bool:
    """Whether `directory` is given (not None) and holds a checkpoint step (intact or not).

    Args:
      directory: a checkpoint folder, or None.

    Returns:
      A bool.
    """
    return directory is not None and latest_checkpoint(directory) is not None


def set_aside(directory, steps) -> list[Path]:
    """Rename the given step folders to `damaged-<step>` (suffixed `.1`, `.2`, … if taken).

    New checkpoints can then take their numbers; nothing is deleted.

    Args:
      directory: the checkpoint folder.
      steps: the step numbers to set aside.

    Returns:
      The new paths, a list of `Path`.
    """
    directory = Path(directory)
    moved = []
    for step in steps:
        dest = directory / f"damaged-{step}"
        n = 0
        while dest.exists():
            n += 1
            dest = directory / f"damaged-{step}.{n}"
        (directory / str(step)).rename(dest)
        moved.append(dest)
    return moved


# What a save writes into a checkpoint folder: numbered step folders, orbax's temporary
# folder of a save in progress, and the staging folders of `replace_checkpoint` and
# `set_aside_steps` (left only by a run that was killed in between).
_SAVED = re.compile(r"\d+|\d+\.orbax-checkpoint-tmp-.*|\.jaxvi-(staging|replaced)-[0-9a-f]+")


def saved_entries(directory) -> list[Path]:
    """The entries of `directory` that saves wrote (see `_SAVED`), sorted.

    Args:
      directory: a checkpoint folder.

    Returns:
      A list of `Path` ([] when it is not a folder).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _SAVED.fullmatch(p.name) and p.is_dir())


def other_entries(directory) -> list[Path]:
    """The entries of `directory` that no save wrote, sorted.

    Such as a user's files, or `damaged-*` step folders set aside for inspection.

    Args:
      directory: a checkpoint folder.

    Returns:
      A list of `Path` ([] when it is not a folder).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    saved = set(saved_entries(directory))
    return sorted(p for p in directory.iterdir() if p not in saved)


def remove_saved(entries) -> None:
    """Delete the given entries, each of which `saved_entries` listed (checked again here).

    Args:
      entries: paths; one already gone is skipped.

    Raises:
      ValueError: an entry that is not a folder a save wrote (nothing is deleted then).
    """
    entries = [p for p in map(Path, entries) if p.exists() or p.is_symlink()]
    for p in entries:
        if not (_SAVED.fullmatch(p.name) and p.is_dir() and not p.is_symlink()):
            raise ValueError(f"refusing to delete {str(p)!r}: not a folder a save wrote.")
    for p in entries:
        shutil.rmtree(p)


def set_aside_steps(directory) -> Path | None:
    """Move the step folders (and interrupted saves) of `directory` into a staging folder.

    The new folder is `directory/.jaxvi-replaced-<hex>` (renames: nothing is deleted), so that
    a fresh run can write its own steps; other entries stay. `remove_saved([it])` deletes them
    once the new run has saved.

    Args:
      directory: the checkpoint folder.

    Returns:
      The staging folder, a `Path`; None when there was nothing to move.
    """
    old = [p for p in saved_entries(directory) if not p.name.startswith(".jaxvi-")]
    if not old:
        return None
    aside = Path(directory) / f".jaxvi-replaced-{uuid.uuid4().hex}"
    aside.mkdir()
    for p in old:
        p.rename(aside / p.name)
    return aside


def replace_checkpoint(directory, state: NamedTuple, meta: dict, *, epoch: int) -> None:
    """`save_checkpoint` into `directory` as its only checkpoint.

    The new one is written in full into a staging folder inside `directory` first, moved into
    place (a rename), and only then are the earlier steps removed; entries no save wrote are
    left untouched.

    Args:
      directory: the checkpoint folder (created if missing).
      state: as for `save_checkpoint`.
      meta: as for `save_checkpoint`.
      epoch: the checkpoint's step number.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = [p for p in saved_entries(directory) if not p.name.startswith(".jaxvi-")]
    staging = directory / f".jaxvi-staging-{uuid.uuid4().hex}"
    save_checkpoint(staging, state, meta, epoch=epoch)
    target = directory / str(epoch)
    if target.exists():  # the old step of the same number goes into staging, then away
        target.rename(staging / f"old-{epoch}")
    (staging / str(epoch)).rename(target)
    remove_saved([p for p in old if p != target] + [staging])


# ----------------------------------------------------------------------------- save


def save_checkpoint(directory, state: NamedTuple, meta: dict, *, epoch: int,
                    max_to_keep: int = 2) -> None:
    """Write `state` and `meta` as checkpoint number `epoch`, with digests of both.

    The digests go into `meta["checksum"]`; the newest `max_to_keep` checkpoints are kept.

    Args:
      directory: the checkpoint folder.
      state: a NamedTuple of pytrees of arrays, e.g. `TrainState`.
      meta: JSON-able metadata, saved with its "epoch" and "checksum" entries set.
      epoch: the checkpoint's step number.
      max_to_keep: how many checkpoints are kept.
    """
    import orbax.checkpoint as ocp

    payload = state._asdict()
    meta = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    meta["epoch"] = epoch
    meta[CHECKSUM_KEY] = {
        "algorithm": "sha256",
        "state": state_digest(payload),
        "structure": structure_digest(payload),
        "meta": meta_digest(meta),
    }
    mngr = _manager(directory, max_to_keep=max_to_keep)
    mngr.save(
        epoch,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(payload), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
    )
    mngr.wait_until_finished()
    mngr.close()


# ----------------------------------------------------------------------------- read


class _DamagedStep(Exception):
    pass


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_meta(mngr, directory: Path, step: int) -> dict:
    import orbax.checkpoint as ocp

    file = directory / str(step) / META_FILE
    if not file.is_file():
        raise _DamagedStep(f"its metadata file {str(file)!r} is missing")
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except json.JSONDecodeError as err:
        raise _DamagedStep(f"{str(file)!r} is not valid JSON ({err})") from None
    except Exception as err:  # orbax and TensorStore raise many kinds
        raise _DamagedStep(f"{str(file)!r} cannot be read ({_one_line(err)})") from None
    if not isinstance(meta, dict):
        raise _DamagedStep(f"{str(file)!r} holds a {type(meta).__name__}, not a JSON object")
    meta = dict(meta)
    checksum = meta.get(CHECKSUM_KEY)
    if checksum is not None and (not isinstance(checksum, dict)
                                 or checksum.get("meta") != meta_digest(meta)):
        raise _DamagedStep(f"{str(file)!r} does not match its SHA-256 checksum")
    return meta


def _read_state(mngr, directory: Path, step: int, meta: dict, abstract: dict):
    import orbax.checkpoint as ocp

    checksum = meta.get(CHECKSUM_KEY) or {}
    if "structure" in checksum and checksum["structure"] != structure_digest(abstract):
        raise ValueError(
            f"checkpoint epoch {step} in {str(directory)!r} holds a state of another structure "
            "(array shapes or dtypes) than the one to restore into: it was written for another "
            "model or configuration."
        )
    try:
        state = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
    except Exception as err:  # a cut or deleted array file: TensorStore errors of many kinds
        folder = directory / str(step) / "state"
        raise _DamagedStep(f"its arrays in {str(folder)!r} cannot be read "
                           f"({_one_line(err)})") from None
    if "state" in checksum and checksum["state"] != state_digest(state):
        raise _DamagedStep("its arrays do not match their SHA-256 checksum (changed on disk)")
    return state


def _newest_intact(directory, abstract: dict | None):
    """-> (step, meta, state or None, damaged newer steps). Raises FileNotFoundError when
    `directory` holds no checkpoint and ValueError when none is intact."""
    directory = Path(directory)
    steps = checkpoint_steps(directory)
    if not steps:
        raise FileNotFoundError(f"no checkpoint found in {str(directory)!r}.")
    damaged: list[Damaged] = []
    with _quiet_reads():
        mngr = _manager(directory, create=False)
        try:
            for step in reversed(steps):
                try:
                    meta = _read_meta(mngr, directory, step)
                    state = None if abstract is None else _read_state(
                        mngr, directory, step, meta, abstract)
                except _DamagedStep as err:
                    damaged.append(Damaged(step, str(err)))
                    continue
                meta.pop(CHECKSUM_KEY, None)
                return step, meta, state, damaged
        finally:
            mngr.close()
    listing = "; ".join(f"epoch {d.step}: {d.reason}" for d in damaged)
    raise ValueError(f"no intact checkpoint in {str(directory)!r} ({listing}).")


def _damaged_message(directory, damaged: list[Damaged], used: int) -> str:
    listing = "; ".join(f"epoch {d.step}: {d.reason}" for d in damaged)
    return (f"the newest checkpoint(s) in {str(Path(directory))!r} are damaged ({listing}); "
            f"using epoch {used}, the newest intact one.")


def _warn(directory, damaged, used) -> None:
    if damaged:
        warnings.warn(_damaged_message(directory, damaged, used), DamagedCheckpointWarning,
                      stacklevel=3)


def read_meta(directory) -> tuple[dict, list[Damaged]]:
    """Like `load_meta`, without warning.

    Args:
      directory: the checkpoint folder.

    Returns:
      (meta, the damaged newer steps as a list of `Damaged`).

    Raises:
      FileNotFoundError: no checkpoint in `directory`.
      ValueError: no intact checkpoint.
    """
    _, meta, _, damaged = _newest_intact(directory, None)
    return meta, damaged


def load_meta(directory) -> dict:
    """The JSON metadata of the newest checkpoint whose metadata reads back intact.

    Damaged newer ones are named in a `DamagedCheckpointWarning` (see the module docstring).

    Args:
      directory: the checkpoint folder.

    Returns:
      The metadata dict (config, history, epoch).

    Raises:
      FileNotFoundError: no checkpoint in `directory`.
      ValueError: no intact checkpoint.
    """
    meta, damaged = read_meta(directory)
    _warn(directory, damaged, meta["epoch"])
    return meta


def restore_into(directory, target: NamedTuple) -> tuple[Any, dict, list[Damaged]]:
    """Like `restore_checkpoint`, without warning.

    Args:
      directory: the checkpoint folder.
      target: as for `restore_checkpoint`.

    Returns:
      (state, meta, the damaged newer steps as a list of `Damaged`).

    Raises:
      FileNotFoundError: no checkpoint in `directory`.
      ValueError: no intact checkpoint, or one of another structure than `target`.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target._asdict())
    _, meta, state, damaged = _newest_intact(directory, abstract)
    return type(target)(**state), meta, damaged


def restore_checkpoint(directory, target: NamedTuple) -> tuple[Any, dict]:
    """Restore the newest intact checkpoint in `directory` into the structure of `target`.

    Its arrays are checked against their checksum. Damaged newer checkpoints are named in a
    `DamagedCheckpointWarning`.

    Args:
      directory: the checkpoint folder.
      target: a NamedTuple such as `TrainState` whose arrays give the structure (shapes and
        dtypes).

    Returns:
      (state, meta): the state, of target's type, and the metadata dict.

    Raises:
      FileNotFoundError: no checkpoint in `directory`.
      ValueError: no intact checkpoint, or one of another structure than `target`.
    """
    state, meta, damaged = restore_into(directory, target)
    _warn(directory, damaged, meta["epoch"])
    return state, meta
