"""Pictures of a fitted `GMM`: `plot_fit` draws the data with each component's 1- and 2-sigma
ellipses beside the mean log-likelihood per EM iteration (used by `jaxvi em --plot` and
`examples/em_gmm.py`)."""

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


def plot_fit(x, gmm, history, path, title: str | None = None) -> None:
    """Data x: (N, D) (first two features) with each component's 1- and 2-sigma ellipses,
    beside the mean log-likelihood per EM iteration history: (n_iter,). Writes a PNG to
    `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    x = np.asarray(x)
    x2 = x[:, :2] if x.shape[1] >= 2 else np.c_[x[:, 0], np.zeros(len(x))]
    means = np.asarray(gmm.means)
    means2 = means[:, :2] if means.shape[1] >= 2 else np.c_[means[:, 0], np.zeros(len(means))]
    covs = _covariances_2d(gmm)
    weights = np.asarray(gmm.weights)
    fig, (ax, ax_ll) = plt.subplots(1, 2, figsize=(11, 4.8),
                                    gridspec_kw={"width_ratios": [1.3, 1]})
    ax.scatter(x2[:, 0], x2[:, 1], s=4, alpha=0.35, color="0.35", linewidths=0)
    colors = plt.cm.tab10(np.arange(len(means2)) % 10)
    for m, c, w, col in zip(means2, covs, weights, colors, strict=True):
        vals, vecs = np.linalg.eigh(c)
        vals = np.maximum(vals, 0.0)
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        for n_sigma in (1, 2):
            ax.add_patch(Ellipse(m, 2 * n_sigma * np.sqrt(vals[-1]), 2 * n_sigma * np.sqrt(vals[0]),
                                 angle=angle, fill=False, color=col, lw=2.0 / n_sigma))
        ax.plot(*m, marker="x", color=col, ms=8, mew=2)
        ax.annotate(f"{w:.2f}", m, xytext=(5, 5), textcoords="offset points", color=col)
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]" if x.shape[1] >= 2 else "")
    ax.set_title(title or f"{len(means2)} components ({gmm.covariance_type}), 1σ and 2σ")
    ax.set_aspect("equal", adjustable="datalim")
    hist = np.asarray(history)
    ax_ll.plot(np.arange(1, len(hist) + 1), hist, marker="o", ms=3)
    ax_ll.set_xlabel("EM iteration")
    ax_ll.set_ylabel("mean log-likelihood")
    ax_ll.set_title("log-likelihood never decreases")
    ax_ll.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
