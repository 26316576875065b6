"""Fit a 2-D Gaussian mixture with far more components (K = 20) than clusters (4) by
variational Bayes under a Dirichlet-process prior, and by EM with the same K: the prior
switches off the components the data do not need, EM spreads its weight over all 20. Draws
the surviving components' 1σ and 2σ ellipses over the data, beside both fits' weights.

    python examples/vb_gmm.py            # writes examples/output/vb_gmm.png
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import em
from jaxvi.em.plots import plot_variational_fit, save_figure
from jaxvi.em.variational import expected_gmm, mixture_weights

OUT = Path(__file__).resolve().parent / "output" / "vb_gmm.png"
K = 20
THRESHOLD = 0.01  # components with a larger posterior mean weight count as effective


def make_data(key, n=1200):
    """Four clusters of different sizes and shapes."""
    truth = em.GMM(
        weights=jnp.array([0.4, 0.25, 0.2, 0.15]),
        means=jnp.array([[0.0, 0.0], [5.0, 1.0], [1.0, 5.5], [6.0, 6.0]]),
        covariances=jnp.array([[[1.2, 0.6], [0.6, 0.8]],
                               [[0.5, -0.2], [-0.2, 0.4]],
                               [[0.3, 0.0], [0.0, 0.9]],
                               [[0.6, 0.3], [0.3, 0.6]]]),
        covariance_type="full",
    )
    x, _ = em.sample(key, truth, n)
    return x


def main():
    key_data, key_vb, key_em = jax.random.split(jax.random.key(0), 3)
    with jax.enable_x64(True):
        x = make_data(key_data).astype(jnp.float64)
        vb = em.fit_variational(x, K, key=key_vb, max_iter=500, tol=1e-6,
                                weight_concentration_prior_type="dirichlet_process")
        weights = mixture_weights(vb.posterior)  # the posterior carries its weight prior
        # The posterior-mean mixture: E_q[π], the means m_k and covariances (ν_k W_k)⁻¹.
        gmm = expected_gmm(vb.posterior)._replace(weights=weights)
        fit = em.fit(x, K, key=key_em, max_iter=500, tol=1e-6)
        w_vb, w_em = np.asarray(weights), np.asarray(fit.gmm.weights)
        print(f"VB (DP prior): {int(vb.n_iter)} iterations, converged={bool(vb.converged)}, "
              f"lower bound {float(vb.lower_bound):.2f}; "
              f"{int((w_vb > THRESHOLD).sum())} of {K} components above {THRESHOLD}")
        print("VB weights, largest first:", np.round(np.sort(w_vb)[::-1][:6], 3))
        print(f"EM: {int(fit.n_iter)} iterations; {int((w_em > THRESHOLD).sum())} of {K} "
              "components above the threshold")
        print("EM weights, largest first:", np.round(np.sort(w_em)[::-1][:6], 3))
        fig = plot_variational_fit(np.asarray(x), gmm, threshold=THRESHOLD,
                                   compare_weights=w_em, compare_label="EM",
                                   title=f"VB, K = {K}, Dirichlet-process prior: "
                                   f"{int((w_vb > THRESHOLD).sum())} components kept")
        save_figure(fig, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
