"""Inclusive vs exclusive KL, through the `jaxvi.vi` API.

Fit a Gaussian q to a Gaussian mixture p with unequal weights, both ways:

* inclusive KL(p ‖ q) (forward): q must cover everywhere p has mass; for a Gaussian family the
  optimum is p's mean and covariance (moment matching);
* exclusive KL(q ‖ p) (reverse): q avoids where p has none, so it locks onto one mode, and
  which one depends on where it starts: the loss has one local minimum per mode (and some
  between modes), and a small learning rate leaves a fit stuck where it started.

Run:  python examples/kl_modes.py [--out examples/output]
Draws kl_modes_1d.png, kl_modes_2d.png (target density and both fits) and kl_modes_sweep.png
(outcomes of a sweep over learning rates and starts, all fits vmapped in one compile each), and
prints the sweep as a table and writes it to kl_modes_sweep.json. `jaxvi kl-modes` is the
same as a command, with options, and sweeps the 1-D target too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxvi import mixture, vi

LEARNING_RATES = [0.003, 0.03, 0.3]
STEPS = 400


def stack(params_list):
    """A list of parameter NamedTuples -> one NamedTuple with a leading batch axis."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params_list)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(0)
    k1, k2, k3 = jax.random.split(key, 3)

    # ---- 1-D: any distribution with log_prob/sample works as a target, e.g. distrax. ------
    w1, m1, s1 = np.array([0.5, 0.35, 0.15]), np.array([-4.5, 0.5, 5.0]), np.array([0.8, 0.6, 0.5])
    target_1d = distrax.MixtureSameFamily(
        distrax.Categorical(probs=jnp.asarray(w1)),
        distrax.MultivariateNormalDiag(jnp.asarray(m1[:, None]), jnp.asarray(s1[:, None])))
    q1 = vi.FullCovGaussian(1)
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, STEPS), b2=0.9)
    inclusive = vi.fit(target_1d, q1, "inclusive", key=k1, steps=STEPS, optimizer=optimizer,
                       num_samples=128)
    starts_1d = [-6.0, -1.5, 2.0, 4.0]
    exclusive = vi.fit_many(
        target_1d, q1, "exclusive", stack([q1.init(loc=[s], scale=1.0) for s in starts_1d]),
        key=k2, steps=STEPS, learning_rates=[0.05], num_samples=64)
    x = np.linspace(-8, 8, 600)
    fig = Figure(figsize=(7.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(x, np.exp(jax.vmap(target_1d.log_prob)(jnp.asarray(x[:, None]))),
                    color="0.85", label="target p, weights 0.5, 0.35, 0.15")

    def pdf(params):
        m, c = q1.moments(params)
        return np.exp(-0.5 * (x - m[0]) ** 2 / c[0, 0]) / np.sqrt(2 * np.pi * c[0, 0])

    ax.plot(x, pdf(inclusive.params), "C0--", lw=2, label="inclusive KL(p‖q)")
    for i, (s, colour) in enumerate(zip(starts_1d, ("C3", "C1", "C4", "C2"), strict=True)):
        ax.plot(x, pdf(jax.tree_util.tree_map(lambda a, i=i: a[0, i], exclusive.params)),
                color=colour, lw=1.3, label=f"exclusive KL(q‖p) from × at {s:g}")
        ax.plot(s, 0, "x", color=colour, ms=8, mew=2)
    ax.set(xlabel="x", ylabel="density", title="A Gaussian fitted to a 1-D mixture")
    ax.legend(fontsize=8)
    fig.savefig(out / "kl_modes_1d.png", dpi=110)

    # ---- 2-D: the library's own mixture distribution (a pytree), `jaxvi.mixture.Mixture`. ----
    weights = np.array([0.5, 0.3, 0.2], np.float32)
    locs = np.array([[-3.0, -2.0], [3.0, 0.0], [-1.0, 3.5]], np.float32)
    covs = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.8]],
                     [[0.6, -0.2], [-0.2, 0.4]]], np.float32)
    target = mixture.Mixture.from_covariance(np.log(weights), locs, covs)
    q2 = vi.FullCovGaussian(2)
    mean_p, cov_p = (np.asarray(a) for a in mixture.moments(weights, locs, covs))

    # The sweep: starts on a 5 × 5 grid, two initial scales, three learning rates.
    g = np.linspace(-5, 5, 5)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    starts = stack([q2.init(loc=p, scale=s) for s in (0.5, 2.0) for p in grid])
    k_rev, k_fwd = jax.random.split(k3)
    rev = vi.fit_many(target, q2, "exclusive", starts, key=k_rev, steps=STEPS,
                      learning_rates=LEARNING_RATES, num_samples=32)
    fwd = vi.fit_many(target, q2, "inclusive", starts, key=k_fwd, steps=STEPS,
                      learning_rates=LEARNING_RATES, num_samples=32)
    moments = jax.vmap(jax.vmap(q2.moments))
    (rev_mean, rev_cov), (fwd_mean, fwd_cov) = moments(rev.params), moments(fwd.params)
    mode, _ = vi.nearest_mode(rev_mean, locs, covs)  # −1: between modes
    mode = np.asarray(mode)
    largest = int(np.argmax(weights))
    frac = {"largest": np.mean(mode == largest, 1), "between": np.mean(mode < 0, 1)}
    frac["other"] = 1 - frac["largest"] - frac["between"]
    mean_err = np.linalg.norm(np.asarray(fwd_mean) - mean_p, axis=-1)
    cov_err = np.linalg.norm(np.asarray(fwd_cov) - cov_p, axis=(-2, -1)) / np.linalg.norm(cov_p)

    print(f"2-D target: mean {mean_p.round(3)}, cov {cov_p.round(3).tolist()}")
    print(f"{'lr':>6}  {'excl: largest':>13}  {'other':>6}  {'between':>7}  "
          f"{'incl: |Δmean| median':>20}  {'‖ΔΣ‖/‖Σ‖ median':>15}  {'max':>6}")
    for i, lr in enumerate(LEARNING_RATES):
        print(f"{lr:>6g}  {frac['largest'][i]:>13.0%}  {frac['other'][i]:>6.0%}  "
              f"{frac['between'][i]:>7.0%}  {np.median(mean_err[i]):>20.3f}  "
              f"{np.median(cov_err[i]):>15.3f}  {cov_err[i].max():>6.3f}")

    (out / "kl_modes_sweep.json").write_text(json.dumps({
        "target": {"weights": weights.tolist(), "loc": locs.tolist(), "cov": covs.tolist(),
                   "mean": mean_p.tolist(), "covariance": cov_p.tolist()},
        "steps": STEPS, "num_starts": int(mode.shape[1]),
        "rows": [{"learning_rate": lr,
                  "exclusive": {k: float(frac[k][i]) for k in ("largest", "other", "between")},
                  "inclusive": {"mean_error_median": float(np.median(mean_err[i])),
                                "mean_error_max": float(mean_err[i].max()),
                                "cov_rel_error_median": float(np.median(cov_err[i])),
                                "cov_rel_error_max": float(cov_err[i].max())}}
                 for i, lr in enumerate(LEARNING_RATES)]}, indent=2))

    # Figure: the density, the inclusive fit and one exclusive fit per mode reached.
    def ellipse(m, c):
        t = np.linspace(0, 2 * np.pi, 100)
        return m + 2 * np.stack([np.cos(t), np.sin(t)], -1) @ np.linalg.cholesky(c).T

    lr_i = LEARNING_RATES.index(0.03)
    gx = np.linspace(-6, 6, 160)
    xx, yy = np.meshgrid(gx, gx)
    dens = np.exp(target.log_prob(jnp.asarray(np.stack([xx, yy], -1))))
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.contourf(xx, yy, dens, levels=14, cmap="Greys")
    ax.plot(*ellipse(fwd_mean[lr_i, 0], fwd_cov[lr_i, 0]).T, "C0--", lw=2,
            label="inclusive KL(p‖q) (2σ)")
    for j, k in enumerate(sorted(set(mode[lr_i].tolist()))):
        b = int(np.flatnonzero(mode[lr_i] == k)[0])
        colour = ("C3", "C1", "C4", "C2")[j % 4]
        ax.plot(*ellipse(rev_mean[lr_i, b], rev_cov[lr_i, b]).T, color=colour, lw=1.5,
                label="exclusive KL(q‖p) (2σ), from the × of its colour" if j == 0 else None)
        ax.plot(*grid[b % len(grid)], "x", color=colour, ms=8, mew=2)
    ax.set(aspect="equal", xlabel="x₁", ylabel="x₂",
           title="2-D mixture, weights 0.5, 0.3, 0.2 (Adam, lr 0.03)")
    fig.legend(loc="outside lower center", fontsize=8, ncols=2)
    fig.savefig(out / "kl_modes_2d.png", dpi=110)

    # Figure: the sweep, where the exclusive fits end and how far the inclusive ones miss.
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    labels = [f"{lr:g}" for lr in LEARNING_RATES]
    bottom = np.zeros(len(LEARNING_RATES))
    for name, colour in (("largest", "C2"), ("other", "C1"), ("between", "C7")):
        ax1.bar(labels, frac[name], bottom=bottom, color=colour, label=name)
        bottom += frac[name]
    ax1.set(xlabel="learning rate", ylabel="fraction of 50 starts",
            title="exclusive: where the fit ends")
    ax1.legend(fontsize=8)
    ax2.semilogy(labels, np.median(mean_err, 1), "o-", label="|Δmean| (median)")
    ax2.semilogy(labels, np.median(cov_err, 1), "s-", label="‖ΔΣ‖/‖Σ‖ (median)")
    ax2.set(xlabel="learning rate", title="inclusive: distance from p's moments")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{STEPS} Adam steps (cosine decay) from 50 starts per learning rate")
    fig.savefig(out / "kl_modes_sweep.png", dpi=100)
    print(f"wrote {out}/kl_modes_1d.png, kl_modes_2d.png, kl_modes_sweep.png, "
          "kl_modes_sweep.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    main(parser.parse_args().out)
