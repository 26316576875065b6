"""`jaxvi train`: the hierarchical VAE on digits (or your .npy/.npz), with metrics and pictures."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

DEFAULT_OUT = "runs/digits"


def register(subparsers) -> None:
    from jaxvi.cli import add_process_options
    from jaxvi.vae.model import VAEConfig
    from jaxvi.vae.recipe import TrainConfig

    d, m = TrainConfig(), VAEConfig(data_dim=1)
    p = subparsers.add_parser(
        "train",
        help="train the hierarchical (Gaussian-mixture-prior) VAE",
        description="Train the hierarchical VAE (autoencoder pretraining, a GMM on the UMAP of "
        "the codes as the prior's start, then the ELBO) and write metrics.json, the "
        "checkpoint, samples.png, recon.png and latent.png to --out. With several processes "
        "(`jaxvi launch`, or the options below on a cluster) every batch is split over all "
        "their devices; each process reads the whole data set (the clusters of the codes use "
        "every training point), all take part in the checkpoints and process 0 writes the "
        "rest.",
    )
    p.add_argument("--data", default="digits",
                   help="'digits' (bundled with scikit-learn, the default), a .npy/.npz file "
                   "(Keras's mnist.npz too) or MNIST's IDX files (train-images-idx3-ubyte[.gz], "
                   "or torchvision's raw folder holding them)")
    p.add_argument("--components", type=int, default=10, help="mixture components K (default 10)")
    p.add_argument("--latent-dim", type=int, default=m.latent_dim,
                   help=f"size of w (default {m.latent_dim})")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"joint ELBO epochs (default {d.epochs})")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs,
                   help=f"autoencoder pretraining epochs (default {d.pretrain_epochs})")
    p.add_argument("--steps", type=int, default=d.steps,
                   help="step budget of joint training: at most about this many optimizer "
                   "steps, fewer epochs on large data; 0 = none (default %(default)s)")
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps,
                   help="step budget of pretraining; 0 = none (default %(default)s)")
    p.add_argument("--restarts", type=int, default=d.restarts,
                   help="autoencoders pretrained together; the prior starts from the consensus "
                   f"of their clusterings (default {d.restarts})")
    p.add_argument("--pretrain-neighbors", type=int, default=d.pretrain_neighbors,
                   help="pretraining target: one of the k nearest training neighbours of x; "
                   f"0 = plain autoencoder (default {d.pretrain_neighbors})")
    p.add_argument("--hidden", default=",".join(map(str, m.hidden)),
                   help="hidden widths of encoder and decoder, comma-separated (default "
                   "%(default)s)")
    p.add_argument("--embedding", default=d.embedding,
                   help="how the clusters the prior starts from are found in the pretrained "
                   "codes: 'umap' (a GMM on their UMAP embedding, the default) or 'none' (a "
                   "GMM on the codes)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest intact checkpoint in --out (of the joint "
                   "training, or of the pretraining if the run stopped during it)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="checkpoint at the first epoch end after every N optimizer steps, in "
                   f"pretraining and in joint training (default {d.checkpoint_every})")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run's checkpoint, "
                        "which is deleted once this run has saved its own (only the "
                        "checkpoint steps: other files stay); without this or --resume, "
                        "such an --out is refused")
    p.add_argument("--likelihood", default="gaussian",
                   help="decoder: 'gaussian' (learned floored per-pixel variance) or 'bernoulli'")
    p.add_argument("--inference", default=d.inference,
                   help="'elbo' (every network on the ELBO, the default) or 'forward-kl' "
                   "(decoder and prior on the IWAE bound, the inference networks on the "
                   "forward KL: reweighted wake-sleep)")
    p.add_argument("--devices", type=int, default=1,
                   help="data-parallel over the first N local devices (default 1); "
                   "--batch-size must be a multiple of N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_process_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import jax

    from jaxvi import data as data_lib
    from jaxvi import distributed, processes
    from jaxvi.cli import join_processes
    from jaxvi.training.checkpoint import remove_saved, set_aside_steps
    from jaxvi.training.loop import NonFiniteLossError
    from jaxvi.vae import recipe
    from jaxvi.vae.evaluate import evaluate_test_set
    from jaxvi.vae.model import VAEConfig
    from jaxvi.vae.plots import save_figures

    t0, c0 = time.perf_counter(), time.process_time()
    several = join_processes(args)
    main = processes.is_main_process()
    # Every argument and the data are checked before anything is deleted, trained or written.
    out = Path(args.out)
    check_out_folder(out)
    ds = data_lib.load(args.data)
    mc = VAEConfig(
        data_dim=int(ds.x_train.shape[1]), components=args.components,
        latent_dim=args.latent_dim, likelihood=args.likelihood, hidden=_widths(args.hidden),
    )
    tc = recipe.TrainConfig(
        epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, batch_size=args.batch_size,
        steps=args.steps or None, pretrain_steps=args.pretrain_steps or None,
        learning_rate=args.learning_rate, seed=args.seed, restarts=args.restarts,
        pretrain_neighbors=args.pretrain_neighbors, inference=args.inference,
        checkpoint_every=args.checkpoint_every, embedding=args.embedding,
    )
    mesh = None
    if several:
        if args.devices != 1:
            raise ValueError("`--devices` chooses devices of a single process; with several "
                             "processes every device of every process is used.")
        mesh = distributed.data_mesh()
    elif args.devices != 1:
        available = jax.local_devices()
        if not 1 <= args.devices <= len(available):
            raise ValueError(f"`--devices` must be between 1 and the {len(available)} local "
                             f"device(s); got {args.devices}.")
        mesh = distributed.data_mesh(available[: args.devices])
    recipe.check_train_inputs(ds.x_train, mc, tc, x_test=ds.x_test, mesh=mesh,
                              where=f"`--data` {str(args.data)!r}: ")
    ckpt = out / "checkpoint"
    if ckpt.exists() and not ckpt.is_dir():
        raise ValueError(f"`--out` {str(out)!r} holds a file 'checkpoint' where the run's "
                         "checkpoint folder goes; move it away or choose another --out.")
    replaced = []  # an earlier run's checkpoints, set aside until this run has saved its own
    if not (args.overwrite and not args.resume):
        recipe.check_fresh_checkpoint_dir(ckpt, args.resume)
    elif main:
        replaced = [p for p in map(set_aside_steps, (ckpt, ckpt / recipe.PRETRAIN_DIR)) if p]
    processes.wait_for_all("checkpoint folder ready")
    out.mkdir(parents=True, exist_ok=True)
    if main:
        print(f"data {ds.name}: {ds.x_train.shape[0]} train, {ds.x_test.shape[0]} test, "
              f"{mc.data_dim} features; K={mc.components}, latent {mc.latent_dim}, "
              f"{mc.likelihood} decoder; writing to {out}")
    try:
        with one_line_warnings("jaxvi train"):
            model, history = recipe.train_vae(
                ds.x_train, mc, tc, x_test=ds.x_test, y_test=ds.y_test,
                checkpoint_dir=ckpt, resume=args.resume, progress=main and not args.no_progress,
                log=print if main else False, data_name=str(args.data),
                input_scale=ds.input_scale, mesh=mesh,
            )
    except NonFiniteLossError as err:
        kept = f" (the earlier run's checkpoints are kept in {str(replaced[0])!r})" if (
            replaced) else ""
        print(f"jaxvi train: error: {err}{kept}", file=sys.stderr)
        return 1
    remove_saved(replaced)  # this run's checkpoint is written: the earlier one may go
    clock = [(t0, c0), (time.perf_counter(), time.process_time())]  # start, trained
    if not main:
        return 0
    final = evaluate_test_set(model, ds.x_test, ds.y_test, key=jax.random.key(args.seed + 1))
    clock.append((time.perf_counter(), time.process_time()))  # evaluated
    final["train_seconds"] = clock[2][0] - t0
    save_figures(model, ds.x_test, out, key=jax.random.key(args.seed + 2))
    clock.append((time.perf_counter(), time.process_time()))  # pictures drawn
    result = {
        "data": str(args.data),
        "input_scale": ds.input_scale,
        "model_config": mc.to_dict(),
        "train_config": tc.to_dict(),
        **final,
        **_phase_seconds(ckpt, history, clock),
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_metrics(final))
    print(f"wrote {out / 'metrics.json'}, {out / 'checkpoint'}, samples.png, recon.png, "
          f"latent.png in {final['train_seconds']:.0f} s")
    return 0


def _phase_seconds(ckpt: Path, history: list[dict], clock) -> dict:
    """{"phase_seconds": wall, "phase_cpu_seconds": process CPU} of each phase: the neighbour
    search, autoencoder pretraining, the consensus (GMMs on the codes), joint training (wall
    only, with its test evaluations in "other"), the final evaluation, the pictures, loading
    and checks ("other"), and the total. clock: (wall, CPU) at the start, after training,
    after evaluating, after drawing."""
    from jaxvi.training.checkpoint import load_meta

    pretrain = load_meta(ckpt).get("pretrain", {})
    out = {}
    for kind, col in (("phase_seconds", 0), ("phase_cpu_seconds", 1)):
        pre = pretrain.get("seconds" if col == 0 else "cpu_seconds", {})
        spans = [b[col] - a[col] for a, b in zip(clock[:-1], clock[1:], strict=True)]
        phases = {"pretrain_" + k: v for k, v in pre.items()}
        joint = sum(row["seconds"] for row in history) if col == 0 else None
        phases["joint_training_and_other"] = spans[0] - sum(pre.values())
        if joint is not None:
            phases["joint_training"] = joint
            phases["other"] = phases.pop("joint_training_and_other") - joint
        out[kind] = {**phases, "evaluation": spans[1], "pictures": spans[2],
                     "total": clock[-1][col] - clock[0][col]}
    return out


def check_out_folder(out: Path) -> None:
    """`out` is a folder or can be made one: neither it nor a folder above it is a file."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"sits under the file {str(p)!r}"
                raise ValueError(f"`--out` must be a folder; got {str(out)!r}, which {what}.")
            return


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """Within the block, a `DamagedCheckpointWarning` is printed as one line on stderr,
    "<prog>: warning: <message>" (other warnings as usual); restored on exit."""
    from jaxvi.training.checkpoint import DamagedCheckpointWarning

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DamagedCheckpointWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"`hidden` must be comma-separated integers; got {text!r}.") from None
    if not widths:
        raise ValueError(f"`hidden` must name at least one width; got {text!r}.")
    return widths


def format_metrics(final: dict) -> str:
    keys = ["test_accuracy", "test_nmi", "test_elbo", "test_iwae", "test_clusters_used"]
    return "  ".join(f"{k} {final[k]:.4g}" for k in keys if k in final)
