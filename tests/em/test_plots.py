"""jaxvi.em.plots follows matplotlib's conventions: the backend is never changed, a given Axes
or Figure is drawn on and returned, a new one is made only when none is given, nothing is
written unless the caller saves; fitted estimators are accepted."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxvi.em import plots
from jaxvi.em.model import GMM


@pytest.fixture
def backend_unchanged():
    before = matplotlib.get_backend()
    yield
    assert matplotlib.get_backend() == before
    plt.close("all")


def _gmm(cov="full"):
    covs = {"full": np.stack([np.eye(2), 2 * np.eye(2)]), "diag": np.ones((2, 2)),
            "spherical": np.ones(2), "tied": np.eye(2)}[cov]
    return GMM(np.array([0.4, 0.6]), np.array([[0.0, 0.0], [3.0, 1.0]]), covs, cov)


X = np.random.default_rng(0).normal(size=(50, 2))


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_components_draw_on_the_given_axes(backend_unchanged, cov, tmp_path):
    fig, ax = plt.subplots()
    assert plots.plot_components(X, _gmm(cov), ax=ax) is ax
    assert len(ax.patches) == 4 and len(ax.collections) == 1  # 2 ellipses each, the data
    assert not list(tmp_path.iterdir())
    n_figs = len(plt.get_fignums())
    new = plots.plot_components(X, _gmm(cov))
    # a new Figure of its own (em.plots.subplots): pyplot's list of open figures untouched
    assert new is not ax and isinstance(new.figure, Figure)
    assert len(new.patches) == 4 and len(plt.get_fignums()) == n_figs


def test_multi_panel_plots_return_the_figure(backend_unchanged, tmp_path):
    fig = plt.figure()
    assert plots.plot_fit(X, _gmm(), np.arange(5.0), fig=fig) is fig and len(fig.axes) == 2
    n_figs = len(plt.get_fignums())
    out = plots.plot_variational_fit(X, _gmm(), threshold=0.5, history=np.arange(3.0))
    assert len(out.axes) == 3 and len(plt.get_fignums()) == n_figs
    plots.save_figure(out, tmp_path / "sub" / "vb.png")
    assert (tmp_path / "sub" / "vb.png").stat().st_size > 0


def test_helpers_take_fitted_estimators(backend_unchanged):
    from jaxvi import BayesianGaussianMixture, GaussianMixture

    est = GaussianMixture(2, random_state=0).fit(X)
    ax = plots.plot_components(X, est)
    assert len(ax.patches) == 4
    vb = BayesianGaussianMixture(n_components=4, random_state=0).fit(X)
    ax = plots.plot_weights(vb, threshold=0.01)
    assert len(ax.patches) == 4 and ax.get_yscale() == "log"


def test_library_never_switches_the_backend():
    import inspect

    from jaxvi.vae import plots as vae_plots

    for module in (plots, vae_plots):
        assert "matplotlib.use(" not in inspect.getsource(module)
        assert "matplotlib.pyplot" not in inspect.getsource(module)  # no pyplot state either
