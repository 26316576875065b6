"""The hierarchical VAE's training losses, each `loss_fn(params, batch, key) -> (loss, metrics)`
for `jaxvi.training` (params as `jaxvi.vae.model.split_model` gives them): the ELBO, the ELBO
with a consensus-clustering term, the pretraining autoencoder, an ensemble of copies of any
loss; and what the neighbour-based ones read (`neighbor_indices`, `smooth_targets`).
The wake-sleep loss is `jaxvi.vae.wake_sleep.rws_loss`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi._deprecation import renamed_keyword
from jaxvi.training.step import LossFn
from jaxvi.vae.model import merge_model


@renamed_keyword("n_samples", "num_samples", "elbo_loss")
def elbo_loss(graphdef, num_samples: int = 1) -> LossFn:
    """Negative mean ELBO per data point (the three terms reported as metrics).

    Args:
      graphdef: the model's graphdef, from `jaxvi.vae.model.split_model`.
      num_samples: samples of w per data point (formerly `n_samples`).

    Returns:
      loss_fn(params, batch, key) -> (scalar loss, metrics: elbo, reconstruction, kl_z,
      kl_w), batch: (B, D).
    """

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        terms = model.elbo_terms(batch, key=key, num_samples=num_samples)
        elbo = terms.elbo
        return -jnp.mean(elbo), {
            "elbo": jnp.mean(elbo),
            "reconstruction": jnp.mean(terms.reconstruction),
            "kl_z": jnp.mean(terms.kl_z),
            "kl_w": jnp.mean(terms.kl_w),
        }

    return loss_fn


@renamed_keyword("n_samples", "num_samples", "consensus_elbo_loss")
def consensus_elbo_loss(graphdef, num_samples: int = 1, weight: float = 1.0) -> LossFn:
    """Negative mean ELBO plus `weight` times a cross-entropy against soft cluster targets.

    The cross-entropy is that of q(z | w, x) (one w ~ q(w | x) per point). The targets come
    from the unsupervised consensus of pretraining, so the model keeps, and extends to new
    points, the clustering it starts from.

    Args:
      graphdef: the model's graphdef, from `jaxvi.vae.model.split_model`.
      num_samples: samples of w per data point in the ELBO (formerly `n_samples`).
      weight: the cross-entropy's weight.

    Returns:
      loss_fn(params, batch, key) -> (scalar loss, metrics: `elbo_loss`'s and consensus_ce),
      batch: (B, D + K), each row x followed by its K target probabilities (see
      `smooth_targets`).
    """
    base = elbo_loss(graphdef, num_samples)

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
    """Pretraining: the deterministic autoencoder x -> mean of q(w | x) -> E[x | w].

    The loss is the squared error (Gaussian) or cross-entropy (Bernoulli), summed over pixels.

    Args:
      graphdef: the model's graphdef, from `jaxvi.vae.model.split_model`.
      n_neighbors: k ≥ 0. With k > 0, the input is x at each row's first index and the target
        x at one of its k + 1 indices drawn at random: the codes become invariant to what
        varies within a neighbourhood. Only indices are stored; each batch gathers its rows
        of x.

    Returns:
      loss_fn(params, batch, key) -> (scalar loss, metrics: ae_loss); batch: (B, D) rows of
      x, or, with k > 0, the pair (rows (B, k + 1) of `neighbor_indices`, x: (N, D)).
    """

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        if n_neighbors:
            rows, x_all = batch
            pick = jax.random.randint(key, (rows.shape[0],), 0, n_neighbors + 1)
            x = x_all[rows[:, 0]]
            target = x_all[rows[jnp.arange(rows.shape[0]), pick]]
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
    """n independent copies of `loss_fn` on params stacked along axis 0, one batch, own keys.

    The sum's gradient is each copy's own gradient (Adam is elementwise, so one optax state
    trains n independent models in one compiled step).

    Args:
      loss_fn: loss_fn(params, batch, key) -> (scalar loss, metrics) of one model.
      n: number of copies.

    Returns:
      loss_fn(params, batch, key) -> (sum of the n losses, metrics averaged over the copies),
      params with a leading axis (n, ...).
    """

    def f(params, batch, key):
        keys = jax.random.split(key, n)
        losses, info = jax.vmap(loss_fn, in_axes=(0, None, 0))(params, batch, keys)
        return jnp.sum(losses), jax.tree.map(jnp.mean, info)

    return f


# ----------------------------------------------------------------------------- batch rows


def neighbor_indices(x: np.ndarray, k: int, *, max_dims: int = 0) -> np.ndarray:
    """Each point's index followed by those of its min(k, N − 1) nearest neighbours in x.

    Euclidean; itself first, even with duplicate points.

    Args:
      x: (N, D) points.
      k: neighbours per point.
      max_dims: with max_dims > 0 and more features than that, distances are taken on the
        first `max_dims` principal components (a kNN search in D = 784 costs N²·D).

    Returns:
      (N, min(k, N − 1) + 1) int32 indices.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x)
    k = min(k, x.shape[0] - 1)
    if 0 < max_dims < x.shape[1]:
        x = principal_components(x, max_dims)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    idx[:, 0] = np.arange(x.shape[0])
    return idx.astype(np.int32)


def principal_components(x: np.ndarray, n: int) -> np.ndarray:
    """x projected on its first n principal axes (the covariance's leading eigenvectors).

    The covariance and its eigenvectors are computed in float64.

    Args:
      x: (N, D) points.
      n: number of axes.

    Returns:
      (N, n) float32 centred projections.
    """
    x = np.asarray(x)
    mean = x.mean(0, dtype=np.float64)
    centred = x - mean.astype(x.dtype)
    cov = np.asarray(centred.T @ centred, np.float64) / max(x.shape[0] - 1, 1)
    _, vecs = np.linalg.eigh(cov)
    return (centred @ vecs[:, ::-1][:, :n].astype(x.dtype)).astype(np.float32)


def smooth_targets(labels: np.ndarray, k: int, neighbors: np.ndarray | None) -> np.ndarray:
    """Soft targets: for each point, the fraction of its row of `neighbors` carrying each label.

    Args:
      labels: (N,) ints in [0, k).
      k: number of labels.
      neighbors: (N, m + 1) from `neighbor_indices` (itself and its m nearest), or None (its
        own label).

    Returns:
      (N, k) float32 label fractions.
    """
    onehot = np.eye(k, dtype=np.float32)[np.asarray(labels)]
    if neighbors is None or neighbors.shape[1] == 1:
        return onehot
    return onehot[neighbors].mean(1).astype(np.float32)
