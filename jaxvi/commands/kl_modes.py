"""`jaxvi kl-modes`: a Gaussian fitted to a mixture by either direction of the KL.

For a 1-D and a 2-D Gaussian mixture with unequal weights, fits a full-covariance Gaussian by
the exclusive KL(q ‖ p) and the inclusive KL(p ‖ q) from a grid of initial locations and
scales, for every learning rate given (all fits of one target, both directions, are one jitted
program of vmapped `jaxvi.vi.fit_many` loops: one compile per target). Prints a table:
where the exclusive fits end (the largest mode, another mode, between modes) and how far the
inclusive fits are from the target's mean and covariance, which is where the inclusive optimum
lies for a Gaussian family. Writes kl_modes_1d.png, kl_modes_2d.png, kl_modes_sweep.png and
kl_modes_sweep.json into --out (an earlier run's files there are replaced only with
--overwrite).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import vi
from jaxvi.mixture import Mixture

OUTCOMES = ("largest", "other", "between")


class MixtureSpec(NamedTuple):
    name: str
    weights: np.ndarray  # (K,)
    locs: np.ndarray  # (K, D)
    covs: np.ndarray  # (K, D, D)
    box: tuple[float, float]  # range of the initial locations (and the plot) on each axis

    def distribution(self) -> Mixture:
        return Mixture.from_covariance(np.log(self.weights), self.locs, self.covs)

    def density(self, x: np.ndarray) -> np.ndarray:
        """p(x) as numpy, for plotting. x: (N, D) -> (N,)."""
        return np.exp(np.asarray(self.distribution().log_prob(jnp.asarray(x))))

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and covariance (D, D) in float64 numpy, for the JSON report."""
        w, m, c = (np.asarray(a, np.float64) for a in (self.weights, self.locs, self.covs))
        mean = w @ m
        centred = m - mean
        return mean, np.einsum("k,kij->ij", w, c) + np.einsum("k,ki,kj->ij", w, centred, centred)


TARGET_1D = MixtureSpec(
    "1d", np.array([0.5, 0.35, 0.15]), np.array([[-4.5], [0.5], [5.0]]),
    np.array([[[0.8**2]], [[0.6**2]], [[0.5**2]]]), (-7.0, 7.0))
TARGET_2D = MixtureSpec(
    "2d", np.array([0.5, 0.3, 0.2]), np.array([[-3.0, -2.0], [3.0, 0.0], [-1.0, 3.5]]),
    np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.8]], [[0.6, -0.2], [-0.2, 0.4]]]),
    (-5.0, 5.0))


def initial_params(spec: MixtureSpec, grid: int, scales) -> vi.GaussianParams:
    """A (grid^D·len(scales))-batch of full-Gaussian parameters: locations on a grid over the
    box (grid² points on the line in 1-D), each with every initial scale."""
    d = spec.locs.shape[1]
    axis = np.linspace(*spec.box, grid * grid if d == 1 else grid)
    locs = np.stack(np.meshgrid(*([axis] * d), indexing="ij"), -1).reshape(-1, d)
    family = vi.FullCovGaussian(d)
    batch = [family.init(loc=loc, scale=s) for s in scales for loc in locs]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *batch)


