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
the staging folders of the first two), never any other file or folder that sits beside them,
and a new checkpoint is complete on disk before the one it replaces goes. The folder's side
(listing steps and entries, setting aside, removing) is `jaxvi.training.checkpoint_folder`,
whose public names are importable from here too.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxvi.training.checkpoint_folder import (  # noqa: F401  (re-exported: their former home)
    _manager,
    _quiet_reads,
    checkpoint_steps,
    has_checkpoint,
    latest_checkpoint,
    other_entries,
    remove_saved,
    saved_entries,
    set_aside,
    set_aside_steps,
)

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


# ----------------------------------------------------------------------------- save and replace


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
