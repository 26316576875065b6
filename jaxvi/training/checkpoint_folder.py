"""A checkpoint folder on disk: the steps it holds (`checkpoint_steps`, `latest_checkpoint`,
`has_checkpoint`), the entries saves wrote in it (`saved_entries`; the rest: `other_entries`),
and setting those aside or removing them (`set_aside`, `set_aside_steps`, `remove_saved`),
which touches nothing a save did not write. Also the orbax `CheckpointManager` (`_manager`)
and the quiet reads (`_quiet_reads`) that `jaxvi.training.checkpoint`'s save and restore use;
every public name here is importable from `jaxvi.training.checkpoint` too.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import uuid
from pathlib import Path

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