def sweep(spec: MixtureSpec, *, key, learning_rates, grid: int, scales, steps: int,
          num_samples: int) -> dict:
    """Both directions from every initialisation at every learning rate; numpy results."""
    target = spec.distribution()
    family = vi.FullCovGaussian(spec.locs.shape[1])
    init = initial_params(spec, grid, scales)
    directions = ("reverse", "forward")

    @jax.jit  # both directions and the mode read-out in one program: one compile per target
    def fit_both(k):
        fits = [vi.fit_many(target, family, d, init, key=kd, steps=steps,
                            learning_rates=learning_rates, num_samples=num_samples)
                for d, kd in zip(directions, jax.random.split(k), strict=True)]
        moments = [jax.vmap(jax.vmap(family.moments))(f.params) for f in fits]
        mode, _ = vi.nearest_mode(moments[0][0], spec.locs, spec.covs)
        return fits, moments, mode

    out = {"init_loc": np.asarray(init.loc), "init_scale": np.repeat(
        np.asarray(scales, float), init.loc.shape[0] // len(scales))}
    fits, moments, mode = fit_both(key)
    for direction, res, (mean, cov) in zip(directions, fits, moments, strict=True):
        out[direction] = {"mean": np.asarray(mean, np.float64),
                          "cov": np.asarray(cov, np.float64),
                          "final_loss": np.asarray(jnp.mean(res.history[..., -20:], -1))}
    # index of the mode each exclusive fit ended on (−1: between modes): (L, B)
    out["reverse"]["mode"] = np.asarray(mode)
    return out


def summarise(spec: MixtureSpec, result: dict, learning_rates) -> list[dict]:
    """Per learning rate: exclusive outcome fractions, inclusive moment errors."""
    idx = result["reverse"]["mode"]
    largest = int(np.argmax(spec.weights))
    mean_p, cov_p = spec.moments()
    rows = []
    for i, lr in enumerate(learning_rates):
        n = idx.shape[1]
        outcome = {"largest": float(np.mean(idx[i] == largest)),
                   "between": float(np.mean(idx[i] < 0))}
        outcome["other"] = 1.0 - outcome["largest"] - outcome["between"]
        on_mode = idx[i] >= 0
        var_ratio = float("nan")
        if on_mode.any():
            # (det Σ_fit / det Σ_mode)^(1/D) for the fits that ended on a mode.
            fit_ld = np.linalg.slogdet(result["reverse"]["cov"][i][on_mode])[1]
            mode_ld = np.linalg.slogdet(spec.covs[idx[i][on_mode]])[1]
            var_ratio = float(np.median(np.exp((fit_ld - mode_ld) / spec.locs.shape[1])))
        m_err = np.linalg.norm(result["forward"]["mean"][i] - mean_p, axis=-1)
        c_err = (np.linalg.norm(result["forward"]["cov"][i] - cov_p, axis=(-2, -1))
                 / np.linalg.norm(cov_p))
        rows.append({
            "target": spec.name, "learning_rate": float(lr), "num_fits": int(n),
            "exclusive": {**{k: outcome[k] for k in OUTCOMES},
                          "median_variance_ratio_on_mode": var_ratio},
            "inclusive": {"mean_error_median": float(np.median(m_err)),
                          "mean_error_max": float(np.max(m_err)),
                          "cov_rel_error_median": float(np.median(c_err)),
                          "cov_rel_error_max": float(np.max(c_err))},
        })
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("target", "lr", "fits", "excl: largest", "other", "between", "var ratio",
            "incl: |Δmean| med", "max", "‖ΔΣ‖/‖Σ‖ med", "max")
    body = [(r["target"], f"{r['learning_rate']:g}", str(r["num_fits"]),
             *(f"{r['exclusive'][k]:.0%}" for k in OUTCOMES),
             f"{r['exclusive']['median_variance_ratio_on_mode']:.2f}",
             *(f"{r['inclusive'][k]:.3f}" for k in ("mean_error_median", "mean_error_max",
                                                    "cov_rel_error_median", "cov_rel_error_max")))
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


# --------------------------------------------------------------------------------------------
# Pictures (matplotlib's object API: no pyplot state).
# --------------------------------------------------------------------------------------------


def _picks(spec: MixtureSpec, result: dict, lr_index: int) -> list[int]:
    """One exclusive fit per distinct outcome (each mode reached, and between if any)."""
    idx = result["reverse"]["mode"][lr_index]
    return [int(np.flatnonzero(idx == k)[0]) for k in sorted(set(idx.tolist()))]


def plot_1d(spec: MixtureSpec, result: dict, lr_index: int, lr: float, path: Path) -> None:
    from matplotlib.figure import Figure

    x = np.linspace(spec.box[0] - 1, spec.box[1] + 1, 600)
    dens = spec.density(x[:, None])
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(x, dens, color="0.85", label="target p (weights "
                    + ", ".join(f"{w:g}" for w in spec.weights) + ")")

    def normal(m, var):
        return np.exp(-0.5 * (x - m) ** 2 / var) / np.sqrt(2 * np.pi * var)

    fwd_m, fwd_c = result["forward"]["mean"][lr_index, 0], result["forward"]["cov"][lr_index, 0]
    ax.plot(x, normal(fwd_m[0], fwd_c[0, 0]), "C0--", lw=2, label="inclusive KL(p‖q) fit")
    for j, i in enumerate(_picks(spec, result, lr_index)):
        m, c = result["reverse"]["mean"][lr_index, i], result["reverse"]["cov"][lr_index, i]
        ax.plot(x, normal(m[0], c[0, 0]), color="C3", lw=1.5,
                label="exclusive KL(q‖p) fits" if j == 0 else None)
        ax.plot(result["init_loc"][i, 0], 0, "C3x")
    ax.set(xlabel="x", ylabel="density",
           title=f"Gaussian fits to a 1-D mixture (Adam, lr {lr:g}; × = exclusive starts)")
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=110)


def _ellipse(mean, cov, r=2.0, n=100):
    t = np.linspace(0, 2 * np.pi, n)
    return mean + r * np.stack([np.cos(t), np.sin(t)], -1) @ np.linalg.cholesky(cov).T


def plot_2d(spec: MixtureSpec, result: dict, lr_index: int, lr: float, path: Path) -> None:
    from matplotlib.figure import Figure

    g = np.linspace(spec.box[0] - 1, spec.box[1] + 1, 160)
    xx, yy = np.meshgrid(g, g)
    dens = spec.density(np.stack([xx.ravel(), yy.ravel()], -1)).reshape(xx.shape)
    fig = Figure(figsize=(6.0, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.contourf(xx, yy, dens, levels=14, cmap="Greys")
    e = _ellipse(result["forward"]["mean"][lr_index, 0], result["forward"]["cov"][lr_index, 0])
    ax.plot(*e.T, "C0--", lw=2, label="inclusive KL(p‖q) fit (2σ)")
    for j, i in enumerate(_picks(spec, result, lr_index)):
        e = _ellipse(result["reverse"]["mean"][lr_index, i], result["reverse"]["cov"][lr_index, i])
        ax.plot(*e.T, color="C3", lw=1.5, label="exclusive KL(q‖p) fits (2σ)" if j == 0 else None)
        ax.plot(*result["init_loc"][i], "C3x")
    ax.set(xlabel="x₁", ylabel="x₂", aspect="equal",
           title=f"2-D mixture, weights {', '.join(f'{w:g}' for w in spec.weights)} (lr {lr:g})")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)


def plot_sweep(spec: MixtureSpec, result: dict, learning_rates, path: Path) -> None:
    """Where each exclusive fit started, coloured by where it ended, one panel per rate."""
    from matplotlib.figure import Figure

    idx = result["reverse"]["mode"]
    largest = int(np.argmax(spec.weights))
    n = len(learning_rates)
    fig = Figure(figsize=(3.6 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    colours = {"largest": "C2", "other": "C1", "between": "C7"}
    small = result["init_scale"] == result["init_scale"].min()
    for i, (ax, lr) in enumerate(zip(axes, learning_rates, strict=True)):
        kind = np.where(idx[i] == largest, "largest", np.where(idx[i] < 0, "between", "other"))
        for name, colour in colours.items():
            sel = (kind == name) & small
            ax.scatter(*result["init_loc"][sel].T, s=22, color=colour, label=f"ends: {name}")
        ends = result["reverse"]["mean"][i][small]
        ax.scatter(*ends.T, s=10, marker="x", color="k", label="final means")
        ax.scatter(*spec.locs.T, s=90, marker="*", color="C3", label="modes")
        ax.set(title=f"lr {lr:g}", aspect="equal",
               xlim=(spec.box[0] - 1, spec.box[1] + 1), ylim=(spec.box[0] - 1, spec.box[1] + 1))
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Exclusive KL: starts (init scale {result['init_scale'].min():g}) coloured "
                 "by where the fit ends")
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------------------------


def run_kl_modes(out: Path, *, learning_rates, grid: int, scales, steps: int,
                 num_samples: int, seed: int, plot_lr: float) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    learning_rates = [float(lr) for lr in learning_rates]
    lr_index = int(np.argmin(np.abs(np.log(learning_rates) - np.log(plot_lr))))
    # "rbg" keys: the RngBitGenerator op compiles far faster on CPU than threefry, and the
    # sweep is compile-bound; the statistics do not depend on the generator.
    key = jax.random.key(seed, impl="rbg")
    rows, start = [], time.perf_counter()
    for spec, k in zip((TARGET_1D, TARGET_2D), jax.random.split(key), strict=True):
        result = sweep(spec, key=k, learning_rates=learning_rates, grid=grid, scales=scales,
                       steps=steps, num_samples=num_samples)
        rows += summarise(spec, result, learning_rates)
        plot = plot_1d if spec.locs.shape[1] == 1 else plot_2d
        plot(spec, result, lr_index, learning_rates[lr_index], out / f"kl_modes_{spec.name}.png")
        if spec.locs.shape[1] == 2:
            plot_sweep(spec, result, learning_rates, out / "kl_modes_sweep.png")
    elapsed = time.perf_counter() - start
    config = {"learning_rates": learning_rates, "grid": grid, "init_scales": list(scales),
              "steps": steps, "num_samples": num_samples, "seed": seed,
              "optimizer": "adam (b2=0.9), cosine decay from lr to 0",
              "family": "full-covariance Gaussian",
              "between_rule": "Mahalanobis distance > 1 from every mode"}
    targets = {s.name: {"weights": s.weights.tolist(), "locs": s.locs.tolist(),
                        "covs": s.covs.tolist(), "mean": s.moments()[0].tolist(),
                        "cov": s.moments()[1].tolist()} for s in (TARGET_1D, TARGET_2D)}
    (out / "kl_modes_sweep.json").write_text(json.dumps(
        {"config": config, "targets": targets, "sweep": rows, "elapsed_s": elapsed,
         "device": jax.devices()[0].device_kind}, indent=2))
    return rows


OUTPUTS = ("kl_modes_1d.png", "kl_modes_2d.png", "kl_modes_sweep.png", "kl_modes_sweep.json")


def check_args(args) -> Path:
    """Every option, and --out (a folder or creatable, not holding an earlier run's files
    unless --overwrite), before anything is computed or written. -> the output folder."""
    from jaxvi.cli import check_output_dir

    for name in ("steps", "grid", "num_samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"`--{name.replace('_', '-')}` must be a positive integer; got "
                             f"{getattr(args, name)}.")
    for name in ("learning_rates", "init_scales", "plot_lr"):
        values = np.asarray(getattr(args, name), float)
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"`--{name.replace('_', '-')}` must be positive and finite; got "
                             f"{getattr(args, name)}.")
    return check_output_dir("--out", args.out, OUTPUTS, overwrite=args.overwrite)


def _main(args) -> int:
    out = check_args(args)
    start = time.perf_counter()
    rows = run_kl_modes(out, learning_rates=args.learning_rates, grid=args.grid,
                        scales=args.init_scales, steps=args.steps, num_samples=args.num_samples,
                        seed=args.seed, plot_lr=args.plot_lr)
    print(format_table(rows))
    print(f"\nexclusive: where the fitted mean ends (largest-weight mode / another mode / more "
          f"than 1σ from every mode); var ratio: (det Σ_fit/det Σ_mode)^(1/D) on a mode.\n"
          f"inclusive: distance of the fitted mean and covariance from the target's moments.\n"
          f"wrote {out}/kl_modes_1d.png, kl_modes_2d.png, kl_modes_sweep.png, "
          f"kl_modes_sweep.json ({time.perf_counter() - start:.1f} s)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kl-modes", help="fit a Gaussian to mixtures by inclusive and exclusive KL",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="kl_modes_out", help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier run in --out (refused without it)")
    p.add_argument("--steps", type=int, default=400, help="optimizer steps per fit")
    p.add_argument("--learning-rates", type=float, nargs="+", default=[0.003, 0.03, 0.3],
                   help="Adam peak learning rates (cosine decay to 0)")
    p.add_argument("--grid", type=int, default=5,
                   help="initial locations per axis (grid² on the line in 1-D)")
    p.add_argument("--init-scales", type=float, nargs="+", default=[0.5, 2.0],
                   help="initial standard deviations")
    p.add_argument("--num-samples", type=int, default=32, help="Monte Carlo samples per step")
    p.add_argument("--plot-lr", type=float, default=0.03,
                   help="learning rate whose fits are drawn (nearest in the sweep)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_main)
