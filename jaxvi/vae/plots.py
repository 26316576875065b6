"""Pictures of a trained hierarchical VAE: samples per mixture component (`plot_samples`),
reconstructions (`plot_reconstructions`) and the codes' first two principal axes
(`plot_latent`). By matplotlib's conventions each draws on the Figure or Axes it is given,
creates one only when given none, and returns it; none changes the backend. `save_figures`
is the saving the command line and the examples choose: all three as PNG files."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi.em.plots import subplots


def _as_images(x: np.ndarray) -> np.ndarray:
    """(n, D) -> (n, h, w): square images when D is a square, else one row of D pixels."""
    d = x.shape[1]
    side = int(round(np.sqrt(d)))
    if side * side == d:
        return x.reshape(-1, side, side)
    return x.reshape(-1, 1, d)


def save_figures(model, x_test, out, *, key, n_per_row: int = 10) -> None:
    """Write samples.png, recon.png and latent.png to the folder `out`.

    samples.png: `n_per_row` samples per mixture component, one row each; recon.png: inputs
    of x_test above their reconstructions; latent.png: 2-D PCA of the means of q(w | x_test),
    coloured by predicted cluster, prior means marked. The figures are not pyplot's: nothing
    is left open.

    Args:
      model: a trained `jaxvi.vae.model.HierarchicalVAE`.
      x_test: (M, D) data.
      out: the folder (must exist).
      key: PRNG key of the samples and the clusters.
      n_per_row: images per row.
    """
    out = Path(out)
    key_s, key_c = jax.random.split(key)
    figures = {"samples.png": plot_samples(model, key=key_s, n_per_row=n_per_row),
               "recon.png": plot_reconstructions(model, x_test, n_per_row=n_per_row),
               "latent.png": plot_latent(model, x_test, key=key_c).figure}
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=100)


def _grid(fig, rows: int, cols: int, figsize):
    """(fig, its rows × cols Axes): on the given Figure, or on a new one (`em.plots.subplots`:
    not pyplot's, no backend chosen) when fig is None."""
    if fig is None:
        return subplots(rows, cols, figsize=figsize, squeeze=False)
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot_samples(model, *, key, n_per_row: int = 10, fig=None):
    """`n_per_row` decoded samples w ~ p(w | z) of each component z, one row per component.

    Args:
      model: a trained `jaxvi.vae.model.HierarchicalVAE`.
      key: PRNG key of the samples.
      n_per_row: samples per component.
      fig: a Figure to draw on (K × n_per_row Axes added), or None (a new Figure).

    Returns:
      The Figure.
    """
    k = model.config.components
    z = jnp.repeat(jnp.arange(k), n_per_row)
    samples = np.asarray(jax.jit(lambda m, kk: m.sample_given(kk, z))(model, key))
    rows = samples.reshape(k, n_per_row, -1)
    weights = np.asarray(jax.nn.softmax(model.prior()[0]))
    fig, axes = _grid(fig, k, n_per_row, (n_per_row * 0.8, k * 0.8))
    for c in range(k):
        imgs = _as_images(rows[c])
        for j in range(n_per_row):
            ax = axes[c, j]
            ax.imshow(imgs[j], cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c, 0].set_ylabel(f"{c}\nπ={weights[c]:.2f}", fontsize=6, rotation=0, labelpad=14)
    fig.suptitle("samples, one row per mixture component", fontsize=8)
    return fig


def plot_reconstructions(model, x_test, *, n_per_row: int = 10, fig=None):
    """The first 2·n_per_row test inputs, each row of them above its reconstructions.

    Args:
      model: a trained `jaxvi.vae.model.HierarchicalVAE`.
      x_test: (M, D) data.
      n_per_row: images per row.
      fig: a Figure to draw on (4 × n_per_row Axes added), or None (a new Figure).

    Returns:
      The Figure.
    """
    x = np.asarray(x_test[: 2 * n_per_row])
    rec = np.asarray(jax.jit(lambda m, xx: m.reconstruct(xx))(model, jnp.asarray(x)))
    fig, axes = _grid(fig, 4, n_per_row, (n_per_row * 0.8, 4 * 0.8))
    for i in range(2):
        src, dst = _as_images(x[i * n_per_row : (i + 1) * n_per_row]), _as_images(
            rec[i * n_per_row : (i + 1) * n_per_row])
        for j in range(min(n_per_row, src.shape[0])):
            for r, img in ((2 * i, src[j]), (2 * i + 1, dst[j])):
                axes[r, j].imshow(img, cmap="gray_r", vmin=0, vmax=1)
        for r in (2 * i, 2 * i + 1):
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * i, 0].set_ylabel("input", fontsize=6)
        axes[2 * i + 1, 0].set_ylabel("recon", fontsize=6)
    return fig


def plot_latent(model, x_test, *, key, ax=None):
    """The means of q(w | x_test) on their first two principal axes.

    Coloured by predicted cluster, with the prior means marked.

    Args:
      model: a trained `jaxvi.vae.model.HierarchicalVAE`.
      x_test: (M, D) data.
      key: PRNG key of the predicted clusters.
      ax: an Axes to draw on, or None (a new figure's Axes).

    Returns:
      The Axes.
    """
    k = model.config.components
    xt = jnp.asarray(x_test)
    means, pred = jax.jit(lambda m, xx, kk: (m.encoder(xx)[0], m.cluster(xx, key=kk)))(
        model, xt, key)
    means, pred = np.asarray(means), np.asarray(pred)
    prior_means = np.asarray(model.prior()[1])
    centre = means.mean(0)
    _, _, vt = np.linalg.svd(means - centre, full_matrices=False)
    proj = vt[:2].T if vt.shape[0] >= 2 else np.eye(means.shape[1], 2)
    pts, pm = (means - centre) @ proj, (prior_means - centre) @ proj
    if ax is None:
        ax = subplots(figsize=(5.5, 5))[1]
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=pred, cmap="tab10", s=8, vmin=0, vmax=max(k - 1, 9))
    ax.scatter(pm[:, 0], pm[:, 1], c=np.arange(k), cmap="tab10", marker="X", s=140,
               edgecolors="black", vmin=0, vmax=max(k - 1, 9), label="prior means μ_z")
    ax.set_title("means of q(w | x), first two principal axes; colour = predicted cluster",
                 fontsize=8)
    ax.legend(fontsize=7)
    ax.figure.colorbar(sc, ax=ax, label="cluster")
    return ax
