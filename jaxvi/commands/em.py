"""`jaxvi em DATA.npy --components K`: fit a Gaussian mixture by EM, print the log-likelihood,
BIC and weights, save the parameters (.npz) and optionally plot the fit (PNG).

The data, the options and both output paths are checked before the fit: an output that is a
folder or sits under a file, or that would replace an earlier result without `--overwrite`,
is refused then (exit 2), not after the fit has run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxvi.commands import _em_variational


def register(subparsers) -> None:
    from jaxvi.cli import add_process_options

    p = subparsers.add_parser(
        "em",
        help="fit a Gaussian mixture by EM (or by variational Bayes)",
        description="Fit a Gaussian mixture to the rows of a .npy array (N, D) by EM (float64). "
        "Prints the mean log-likelihood, BIC and weights; saves weights, means, covariances "
        "and the log-likelihood history to --out; --plot draws the data (first two features) "
        "with each component's 2-sigma ellipse and the log-likelihood curve. --variational "
        "fits by variational Bayes instead (K is then an upper bound: the weight prior "
        "switches off the components the data do not need).",
    )
    p.add_argument("data", help="a .npy file holding an (N, D) array")
    p.add_argument("--components", "-k", type=int, required=True, help="mixture components K")
    p.add_argument("--covariance-type", default="full",
                   choices=["full", "tied", "diag", "spherical"])
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-3,
                   help="stop when the mean log-likelihood changes less (default 1e-3)")
    p.add_argument("--n-init", type=int, default=1, help="restarts, run batched (default 1)")
    p.add_argument("--reg-covar", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gmm_params.npz",
                   help="parameters file (.npz; the suffix is added when missing)")
    p.add_argument("--plot", default=None,
                   help="write a picture of the fit here (PNG; .png is added when there is no "
                   "suffix)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier --out / --plot (without it they are refused)")
    _em_variational.add_arguments(p)
    add_process_options(p)
    p.set_defaults(func=run)


def load_points(path: str) -> np.ndarray:
    """This process's rows (all of them for a single process; `jaxvi.processes.local_rows`)
    of the (N, D) float64 data of a .npy file (an (N,) array is one feature), read safely
    from a memory map; a `ValueError` naming the file for anything else (see
    `jaxvi.data.read_arrays`)."""
    from jaxvi import data, processes

    where = f"`data` file {str(path)!r}"
    x = data.read_arrays(path, "data", formats=(".npy",), mmap=True)["x"]
    if x.ndim > 0:
        x = processes.local_rows(x)
    data.check_real_values(x, where, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{where} must hold an (N, D) or (N,) array; got shape {x.shape}.")
    return x


def output_paths(args) -> tuple[Path, Path | None]:
    """The files `run` will write, as numpy and matplotlib name them (--out gets .npz when it
    lacks it; --plot gets .png when it has no suffix), checked before the fit."""
    from jaxvi.cli import check_output_file

    out = str(args.out)
    out = Path(out if out.endswith(".npz") else out + ".npz")
    check_output_file("--out", out, overwrite=args.overwrite)
    if out.exists() and not _is_em_result(out):
        raise ValueError(f"`--out` {str(out)!r} exists and is not a result of `jaxvi em` "
                         "(an .npz holding weights, means, covariances and covariance_type); "
                         "--overwrite replaces only such a file: choose another path.")
    plot = None
    if args.plot is not None:
        plot = Path(args.plot)
        if not plot.suffix:
            plot = plot.with_name(plot.name + ".png")
        formats = _image_formats()
        if plot.suffix[1:].lower() not in formats:
            raise ValueError(f"`--plot` {str(plot)!r} must end in an image suffix ("
                             f"{', '.join('.' + f for f in sorted(formats))}); got "
                             f"{plot.suffix!r}.")
        check_output_file("--plot", plot, overwrite=args.overwrite)
    return out, plot


_RESULT_KEYS = {"weights", "means", "covariances", "covariance_type"}


def _is_em_result(path: Path) -> bool:
    """Whether the file `path` is an .npz that `jaxvi em` wrote (it holds `_RESULT_KEYS`)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            return _RESULT_KEYS <= set(saved.files)
    except Exception:  # not an .npz at all (numpy raises several kinds)
        return False


def _image_formats() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def check_args(args) -> None:
    for flag, value in (("--tol", args.tol), ("--reg-covar", args.reg_covar)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"`{flag}` must be a finite number >= 0; got {value}.")


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    from jaxvi import distributed, em, processes
    from jaxvi.cli import join_processes, save_result
    from jaxvi.em.kernels import count_parameters, log_prob_kernel
    from jaxvi.em.plots import plot_fit, save_figure

    several = join_processes(args)
    x = load_points(args.data)  # this process's rows
    check_args(args)
    _em_variational.check_args(args)
    out, plot = output_paths(args)
    if args.variational is not None:
        return _em_variational.run(args, x, out, plot,
                                   mesh=distributed.data_mesh() if several else None)
    with jax.enable_x64(True):
        xj = jnp.asarray(x, jnp.float64)
        result = em.fit(xj, args.components, key=jax.random.key(args.seed),
                        covariance_type=args.covariance_type, max_iter=args.max_iter,
                        tol=args.tol, n_init=args.n_init, reg_covar=args.reg_covar,
                        mesh=distributed.data_mesh() if several else None)
        gmm = jax.tree.map(np.asarray, result.gmm)  # replicated: every process has it all
        n, sum_ll = processes.sum_over_processes(
            (x.shape[0], np.sum(np.asarray(log_prob_kernel(xj, gmm)))))
        n, mean_ll = int(n), float(sum_ll) / int(n)
        n_params = count_parameters(args.covariance_type, *gmm.means.shape)
        bic = -2.0 * float(sum_ll) + n_params * math.log(n)
        n_iter = int(result.n_iter)
        history = np.asarray(result.history)[:n_iter]
        if not processes.is_main_process():
            return 0
        weights = np.asarray(gmm.weights)
        where = f" over {jax.process_count()} processes" if several else ""
        print(f"data: {n} points, {x.shape[1]} features{where}; K = {args.components}, "
              f"covariance_type = {args.covariance_type}")
        status = "converged" if bool(result.converged) else "not converged"
        print(f"EM iterations: {n_iter} ({status})")
        print(f"mean log-likelihood: {mean_ll:.6f}")
        print(f"BIC: {bic:.3f}")
        print("weights: " + " ".join(f"{w:.4f}" for w in weights))
        save_result(out, weights=weights, means=np.asarray(gmm.means),
                 covariances=np.asarray(gmm.covariances),
                 covariance_type=np.asarray(args.covariance_type),
                 log_likelihood=np.asarray(mean_ll), bic=np.asarray(bic), history=history)
        print(f"saved {out}")
        if plot is not None:
            save_figure(plot_fit(x, gmm, history), plot)
            print(f"saved {plot}")
    return 0
