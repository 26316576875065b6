"""jaxvi.vae.plots: figures drawn on what the caller gives, returned, the backend untouched;
`save_figures` writes the three PNG files."""

import jax
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from jaxvi.vae import plots
from jaxvi.vae.model import HierarchicalVAE, VAEConfig


def test_plots_return_what_they_draw_on(tmp_path):
    before = matplotlib.get_backend()
    model = HierarchicalVAE(VAEConfig(data_dim=4, components=2, latent_dim=2, hidden=(8,),
                                      head_hidden=(4,)), rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (20, 4)))
    fig = plt.figure()
    assert plots.plot_samples(model, key=jax.random.key(2), n_per_row=3, fig=fig) is fig
    assert len(fig.axes) == 2 * 3
    n_figs = len(plt.get_fignums())
    assert len(plots.plot_reconstructions(model, x, n_per_row=3).axes) == 4 * 3
    assert len(plt.get_fignums()) == n_figs  # a new Figure is not pyplot's
    _, ax = plt.subplots()
    assert plots.plot_latent(model, x, key=jax.random.key(3), ax=ax) is ax
    plots.save_figures(model, x, tmp_path, key=jax.random.key(4), n_per_row=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latent.png", "recon.png",
                                                          "samples.png"]
    assert matplotlib.get_backend() == before
    plt.close("all")
