"""Held-out metrics of the hierarchical VAE: the ELBO and its three terms, the IWAE bound, the
clusters used and, with labels, clustering accuracy and NMI (`jaxvi.metrics`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import metrics as metrics_lib
from jaxvi.data import check_data
from jaxvi.vae.model import HierarchicalVAE, merge_model, split_model


@functools.lru_cache(maxsize=16)
def make_evaluator(graphdef, *, iwae_samples: int = 64, cluster_samples: int = 16,
                   chunk: int = 512):
    """The held-out evaluation of one model structure (cached per arguments).

    The dict holds elbo, iwae, reconstruction, kl_z, kl_w (means over x: (N, D)),
    clusters_used and, when labels y: (N,) are given, accuracy and nmi.

    Args:
      graphdef: the model's graphdef, from `jaxvi.vae.model.split_model`.
      iwae_samples: samples of w for the IWAE bound.
      cluster_samples: samples of w for q(z | x).
      chunk: rows of x per jitted call.

    Returns:
      evaluate(params, x, y=None, *, key) -> (dict of floats, predicted clusters (N,)).
    """

    @jax.jit
    def _chunk(params, xb, key):
        model = merge_model(graphdef, params)
        k1, k2, k3 = jax.random.split(key, 3)
        terms = model.elbo_terms(xb, key=k1, num_samples=1)
        iwae = model.iwae(xb, key=k2, num_samples=iwae_samples)
        pred = model.cluster(xb, key=k3, num_samples=cluster_samples)
        return terms, iwae, pred

    def evaluate(params, x, y=None, *, key):
        outs = []
        for i, start in enumerate(range(0, x.shape[0], chunk)):
            outs.append(_chunk(params, x[start : start + chunk], jax.random.fold_in(key, i)))
        terms = jax.tree.map(lambda *a: np.concatenate([np.asarray(v) for v in a]), *outs)
        t, iwae, pred = terms
        res = {
            "elbo": float(np.mean(t.elbo)),
            "iwae": float(np.mean(iwae)),
            "reconstruction": float(np.mean(t.reconstruction)),
            "kl_z": float(np.mean(t.kl_z)),
            "kl_w": float(np.mean(t.kl_w)),
            "clusters_used": int(np.unique(pred).size),
        }
        if y is not None:
            res["accuracy"] = metrics_lib.cluster_accuracy(y, pred)
            res["nmi"] = metrics_lib.nmi(y, pred)
        return res, pred

    return evaluate


def evaluate_test_set(
    model: HierarchicalVAE, x_test, y_test=None, *, key: jax.Array, iwae_samples: int = 64
) -> dict:
    """The final metrics of a trained model on held-out data.

    Args:
      model: the trained model.
      x_test: (M, D) held-out data, D the model's data_dim.
      y_test: (M,) labels, or None.
      key: PRNG key of the samples.
      iwae_samples: samples of w for the IWAE bound.

    Returns:
      A dict of floats, keys named plainly: test_elbo, test_iwae, test_reconstruction,
      test_kl_z, test_kl_w, test_clusters_used and, with labels, test_accuracy and test_nmi.

    Raises:
      ValueError: x_test not (M, D), not finite, or of another D than the model's data_dim.
    """
    check_data("x_test", x_test, model.config.data_dim)
    graphdef, params = split_model(model)
    res, _ = make_evaluator(graphdef, iwae_samples=iwae_samples)(
        params, jnp.asarray(x_test), y_test, key=key
    )
    return {f"test_{k}": v for k, v in res.items()}
