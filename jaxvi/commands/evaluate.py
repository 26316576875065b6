"""`jaxvi evaluate CHECKPOINT`: the test metrics of a trained hierarchical VAE."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="test metrics of a checkpoint written by `jaxvi train`",
        description="Rebuild the model from CHECKPOINT (a `jaxvi train` output folder or its "
        "checkpoint/ folder) and print its test metrics.",
    )
    p.add_argument("checkpoint", help="e.g. runs/digits or runs/digits/checkpoint")
    p.add_argument("--data", default=None,
                   help="data to evaluate on (default: the data the model was trained on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def resolve_checkpoint(path) -> Path:
    """The checkpoint folder: `path` itself or its checkpoint/ subfolder; a folder holding
    neither any checkpoint nor a checkpoint/ subfolder is refused (`FileNotFoundError`)."""
    from jaxvi.training.checkpoint import latest_checkpoint

    path = Path(path)
    if (path / "checkpoint").is_dir():
        path = path / "checkpoint"
    if not path.is_dir():
        raise FileNotFoundError(f"`checkpoint` {str(path)!r} is not a folder.")
    if latest_checkpoint(path) is None:
        raise FileNotFoundError(
            f"`checkpoint` {str(path)!r} is not a checkpoint folder: it holds no numbered "
            "checkpoint; give a `jaxvi train` output folder or its checkpoint/ subfolder."
        )
    return path


def run(args) -> int:
    import jax

    from jaxvi import data as data_lib
    from jaxvi.commands.train import format_metrics, one_line_warnings
    from jaxvi.vae.evaluate import evaluate_test_set
    from jaxvi.vae.recipe import load_model

    with one_line_warnings("jaxvi evaluate"):
        model, meta = load_model(resolve_checkpoint(args.checkpoint))
    data = args.data or meta.get("data", "digits")
    ds = data_lib.load(data)
    final = evaluate_test_set(model, ds.x_test, ds.y_test, key=jax.random.key(args.seed + 1))
    if args.json:
        print(json.dumps(final, indent=2))
    else:
        print(f"checkpoint {args.checkpoint} (epoch {meta.get('epoch')}), data {data}")
        print(format_metrics(final))
    return 0
