"""Pictures of a fitted `GMM`, by matplotlib's conventions: each function draws on the Axes
(or Figure) it is given, creates one only when given none, and returns it; none changes the
backend or writes a file (`save_figure` is the caller's choice).

`plot_components` draws the data with each component's 1- and 2-sigma ellipses (on a fitted
`jaxvi.GaussianMixture`: `plot_components(X, est)`); `plot_weights` the mixture weights as
bars, largest first (a fitted `jaxvi.BayesianGaussianMixture`: `plot_weights(est)`);
`plot_fit` the components beside the mean log-likelihood per EM iteration (`jaxvi em
--plot`, `examples/em_gmm.py`); `plot_variational_fit` a variational fit's surviving
components beside all its weights (`jaxvi em --variational --plot`, `examples/vb_gmm.py`)."""

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


def _as_gmm(gmm):
    """A `GMM`, or the `GMM` of a fitted `jaxvi.GaussianMixture` / `BayesianGaussianMixture`
    (its `weights_`, `means_`, `covariances_`, `covariance_type`)."""
    if hasattr(gmm, "means_"):
        from jaxvi.em.model import GMM

        return GMM(np.asarray(gmm.weights_), np.asarray(gmm.means_),
                   np.asarray(gmm.covariances_), gmm.covariance_type)
    return gmm


