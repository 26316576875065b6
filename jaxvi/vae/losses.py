"""The hierarchical VAE's training losses, each `loss_fn(params, batch, key) -> (loss, metrics)`
for `jaxvi.training` (params as `jaxvi.vae.model.split_model` gives them): the ELBO, the ELBO
with a consensus-clustering term, the pretraining autoencoder, an ensemble of copies of any
loss; and the batch rows the neighbour-based ones read (`neighbor_table`, `smooth_targets`).
The wake-sleep loss is `jaxvi.vae.wake_sleep.rws_loss`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi.training.step import LossFn
from jaxvi.vae.model import merge_model


def elbo_loss(graphdef, n_samples: int = 1) -> LossFn:
    """Negative mean ELBO per data point (the three terms reported as metrics). batch: (B, D)."""

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        terms = model.elbo_terms(batch, key=key, n_samples=n_samples)
        elbo = terms.elbo
        return -jnp.mean(elbo), {
            "elbo": jnp.mean(elbo),
            "reconstruction": jnp.mean(terms.reconstruction),
            "kl_z": jnp.mean(terms.kl_z),
            "kl_w": jnp.mean(terms.kl_w),
        }

    return loss_fn


def consensus_elbo_loss(graphdef, n_samples: int = 1, weight: float = 1.0) -> LossFn:
    """Negative mean ELBO plus `weight` times the cross-entropy of q(z | w, x) (one w ~ q(w | x)
    per point) against soft cluster targets. Each batch row is x followed by its K target
    probabilities ((D + K) values, see `smooth_targets`): the targets come from the
    unsupervised consensus of pretraining, so the model keeps, and extends to new points, the
    clustering it starts from."""
    base = elbo_loss(graphdef, n_samples)

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        d = model.config.data_dim
        x, target = batch[:, :d], batch[:, d:]
        k_elbo, k_w = jax.random.split(key)
        neg_elbo, info = base(params, x, k_elbo)
        prior = model.prior()
        mean, scale = model.encoder(x)
        w = mean + scale * jax.random.normal(k_w, mean.shape, mean.dtype)
        logits = model.cluster_logits(w[:, None], x, prior)[:, 0]
        ce = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))
        return neg_elbo + weight * ce, {**info, "consensus_ce": ce}

    return loss_fn


def autoencoder_loss(graphdef, n_neighbors: int = 0) -> LossFn:
    """Pretraining: the deterministic autoencoder x -> mean of q(w | x) -> E[x | w], squared
    error (Gaussian) or cross-entropy (Bernoulli), summed over pixels.

    With n_neighbors = k > 0 each batch row is x followed by its k nearest neighbours
    ((k + 1)·D values, see `neighbor_table`) and the target is one of the k + 1 drawn at
    random: the codes become invariant to what varies within a neighbourhood.
    """

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        d = model.config.data_dim
        if n_neighbors:
            parts = batch.reshape(batch.shape[0], n_neighbors + 1, d)
            pick = jax.random.randint(key, (batch.shape[0],), 0, n_neighbors + 1)
            x, target = parts[:, 0], parts[jnp.arange(batch.shape[0]), pick]
        else:
            x, target = batch, batch
        out = model.decoder(model.encoder(x)[0])
        if model.config.likelihood == "gaussian":
            per_point = jnp.sum(jnp.square(out[0] - target), axis=-1)
        else:
            per_point = -jax.vmap(model.decoder.log_prob)(target, out)
        loss = jnp.mean(per_point)
        return loss, {"ae_loss": loss}

    return loss_fn


def ensemble_loss(loss_fn: LossFn, n: int) -> LossFn:
    """n independent copies of `loss_fn` on params stacked along axis 0, one batch, their own
    keys; the sum's gradient is each copy's own gradient (Adam is elementwise, so one optax
    state trains n independent models in one compiled step)."""

    def f(params, batch, key):
        keys = jax.random.split(key, n)
        losses, info = jax.vmap(loss_fn, in_axes=(0, None, 0))(params, batch, keys)
        return jnp.sum(losses), jax.tree.map(jnp.mean, info)

    return f


# ----------------------------------------------------------------------------- batch rows


def neighbor_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Each point's index followed by those of its min(k, N − 1) nearest neighbours in x
    (Euclidean; itself first, even with duplicate points). x: (N, D) -> (N, min(k, N − 1) + 1)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, x.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    idx[:, 0] = np.arange(x.shape[0])
    return idx


def neighbor_table(x: np.ndarray, k: int) -> np.ndarray:
    """Rows [x_n, its k nearest neighbours in x (Euclidean)] flattened, `autoencoder_loss`'s
    batch rows: (N, D) -> (N, (k+1)·D)."""
    return np.asarray(x)[neighbor_indices(x, k)].reshape(x.shape[0], -1)


def smooth_targets(x: np.ndarray, labels: np.ndarray, k: int, n_neighbors: int) -> np.ndarray:
    """Soft targets: for each point, the fraction of it and its n_neighbors nearest neighbours
    in x (Euclidean) carrying each label. x: (N, D), labels: (N,) -> (N, k) float32."""
    onehot = np.eye(k, dtype=np.float32)[np.asarray(labels)]
    if n_neighbors == 0:
        return onehot
    return onehot[neighbor_indices(x, n_neighbors)].mean(1).astype(np.float32)
