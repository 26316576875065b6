"""Pretraining of the hierarchical VAE: `restarts` autoencoders trained together (vmapped, one
compiled step), a diagonal GMM on each one's codes, and the prior (π, μ_z, σ_z) of the chosen
restart set from those clusters, or from the consensus of all restarts' codes
(`consensus_labels`) when there are several. No labels are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
        model_config, train_config: the model, and the recipe (`restarts`,
            `pretrain_epochs`, `pretrain_steps`, `pretrain_learning_rate`,
            `pretrain_neighbors`, `neighbor_dims`, `batch_size`, `checkpoint_every`, `seed`
            are read).
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
    model, summary = _prior_from_codes(models, x_train, model_config.components, seed=tc.seed)
    seconds = {"autoencoders": t1 - t0, "consensus": time.perf_counter() - t1}
    cpu = {"autoencoders": c1 - c0, "consensus": time.process_time() - c1}
    summary = {"pretrain_loss": loss, "pretrain_steps": steps, "seconds": seconds,
               "cpu_seconds": cpu, **summary}
    if log:
        log("pretrained {} autoencoder(s) for {} steps (loss {:.3g}); prior from {}".format(
            tc.restarts, steps, summary["pretrain_loss"],
            "a GMM on the codes" if tc.restarts == 1 else
            f"the consensus of their GMMs (restart {summary['chosen_restart']}, NMI with "
            f"consensus {max(summary['agreement_nmi']):.3f})"))
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


def _prior_from_codes(models: list[HierarchicalVAE], x_train, k: int, *, seed: int):
    """Fit a GMM to each model's codes of x_train; with one model, its prior from its GMM;
    with several, the prior of the one whose clusters agree most (NMI) with the consensus,
    from the consensus clusters. -> (that model, summary)."""
    codes = [encode_means(m, x_train) for m in models]
    gmms = [fit_code_gmm(c, k, seed=seed + i) for i, c in enumerate(codes)]
    if len(models) == 1:
        model = models[0]
        set_prior(model, gmms[0].weights_, gmms[0].means_, gmms[0].covariances_)
        return model, {"chosen_restart": 0, "cluster_labels": gmms[0].predict(codes[0]).tolist()}
    labels = np.stack([g.predict(c) for g, c in zip(gmms, codes, strict=True)])
    consensus = consensus_labels(codes, k, seed=seed)
    agreement = [metrics_lib.nmi(consensus, lab) for lab in labels]
    best = int(np.argmax(agreement))
    model = models[best]
    set_prior(model, *prior_from_labels(codes[best], consensus, k))
    return model, {"chosen_restart": best, "agreement_nmi": agreement,
                   "cluster_labels": consensus.tolist()}


# ----------------------------------------------------------------------------- codes and GMMs


def encode_means(model: HierarchicalVAE, x) -> np.ndarray:
    """Means of q(w | x) as float64 numpy. x: (N, D) -> (N, L)."""
    return np.asarray(jax.jit(lambda m, xx: m.encoder(xx)[0])(model, jnp.asarray(x)), np.float64)


def fit_code_gmm(codes: np.ndarray, k: int, *, seed: int, max_points: int = 20000):
    """A diagonal GMM (scikit-learn, 5 inits) on the codes: (N, L), fitted on a random
    `max_points` of them when there are more (its cost then stops growing with N).
    -> fitted GaussianMixture."""
    from sklearn.mixture import GaussianMixture

    if codes.shape[0] > max_points:
        rows = np.random.default_rng(seed).choice(codes.shape[0], max_points, replace=False)
        codes = codes[np.sort(rows)]
    gmm = GaussianMixture(k, covariance_type="diag", n_init=5, random_state=seed, reg_covar=1e-4)
    return gmm.fit(codes)


def consensus_labels(codes: Sequence[np.ndarray], k: int, *, seed: int) -> np.ndarray:
    """Consensus clusters of R encodings of the same N points: a diagonal GMM (`fit_code_gmm`)
    on the encodings side by side. codes: R arrays (N, L) -> labels (N,).

    Each restart's codes carry its own errors; a point's R codes together place it where the
    restarts agree."""
    stacked = np.concatenate([np.asarray(c, np.float64) for c in codes], axis=1)
    return fit_code_gmm(stacked, k, seed=seed).predict(stacked)


def set_prior(model: HierarchicalVAE, weights, means, variances) -> None:
    """Set the prior (π, μ_z, σ_z) in place. weights: (K,), means, variances: (K, L)."""
    model.prior.logits[...] = jnp.asarray(np.log(weights), jnp.float32)
    model.prior.mean[...] = jnp.asarray(means, jnp.float32)
    model.prior.raw_scale[...] = jnp.asarray(inverse_softplus(np.sqrt(variances)), jnp.float32)


def prior_from_labels(codes: np.ndarray, labels: np.ndarray, k: int, reg: float = 1e-4):
    """Per-cluster weights (K,), means (K, L) and (regularised) variances (K, L) of the
    codes: (N, L) given labels: (N,)."""
    weights = np.array([np.mean(labels == c) for c in range(k)]) + 1e-6
    means = np.stack([codes[labels == c].mean(0) if np.any(labels == c) else codes.mean(0)
                      for c in range(k)])
    var = np.stack([codes[labels == c].var(0) if np.sum(labels == c) > 1 else codes.var(0)
                    for c in range(k)])
    return weights / weights.sum(), means, var + reg