def subplots(*grid, figsize, **kwargs):
    """A new matplotlib Figure and its `Figure.subplots(*grid, **kwargs)`.

    Not pyplot's: no backend is chosen or switched, and nothing is kept open.

    Args:
      *grid: nrows, ncols, as `Figure.subplots` takes them.
      figsize: (width, height) in inches.
      **kwargs: passed to `Figure.subplots`.

    Returns:
      (fig, axes).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _new_axes(ax, figsize=(6, 4.8)):
    """ax, or the Axes of a new Figure (`subplots`, outside pyplot) when ax is None."""
    return ax if ax is not None else subplots(figsize=figsize)[1]


def _new_figure(fig, ncols: int, figsize, **kwargs):
    """(fig, its 1 × ncols Axes): on the given Figure, or on a new one (`subplots`, outside
    pyplot) when fig is None."""
    if fig is None:
        fig, axes = subplots(1, ncols, figsize=figsize, squeeze=False, **kwargs)
        return fig, axes[0]
    return fig, fig.subplots(1, ncols, squeeze=False, **kwargs)[0]


def plot_components(x, gmm, keep=None, *, ax=None):
    """Data with the 1- and 2-sigma ellipses, mean and weight of each component.

    Args:
      x: (N, D) data (its first two features are drawn).
      gmm: a `GMM` or a fitted estimator.
      keep: (K,) bool, the components drawn (all when None).
      ax: the Axes to draw on, or None (a new figure's).

    Returns:
      The Axes.
    """
    from matplotlib import colormaps
    from matplotlib.patches import Ellipse

    ax = _new_axes(ax)
    gmm = _as_gmm(gmm)

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
    return ax


def save_figure(fig, path, *, dpi: int = 110) -> None:
    """Write `fig` to `path` (its folder created).

    What the command line and the examples do with the figures returned here. A Figure made
    here is not pyplot's, so there is nothing to close; a pyplot figure the caller made stays
    theirs to close.

    Args:
      fig: a matplotlib Figure.
      path: the file to write (str or Path; its suffix picks the format).
      dpi: resolution.
    """
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)


def plot_fit(x, gmm, history, *, title: str | None = None, fig=None):
    """Data and each component's 1- and 2-sigma ellipses, beside the log-likelihood curve.

    The right panel: the mean log-likelihood per EM iteration.

    Args:
      x: (N, D) data (its first two features are drawn).
      gmm: a `GMM` or a fitted estimator.
      history: (n_iter,) mean log-likelihoods.
      title: the left panel's title, or None (K and the covariance type).
      fig: the Figure to draw on (two Axes added), or None (a new Figure).

    Returns:
      The Figure.
    """
    gmm = _as_gmm(gmm)
    fig, (ax, ax_ll) = _new_figure(fig, 2, (11, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    plot_components(x, gmm, ax=ax)
    ax.set_title(title or f"{gmm.means.shape[0]} components ({gmm.covariance_type}), 1σ and 2σ")
    hist = np.asarray(history)
    ax_ll.plot(np.arange(1, len(hist) + 1), hist, marker="o", ms=3)
    ax_ll.set_xlabel("EM iteration")
    ax_ll.set_ylabel("mean log-likelihood")
    ax_ll.set_title("log-likelihood never decreases")
    ax_ll.grid(alpha=0.3)
    return fig


def plot_weights(weights, *, threshold: float | None = None, compare_weights=None,
                 compare_label: str = "EM", label: str = "VB", ax=None):
    """The mixture weights as bars, largest first, on a log scale (bars end at 1e-6).

    Args:
      weights: (K,) weights, or a fitted estimator (its `weights_`).
      threshold: drawn as a dashed line when given.
      compare_weights: (K,), e.g. EM's, sorted the same way beside them, or None.
      compare_label: the legend label of compare_weights.
      label: the legend label of weights.
      ax: the Axes to draw on, or None (a new figure's).

    Returns:
      The Axes.
    """
    from matplotlib.ticker import MaxNLocator

    ax_w = _new_axes(ax)
    weights = np.asarray(getattr(weights, "weights_", weights))
    rank = np.arange(1, len(weights) + 1)
    floor = 1e-6  # bars of weights below it end there on the log scale
    width = 0.4 if compare_weights is not None else 0.8
    shift = width / 2 if compare_weights is not None else 0.0
    ax_w.bar(rank - shift, np.maximum(np.sort(weights)[::-1], floor), width, label=label)
    if compare_weights is not None:
        ax_w.bar(rank + shift, np.maximum(np.sort(np.asarray(compare_weights))[::-1], floor),
                 width, label=compare_label, color="tab:orange")
    if threshold is not None:
        ax_w.axhline(threshold, color="0.3", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax_w.set_yscale("log")
    ax_w.set_ylim(floor, 1.5)
    ax_w.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_w.set_xlabel("component, by weight")
    ax_w.set_ylabel("weight")
    ax_w.set_title("mixture weights, largest first")
    ax_w.legend(loc="upper right")
    return ax_w


def plot_variational_fit(x, gmm, *, threshold: float, history=None,
                         compare_weights=None, compare_label: str = "EM",
                         title: str | None = None, fig=None):
    """A variational fit with more components than the data need.

    Data with the ellipses of the components whose weight exceeds `threshold`; beside it all K
    weights as bars, largest first, on a log scale with the threshold drawn (and
    compare_weights sorted the same way beside them); and, given history, the lower bound per
    iteration.

    Args:
      x: (N, D) data (its first two features are drawn).
      gmm: the posterior-mean mixture (a `GMM` or a fitted estimator).
      threshold: the weight above which a component's ellipses are drawn.
      history: (n_iter,) lower bounds, or None (no third panel).
      compare_weights: (K,), e.g. EM's, or None.
      compare_label: the legend label of compare_weights.
      title: the left panel's title, or None.
      fig: the Figure to draw on (its Axes added), or None (a new Figure).

    Returns:
      The Figure.
    """
    gmm = _as_gmm(gmm)
    weights = np.asarray(gmm.weights)
    keep = weights > threshold
    panels = 3 if history is not None else 2
    fig, axes = _new_figure(fig, panels, (5.5 * panels, 4.8))
    plot_components(x, gmm, keep, ax=axes[0])
    axes[0].set_title(title or f"{int(keep.sum())} of {len(weights)} components above "
                      f"weight {threshold:g}")
    plot_weights(weights, threshold=threshold, compare_weights=compare_weights,
                 compare_label=compare_label, ax=axes[1])
    if history is not None:
        hist = np.asarray(history)
        axes[2].plot(np.arange(1, len(hist) + 1), hist, marker="o", ms=3)
        axes[2].set_xlabel("VB-EM iteration")
        axes[2].set_ylabel("lower bound")
        axes[2].set_title("the lower bound never decreases")
        axes[2].grid(alpha=0.3)
    return fig
