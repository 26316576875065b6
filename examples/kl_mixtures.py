"""KL between two 2-D Gaussian mixtures as one of them slides sideways.

p is fixed; q is a second mixture moved along the x axis by a shift s. For each s we compute,
in one batched call each, the Monte Carlo estimate of KL(p ‖ q_s) with ±2 standard errors, the
matched upper bound (joint convexity with the best one-to-one matching of components), the
Hershey–Olsen variational approximation and variational upper bound, and the Durrieu et al.
lower bound. The left panel shows the densities at three shifts; the right panel the curves.

    python examples/kl_mixtures.py [OUTPUT.png] [--num-samples N] [--seed S]

Writes examples/output/kl_mixtures.png by default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxvi import kl  # noqa: E402
from jaxvi.mixture import Mixture  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output" / "kl_mixtures.png"


def make_mixtures():
    """p: 3 components; q: 3 components (its own shape), before any shift."""
    p = Mixture.from_covariance(
        jnp.log(jnp.array([0.5, 0.3, 0.2])),
        jnp.array([[-1.5, 0.0], [1.5, 1.0], [0.5, -1.5]]),
        jnp.array([[[0.6, 0.25], [0.25, 0.4]], [[0.3, 0.0], [0.0, 0.5]],
                   [[0.4, -0.1], [-0.1, 0.3]]]),
    )
    q = Mixture.from_covariance(
        jnp.log(jnp.array([0.4, 0.4, 0.2])),
        jnp.array([[-1.0, 0.5], [1.0, 0.5], [0.0, -1.0]]),
        jnp.array([[[0.8, 0.0], [0.0, 0.8]], [[0.5, 0.2], [0.2, 0.6]],
                   [[0.6, 0.0], [0.0, 0.3]]]),
    )
    return p, q


def shifted(q: Mixture, shifts: jax.Array) -> Mixture:
    """A batch of copies of q, the s-th moved by shifts[s] along x. -> batch (S,)."""
    offset = jnp.stack([shifts, jnp.zeros_like(shifts)], axis=-1)[:, None, :]  # (S, 1, 2)
    s = shifts.shape[0]
    return Mixture(jnp.broadcast_to(q.logits, (s, *q.logits.shape)),
                   q.loc[None] + offset,
                   jnp.broadcast_to(q.scale_tril, (s, *q.scale_tril.shape)))


def compute(shifts, num_samples: int, seed: int) -> dict:
    p, q0 = make_mixtures()
    q = shifted(q0, shifts)
    p_batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (shifts.shape[0], *a.shape)), p)
    mc = kl.mixture_monte_carlo(jax.random.key(seed), p_batch, q, num_samples)
    return {
        "monte_carlo": np.asarray(mc.estimate),
        "stderr": np.asarray(mc.stderr),
        "matched upper bound": np.asarray(kl.mixture_matched_upper_bound(p, q)),
        "variational upper bound (Hershey–Olsen)": np.asarray(
            kl.mixture_variational_upper_bound(p, q)),
        "variational approx. (Hershey–Olsen)": np.asarray(kl.mixture_variational(p, q)),
        "lower bound (Durrieu et al.)": np.asarray(kl.mixture_lower_bound(p, q)),
    }


def _density(mix: Mixture, xx, yy):
    grid = jnp.stack([xx, yy], axis=-1)
    return np.exp(np.asarray(jax.jit(mix.log_prob)(grid)))


def plot(shifts, results, path: Path) -> None:
    p, q0 = make_mixtures()
    fig, (ax_d, ax_k) = plt.subplots(1, 2, figsize=(12, 4.8),
                                     gridspec_kw={"width_ratios": [1, 1.3]})
    xs = np.linspace(-6.5, 6.5, 220)
    ys = np.linspace(-3.5, 3.5, 120)
    xx, yy = np.meshgrid(xs, ys)
    ax_d.contour(xx, yy, _density(p, xx, yy), levels=6, colors="k", linewidths=1.2)
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for s, c in zip((-3.0, 0.0, 3.0), colors, strict=True):
        q = jax.tree.map(lambda a: a[0], shifted(q0, jnp.array([s])))
        ax_d.contour(xx, yy, _density(q, xx, yy), levels=4, colors=c, linewidths=0.9,
                     linestyles="--")
        ax_d.plot([], [], "--", color=c, label=f"q shifted by {s:+.0f}")
    ax_d.plot([], [], "-", color="k", label="p")
    ax_d.set_title("densities: p (solid) and q at three shifts (dashed)")
    ax_d.set_aspect("equal")
    ax_d.legend(loc="upper left", fontsize=8)

    mc, se = results["monte_carlo"], results["stderr"]
    ax_k.fill_between(shifts, mc - 2 * se, mc + 2 * se, color="0.8", label="Monte Carlo ± 2 s.e.")
    ax_k.errorbar(shifts, mc, yerr=2 * se, fmt="o", ms=3, color="k", label="Monte Carlo")
    styles = {
        "matched upper bound": ("tab:red", "-"),
        "variational upper bound (Hershey–Olsen)": ("tab:purple", "-."),
        "variational approx. (Hershey–Olsen)": ("tab:blue", "--"),
        "lower bound (Durrieu et al.)": ("tab:green", ":"),
    }
    for name, (color, ls) in styles.items():
        ax_k.plot(shifts, results[name], ls, color=color, lw=1.8, label=name)
    ax_k.set_xlabel("shift of q along x")
    ax_k.set_ylabel("KL(p ‖ q)  [nats]")
    ax_k.set_yscale("symlog", linthresh=1.0)
    ax_k.set_title("KL between Gaussian mixtures: bounds, approximation, Monte Carlo")
    ax_k.legend(fontsize=8, loc="upper center")
    ax_k.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(DEFAULT_OUTPUT), help="PNG to write")
    parser.add_argument("--num-samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-shifts", type=int, default=25)
    args = parser.parse_args(argv)
    shifts = jnp.linspace(-5.0, 5.0, args.num_shifts)
    results = compute(shifts, args.num_samples, args.seed)
    lower, upper = results["lower bound (Durrieu et al.)"], np.minimum(
        results["matched upper bound"], results["variational upper bound (Hershey–Olsen)"])
    slack = 3 * results["stderr"]
    inside = (lower - slack <= results["monte_carlo"]) & (results["monte_carlo"] <= upper + slack)
    header = ("shift", "lower", "approx", "MC", "±se", "matched", "var.up")
    print(" ".join(f"{h:>{6 if h in ('shift', '±se') else 8}}" for h in header))
    for i, s in enumerate(np.asarray(shifts)):
        print(f"{s:6.2f} {lower[i]:8.3f} {results['variational approx. (Hershey–Olsen)'][i]:8.3f} "
              f"{results['monte_carlo'][i]:8.3f} {results['stderr'][i]:6.3f} "
              f"{results['matched upper bound'][i]:8.3f} "
              f"{results['variational upper bound (Hershey–Olsen)'][i]:8.3f}")
    print(f"Monte Carlo inside [lower, upper] (±3 s.e.) at {int(inside.sum())}/{inside.size} "
          "shifts")
    path = Path(args.output)
    plot(np.asarray(shifts), results, path)
    print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
