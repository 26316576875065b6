"""Pictures of a fitted `GMM`: `plot_fit` draws the data with each component's 1- and 2-sigma
ellipses beside the mean log-likelihood per EM iteration (used by `jaxvi em --plot` and
`examples/em_gmm.py`); `plot_variational_fit` draws a variational fit's surviving components
beside all its weights (`jaxvi em --variational --plot`, `examples/vb_gmm.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxvi.em import covariance


def _covariances_2d(gmm) -> np.ndarray:
    """Each component's covariance over the first two features, (K, 2, 2)."""
    k, d = gmm.means.shape
    full = covariance.of(gmm.covariance_type).dense(gmm.covariances, k, d)
    if full.shape[-1] == 1:
        full = np.pad(full, ((0, 0), (0, 1), (0, 1)))
    return full[:, :2, :2]


def _first_two(a: np.ndarray) -> np.ndarray:
    """The first two columns of a: (N, D), a zero column added when D = 1."""
    return a[:, :2] if a.shape[1] >= 2 else np.c_[a[:, 0], np.zeros(len(a))]


def _draw_components(ax, x, gmm, keep=None) -> None:
    """Data x: (N, D) (first two features) on ax with the 1- and 2-sigma ellipses, mean and
    weight of each component of `gmm` where keep: (K,) bool (all when None)."""
    from matplotlib import colormaps
    from matplotlib.patches import Ellipse

    x2 = _first_two(np.asarray(x))
    means2 = _first_two(np.asarray(gmm.means))
    covs = _covariances_2d(gmm)
    weights = np.asarray(gmm.weights)
    keep = np.ones(len(weights), bool) if keep is None else np.asarray(keep)
    ax.scatter(x2[:, 0], x2[:, 1], s=4, alpha=0.35, color="0.35", linewidths=0)
    colors = colormaps["tab10"](np.arange(int(keep.sum())) % 10)
    for m, c, w, col in zip(means2[keep], covs[keep], weights[keep], colors, strict=True):
        vals, vecs = np.linalg.eigh(c)
        vals = np.maximum(vals, 0.0)
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        for n_sigma in (1, 2):
            ax.add_patch(Ellipse(m, 2 * n_sigma * np.sqrt(vals[-1]), 2 * n_sigma * np.sqrt(vals[0]),
                                 angle=angle, fill=False, color=col, lw=2.0 / n_sigma))
        ax.plot(*m, marker="x", color=col, ms=8, mew=2)
        ax.annotate(f"{w:.2f}", m, xytext=(5, 5), textcoords="offset points", color=col)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]" if np.ndim(x) == 2 and np.shape(x)[1] >= 2 else "")
    ax.set_aspect("equal", adjustable="datalim")


def subplots(*grid, figsize, **kwargs):
    """A new matplotlib Figure (not pyplot's: no backend is chosen or switched, and nothing is
    kept open) and its `Figure.subplots(*grid, **kwargs)`. -> (fig, axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _save(fig, path) -> None:
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_fit(x, gmm, history, path, title: str | None = None) -> None:
    """Data x: (N, D) (first two features) with each component's 1- and 2-sigma ellipses,
    beside the mean log-likelihood per EM iteration history: (n_iter,). Writes a PNG to
    `path`."""
    fig, (ax, ax_ll) = subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    _draw_components(ax, x, gmm)
    ax.set_title(title or f"{gmm.means.shape[0]} components ({gmm.covariance_type}), 1σ and 2σ")
    hist = np.asarray(history)
    ax_ll.plot(np.arange(1, len(hist) + 1), hist, marker="o", ms=3)
    ax_ll.set_xlabel("EM iteration")
    ax_ll.set_ylabel("mean log-likelihood")
    ax_ll.set_title("log-likelihood never decreases")
    ax_ll.grid(alpha=0.3)
    _save(fig, path)


def plot_variational_fit(x, gmm, path, *, threshold: float, history=None,
                         compare_weights=None, compare_label: str = "EM",
                         title: str | None = None) -> None:
    """A variational fit with more components than the data need: data x: (N, D) (first two
    features) with the ellipses of the components of `gmm` (the posterior-mean mixture)
    whose weight exceeds `threshold`; beside it all K weights as bars, largest first, on a
    log scale with the threshold drawn (and compare_weights: (K,), e.g. EM's, sorted the
    same way beside them); and, given history: (n_iter,), the lower bound per iteration.
    Writes a PNG to `path`."""
    from matplotlib.ticker import MaxNLocator

    weights = np.asarray(gmm.weights)
    keep = weights > threshold
    panels = 3 if history is not None else 2
    fig, axes = subplots(1, panels, figsize=(5.5 * panels, 4.8))
    _draw_components(axes[0], x, gmm, keep)
    axes[0].set_title(title or f"{int(keep.sum())} of {len(weights)} components above "
                      f"weight {threshold:g}")
    ax_w = axes[1]
    rank = np.arange(1, len(weights) + 1)
    floor = 1e-6  # bars of weights below it end there on the log scale
    width = 0.4 if compare_weights is not None else 0.8
    shift = width / 2 if compare_weights is not None else 0.0
    ax_w.bar(rank - shift, np.maximum(np.sort(weights)[::-1], floor), width, label="VB")
    if compare_weights is not None:
        ax_w.bar(rank + shift, np.maximum(np.sort(np.asarray(compare_weights))[::-1], floor),
                 width, label=compare_label, color="tab:orange")
    ax_w.axhline(threshold, color="0.3", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax_w.set_yscale("log")
    ax_w.set_ylim(floor, 1.5)
    ax_w.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_w.set_xlabel("component, by weight")
    ax_w.set_ylabel("weight")
    ax_w.set_title("mixture weights, largest first")
    ax_w.legend(loc="upper right")
    if history is not None:
        hist = np.asarray(history)
        axes[2].plot(np.arange(1, len(hist) + 1), hist, marker="o", ms=3)
        axes[2].set_xlabel("VB-EM iteration")
        axes[2].set_ylabel("lower bound")
        axes[2].set_title("the lower bound never decreases")
        axes[2].grid(alpha=0.3)
    _save(fig, path)
