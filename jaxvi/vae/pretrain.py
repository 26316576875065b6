"""Pretraining of the hierarchical VAE: `restarts` autoencoders trained together (vmapped, one
compiled step), the clusters of their codes (`jaxvi.vae.clusters`: a GMM on the codes, or on
their UMAP embedding, of all restarts side by side), and the prior (π, μ_z, σ_z) of the chosen
restart set from those clusters. No labels are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxvi import metrics as metrics_lib
from jaxvi._linalg import inverse_softplus
from jaxvi.training.loop import fit
from jaxvi.vae.clusters import consensus_labels, fit_code_gmm, gmm_labels, prior_from_labels
from jaxvi.vae.losses import autoencoder_loss, ensemble_loss, neighbor_indices
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, merge_model, split_model

if TYPE_CHECKING:  # recipe imports this module
    from jaxvi.vae.recipe import TrainConfig


def pretrain(
    model_config: VAEConfig, train_config: TrainConfig, x_train: np.ndarray, *,
    key: jax.Array, progress: bool = False, log: Callable[[str], None] | None = None,
    mesh: jax.sharding.Mesh | None = None, checkpoint_dir: str | Path | None = None,
    resume: bool = False, neighbors: np.ndarray | None = None,
) -> tuple[HierarchicalVAE, dict]:
    """Pretrain `restarts` autoencoders, cluster each one's codes with a GMM, and return the
    model whose prior starts from those clusters (the consensus when restarts > 1).

    Args:
      model_config: the model.
      train_config: the recipe (`restarts`, `pretrain_epochs`, `pretrain_steps`,
        `pretrain_learning_rate`, `pretrain_neighbors`, `neighbor_dims`, `batch_size`,
        `checkpoint_every`, `seed` are read).
      x_train: (N, D) the training data.
      key: the PRNG key of the networks' initialisation and of the training.
      progress: show a progress bar.
      log: called with one summary line at the end (None: silent).
      mesh: train data-parallel over its "data" axis.
      checkpoint_dir: checkpoint the autoencoders there every `checkpoint_every` steps and
        at the end (`jaxvi.training.loop.fit`).
      resume: continue from `checkpoint_dir`: the result equals an uninterrupted run's.
      neighbors: (N, ≥ k + 1) `neighbor_indices` of x_train with at least the k =
        `pretrain_neighbors` columns needed (None: computed here).

    Returns:
      (model, summary): summary holds "pretrain_loss", "pretrain_steps", "chosen_restart",
      with several restarts "agreement_nmi", "seconds" and "cpu_seconds" ({"autoencoders",
      "consensus"}: wall and process CPU times) and "cluster_labels": (N,) the clusters of
      x_train the prior was set from.
    """
    tc = train_config
    t0, c0 = time.perf_counter(), time.process_time()
    models, loss, steps = _train_autoencoders(
        model_config, tc, x_train, key=key, progress=progress, mesh=mesh,
        checkpoint_dir=checkpoint_dir, resume=resume, neighbors=neighbors)
    t1, c1 = time.perf_counter(), time.process_time()
    model, summary = _prior_from_codes(models, x_train, model_config.components, tc)
    seconds = {"autoencoders": t1 - t0, "consensus": time.perf_counter() - t1}
    cpu = {"autoencoders": c1 - c0, "consensus": time.process_time() - c1}
    summary = {"pretrain_loss": loss, "pretrain_steps": steps, "seconds": seconds,
               "cpu_seconds": cpu, **summary}
    if log:
        source = ("a GMM on the UMAP of the codes" if tc.embedding == "umap"
                  else "a GMM on the codes")
        if tc.restarts > 1:
            source += (f" of all restarts (restart {summary['chosen_restart']}, NMI with the "
                       f"clusters {max(summary['agreement_nmi']):.3f})")
        log(f"pretrained {tc.restarts} autoencoder(s) for {steps} steps (loss "
            f"{summary['pretrain_loss']:.3g}); prior from {source}")
    return model, summary


def _train_autoencoders(mc: VAEConfig, tc: TrainConfig, x_train, *, key, progress, mesh,
                        checkpoint_dir, resume,
                        neighbors) -> tuple[list[HierarchicalVAE], float, int]:
    """The `restarts` models after autoencoder training, the last epoch's mean loss of one of
    them, and the optimizer steps taken."""
    r = tc.restarts
    keys = jax.random.split(key, r + 1)
    models = [HierarchicalVAE(mc, rngs=nnx.Rngs(params=keys[i])) for i in range(r)]
    graphdef = nnx.split(models[0])[0]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[split_model(m)[1] for m in models])
    n_neighbors = min(tc.pretrain_neighbors, x_train.shape[0] - 1)  # as many as there are
    x_fit, lookup = x_train, None
    if n_neighbors:
        if neighbors is None:
            neighbors = neighbor_indices(x_train, n_neighbors, max_dims=tc.neighbor_dims)
        x_fit, lookup = np.asarray(neighbors[:, : n_neighbors + 1], np.int32), x_train
    loss = ensemble_loss(autoencoder_loss(graphdef, n_neighbors), r)
    meta = {"stage": "pretrain", "model_config": mc.to_dict(), "train_config": tc.to_dict()}
    state, hist = fit(
        loss, optax.adam(tc.pretrain_learning_rate), stacked, x_fit, key=keys[-1],
        epochs=tc.pretrain_epochs, max_steps=tc.pretrain_steps, lookup=lookup,
        batch_size=min(tc.batch_size, x_train.shape[0]),
        progress=progress, log=False, mesh=mesh, checkpoint_dir=checkpoint_dir,
        checkpoint_every=tc.checkpoint_every, resume=resume, meta=meta,
    )
    models = [merge_model(graphdef, jax.tree.map(lambda a, i=i: a[i], state.params))
              for i in range(r)]
    return models, hist[-1]["loss"] / r, int(state.step)


def _prior_from_codes(models: list[HierarchicalVAE], x_train, k: int, tc: TrainConfig):
    """The clusters of the models' codes of x_train (`jaxvi.vae.clusters.consensus_labels`,
    through `tc.embedding`) and the prior they give: with one model and no embedding, the
    prior of a diagonal GMM on its codes; else that of the clusters, on the codes of the model
    whose own GMM agrees most (NMI) with them. -> (that model, summary)."""
    codes = [encode_means(m, x_train) for m in models]
    if len(models) == 1 and tc.embedding == "none":
        gmm = fit_code_gmm(codes[0], k, seed=tc.seed)
        set_prior(models[0], *(np.asarray(a) for a in (gmm.weights, gmm.means, gmm.covariances)))
        labels = gmm_labels(gmm, codes[0])
        return models[0], {"chosen_restart": 0, "cluster_labels": labels.tolist()}
    consensus = consensus_labels(codes, k, seed=tc.seed, embedding=tc.embedding,
                                 embedding_neighbors=tc.embedding_neighbors)
    summary = {"chosen_restart": 0, "cluster_labels": consensus.tolist()}
    if len(models) > 1:
        labels = [gmm_labels(fit_code_gmm(c, k, seed=tc.seed + i), c)
                  for i, c in enumerate(codes)]
        summary["agreement_nmi"] = [metrics_lib.nmi(consensus, lab) for lab in labels]
        summary["chosen_restart"] = int(np.argmax(summary["agreement_nmi"]))
    model = models[summary["chosen_restart"]]
    set_prior(model, *prior_from_labels(codes[summary["chosen_restart"]], consensus, k))
    return model, summary


# ----------------------------------------------------------------------------- codes and GMMs


def encode_means(model: HierarchicalVAE, x) -> np.ndarray:
    """Means of q(w | x) as float64 numpy.

    Args:
      model: the VAE whose encoder is used.
      x: (N, D) data.

    Returns:
      (N, L) float64 the codes.
    """
    return np.asarray(jax.jit(lambda m, xx: m.encoder(xx)[0])(model, jnp.asarray(x)), np.float64)


def set_prior(model: HierarchicalVAE, weights, means, variances) -> None:
    """Set the prior (π, μ_z, σ_z) in place (σ_z = √variances).

    Args:
      model: the VAE whose prior is set.
      weights: (K,) π.
      means: (K, L) μ_z.
      variances: (K, L) σ_z².
    """
    model.prior.logits[...] = jnp.asarray(np.log(weights), jnp.float32)
    model.prior.mean[...] = jnp.asarray(means, jnp.float32)
    model.prior.raw_scale[...] = jnp.asarray(inverse_softplus(np.sqrt(variances)), jnp.float32)
