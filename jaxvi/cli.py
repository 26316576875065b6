"""The `jaxvi` command. Each subcommand lives in `jaxvi/commands/<name>.py`, which defines
`register(subparsers)`; that adds its parser and sets `func(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under jaxvi.commands, in the order `jaxvi --help` lists them.
SUBCOMMAND_MODULES = ("train", "evaluate", "em", "kl", "kl_modes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxvi",
        description="KL divergences, EM for Gaussian mixtures and a hierarchical VAE in JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"jaxvi.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"jaxvi.commands.{name}":
                continue  # not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"jaxvi {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
