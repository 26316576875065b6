"""The `jaxvi` command. Each subcommand lives in `jaxvi/commands/<name>.py`, which defines
`register(subparsers)`; that adds its parser and sets `func(args) -> int`. A command's helper
modules are private (`jaxvi/commands/_<name>.py`) and are no subcommands.

Every command-line error is one line on stderr and exit code 2, never a traceback: argparse's
errors, the `ValueError`s of the argument and data checks, and the operating system's errors
that a user causes (a missing file, no permission, a folder where a file should be). Any other
exception is a bug and keeps its traceback. `check_output_file` and `check_output_dir` are the
commands' checks on where they will write, run before anything is fitted or written;
`save_result` writes an .npz result whole or not at all."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path

# Module names under jaxvi.commands, in the order `jaxvi --help` lists them.
SUBCOMMAND_MODULES = ("train", "evaluate", "em", "kl", "kl_modes", "launch")
SEED_RANGE = (-(2**63), 2**63)  # what jax.random.key takes
INT_LIMIT = 2**31  # other integer options: int32 shapes and loop bounds


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (subcommand parsers are of the same class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxvi",
        description="KL divergences, EM for Gaussian mixtures and a hierarchical VAE in JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"jaxvi.commands.{name}").register(subparsers)
    return parser


def check_common_args(args) -> None:
    """Checks every command's options get before it runs: `--seed` fits a PRNG key; every
    other integer option is below 2**31 in magnitude (counts and sizes become int32 shapes
    and loop bounds in JAX); every float option is finite."""
    for dest, value in vars(args).items():
        if dest == "func" or isinstance(value, bool):
            continue
        flag = "--" + dest.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                low, high = SEED_RANGE if dest == "seed" else (-INT_LIMIT + 1, INT_LIMIT)
                if not low <= v < high:
                    bound = "[-2**63, 2**63)" if dest == "seed" else "(-2**31, 2**31)"
                    raise ValueError(f"`{flag}` must be an integer in {bound}; got {v}.")
            elif isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"`{flag}` must be a finite number; got {v}.")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_common_args(args)
        return int(args.func(args) or 0)
    except ValueError as err:
        message = str(err)
    except OSError as err:  # FileNotFoundError, PermissionError, IsADirectoryError, ENOSPC, ...
        message = _os_error_message(err)
    print(f"jaxvi {args.command}: error: {_one_line(message)}", file=sys.stderr)
    return 2


def check_output_file(flag: str, path: str | Path, *, overwrite: bool) -> Path:
    """Check, before any work, that `path` can be written as the output `flag`: not empty, not
    a folder, not under a file, its folder existing or creatable, and not replacing an earlier
    file unless `overwrite`. -> the path. Raises `ValueError` naming `flag` and the path."""
    path = _nonempty(flag, path)
    if path.is_dir():
        raise ValueError(f"`{flag}` {str(path)!r} is a folder; expected a file to write.")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise ValueError(f"`{flag}` {str(path)!r} already exists (an earlier result?); "
                             "pass --overwrite to replace it, or choose another path.")
        if not path.is_file():
            raise ValueError(f"`{flag}` {str(path)!r} exists and is not a regular file.")
    _check_creatable(flag, path, path.parent)
    return path


def check_output_dir(flag: str, path: str | Path, outputs, *, overwrite: bool) -> Path:
    """Check, before any work, that the folder `path` can receive the files `outputs` (names):
    a folder or creatable (not a file, not under one), and none of `outputs` already there
    unless `overwrite`. -> the path. Raises `ValueError` naming `flag` and the path."""
    path = _nonempty(flag, path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"`{flag}` {str(path)!r} is a file; expected a folder to write into.")
    if not path.exists():
        _check_creatable(flag, path, path)
        return path
    for name in outputs:
        target = path / name
        if target.is_dir():
            raise ValueError(f"`{flag}` {str(path)!r} holds a folder {name!r} where the file "
                             f"{name} is to be written.")
    earlier = [name for name in outputs if (path / name).exists()]
    if earlier and not overwrite:
        raise ValueError(f"`{flag}` {str(path)!r} already holds {', '.join(earlier)} from an "
                         "earlier run; pass --overwrite to replace them, or choose another "
                         "folder.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"`{flag}` {str(path)!r}: no permission to write in that folder.")
    return path


def save_result(out: Path, **arrays) -> None:
    """np.savez of `arrays` to `out`, written to a temporary file beside it and renamed over
    it, so that an earlier result is replaced whole or not at all."""
    import numpy as np

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def add_process_options(parser) -> None:
    """The options that make a command one process of a multi-process job (`jaxvi launch`
    sets them; on a cluster give them, or --cluster, to every process)."""
    g = parser.add_argument_group(
        "several processes", "one process of a job over several processes or hosts "
        "(`jaxvi launch -n N -- jaxvi ...` sets these on one machine)")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="address of process 0, which serves as the coordinator (default: "
                   "$JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="processes in the job (default: $JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process's id, 0 .. N-1 (default: $JAX_PROCESS_ID)")
    g.add_argument("--cluster", action="store_true",
                   help="let JAX detect the job from the cluster (SLURM, Open MPI, "
                   "Kubernetes, Cloud TPU)")
    g.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the coordinator, and for a silent peer before "
                   "the job fails (default 60)")


def join_processes(args) -> bool:
    """Join the job that `add_process_options`' options describe, before JAX computes
    anything (`jaxvi.processes.initialize`). -> whether there are several processes."""
    from jaxvi import processes

    return processes.initialize(args.coordinator, args.num_processes, args.process_id,
                                  cluster=args.cluster, timeout_s=args.timeout)


def _nonempty(flag: str, path) -> Path:
    if not str(path).strip():
        raise ValueError(f"`{flag}` must be a path; got {str(path)!r}.")
    return Path(path)


def _check_creatable(flag: str, path: Path, folder: Path) -> None:
    """`folder` (which is or will hold `path`) exists as a folder we may write in, or its
    nearest existing ancestor is one (so that mkdir -p can create it)."""
    ancestor = folder
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise ValueError(f"`{flag}` {str(path)!r}: {str(ancestor)!r} is a broken link.")
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"`{flag}` {str(path)!r} cannot be created: {str(ancestor)!r} is a "
                         "file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"`{flag}` {str(path)!r} cannot be created: no permission to write "
                         f"in {str(ancestor)!r}.")


def _os_error_message(err: OSError) -> str:
    if err.strerror and err.filename is not None:
        where = repr(os.fsdecode(err.filename))
        if err.filename2 is not None:
            where += f" -> {os.fsdecode(err.filename2)!r}"
        return f"{err.strerror}: {where}"
    return str(err)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


if __name__ == "__main__":
    sys.exit(main())
