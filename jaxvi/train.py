"""Training: a pure jitted step over optax, an epoch as one `lax.scan`, `fit` with a progress
bar, per-epoch evaluation, checksummed orbax checkpoints (`jaxvi.checkpoint`, its names
re-exported here), `resume` from the newest intact one and a guard against non-finite losses
and parameters; and the hierarchical VAE's recipe (autoencoder pretraining, a GMM on the codes
to initialise the prior, then joint training on the ELBO), checkpointed and resumable at every
stage.

The step is `step(state, batch, key) -> (state, metrics)`, a pure function of arrays, built by
`make_step(loss_fn, optimizer)` from any `loss_fn(params, batch, key) -> (loss, metrics)`. A
data-parallel version is the same function with the batch sharded over a mesh axis.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxvi import distributed
from jaxvi import metrics as metrics_lib
from jaxvi._validate import check_choice
from jaxvi.checkpoint import (  # noqa: F401  (re-exported: jaxvi.train.* as before)
    DamagedCheckpointWarning,
    latest_checkpoint,
    load_meta,
    read_meta,
    restore_checkpoint,
    restore_into,
    save_checkpoint,
    set_aside,
)
from jaxvi.data import check_data
from jaxvi.nn import HierarchicalVAE, VAEConfig
from jaxvi.training.step import LossFn, TrainState, all_finite, init_state, make_epoch, make_step  # noqa: F401


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""


class NonFiniteParamsError(NonFiniteLossError):
    """The parameters became NaN or Inf (a non-finite gradient) while the loss was finite; no
    checkpoint of them is written, the last good one is kept."""


PRETRAIN_DIR = "pretrain"  # the subfolder of a `train_vae` checkpoint folder for pretraining


# ----------------------------------------------------------------------------- VAE losses


def split_model(model: nnx.Module):
    """-> (graphdef, params as a pure dict of arrays)."""
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def merge_model(graphdef, params) -> HierarchicalVAE:
    return nnx.merge(graphdef, params)


def elbo_loss(graphdef, n_samples: int = 1) -> LossFn:
    """Negative mean ELBO per data point (the three terms reported as metrics)."""

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
    probabilities ((D + K) values): the targets come from the unsupervised consensus of
    `pretrain`, so the model keeps, and extends to new points, the clustering it starts from."""
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
        logits = jax.vmap(lambda wb, xb: model.head(wb[None], xb, prior)[0])(w, x)
        ce = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))
        return neg_elbo + weight * ce, {**info, "consensus_ce": ce}

    return loss_fn


def smooth_targets(x: np.ndarray, labels: np.ndarray, k: int, n_neighbors: int) -> np.ndarray:
    """Soft targets: for each point, the fraction of it and its n_neighbors nearest neighbours
    in x (Euclidean) carrying each label. x: (N, D), labels: (N,) -> (N, k) float32."""
    onehot = np.eye(k, dtype=np.float32)[np.asarray(labels)]
    if n_neighbors == 0:
        return onehot
    from sklearn.neighbors import NearestNeighbors

    m = min(n_neighbors, x.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=m + 1).fit(x).kneighbors(x, return_distance=False)
    idx[:, 0] = np.arange(x.shape[0])
    return onehot[idx].mean(1).astype(np.float32)


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


def neighbor_table(x: np.ndarray, k: int) -> np.ndarray:
    """Rows [x_n, its k nearest neighbours in x (Euclidean)] flattened: (N, D) -> (N, (k+1)·D)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, x.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    idx[:, 0] = np.arange(x.shape[0])  # itself first, even with duplicate points
    return np.asarray(x)[idx].reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=16)
def make_evaluator(graphdef, *, iwae_samples: int = 64, cluster_samples: int = 16,
                   chunk: int = 512):
    """-> evaluate(params, x, y=None, *, key) -> dict of floats (elbo, iwae, the three terms;
    accuracy and nmi when labels y are given). Runs jitted over chunks of x."""

    @jax.jit
    def _chunk(params, xb, key):
        model = merge_model(graphdef, params)
        k1, k2, k3 = jax.random.split(key, 3)
        terms = model.elbo_terms(xb, key=k1, n_samples=1)
        iwae = model.iwae(xb, key=k2, n_samples=iwae_samples)
        pred = model.cluster(xb, key=k3, n_samples=cluster_samples)
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


# ----------------------------------------------------------------------------- checkpoints


def check_fresh_checkpoint_dir(directory, resume: bool) -> None:
    """A run that does not resume must not start in a folder holding checkpoints (of the run or
    of its pretraining, in `PRETRAIN_DIR`): its saves would collide with them, and a user who
    meant to resume would lose that run."""
    if directory is None or resume:
        return
    step = latest_checkpoint(directory)
    pre = latest_checkpoint(Path(directory) / PRETRAIN_DIR)
    if step is not None or pre is not None:
        latest = f"epoch {step}" if step is not None else f"pretraining epoch {pre}"
        raise ValueError(
            f"{str(directory)!r} already holds checkpoints (latest: {latest}); resume from "
            "it (`resume=True`, `--resume`), write to another folder, or delete it first "
            "(`jaxvi train --overwrite`)."
        )


# ----------------------------------------------------------------------------- fit


def fit(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    params,
    x: jax.Array,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int,
    eval_fn: Callable[[Any, int], dict] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    meta: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, list[dict]]:
    """Train `params` on x: (N, D) for `epochs` epochs of shuffled batches.

    Epoch e uses the key `fold_in(key, e)`, so a run resumed from a checkpoint ends where an
    uninterrupted run with the same key ends. A checkpoint (params, optimizer state, step, and
    `meta` with the history) is written at the first epoch end after every `checkpoint_every`
    steps and at the end. With `resume=True` and a checkpoint in `checkpoint_dir`, training
    continues from the newest intact checkpoint there (damaged newer ones, see
    `jaxvi.checkpoint`, are renamed `damaged-<epoch>` and named in a `DamagedCheckpointWarning`;
    if none is intact, `ValueError`). If an epoch's mean loss is not finite
    (`NonFiniteLossError`), or its parameters are not (`NonFiniteParamsError`: a non-finite
    gradient, even on the epoch's last step; checked on device in the jitted epoch), training
    stops and no checkpoint is written, so the last good one stays. `eval_fn(params, epoch) -> dict`
    runs after each epoch. With a `mesh` (`jaxvi.distributed.data_mesh`), training is
    data-parallel over its "data" axis (see `make_epoch`); `batch_size` must then be a
    multiple of the number of devices on that axis.
    Returns (final state, history: one dict of metrics per epoch).
    """
    from tqdm.auto import tqdm

    check_data("x", x)
    if x.shape[0] < batch_size:
        raise ValueError(
            f"`batch_size` ({batch_size}) must not exceed the number of training points "
            f"({x.shape[0]})."
        )
    if mesh is not None:
        n_dev = distributed.check_mesh(mesh).shape[distributed.DATA_AXIS]
        if batch_size % n_dev:
            raise ValueError(
                f"`batch_size` ({batch_size}) must be a multiple of the {n_dev} devices of "
                "`mesh` for data-parallel training."
            )
    _refuse_existing(checkpoint_dir, resume)
    x = jnp.asarray(x)
    meta = dict(meta or {})
    state = init_state(params, optimizer)
    history: list[dict] = []
    start = 0
    if resume and checkpoint_dir is not None and latest_checkpoint(checkpoint_dir) is not None:
        state, saved = _resume_from(checkpoint_dir, state)
        history = list(saved.get("history", []))
        start = int(saved["epoch"])
    if mesh is not None:
        state, x = jax.device_put((state, x), distributed.replicated(mesh))
    epoch_fn = make_epoch(make_step(loss_fn, optimizer), batch_size, mesh)

    @jax.jit
    def guarded_epoch(state, x, key):
        new_state, info = epoch_fn(state, x, key)
        return new_state, info, all_finite(new_state.params)

    emit = log or (lambda s: tqdm.write(s))
    bar = tqdm(range(start, epochs), initial=start, total=epochs, disable=not progress,
               desc="train", unit="epoch", leave=False)
    last_saved_step = int(state.step)
    for epoch in bar:
        t0 = time.perf_counter()
        new_state, info, finite = guarded_epoch(state, x, jax.random.fold_in(key, epoch))
        info, finite = jax.device_get((info, finite))  # the epoch's one host sync
        info = {k: float(v) for k, v in info.items()}
        if not math.isfinite(info["loss"]) or not finite:
            kept = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
            where = (f"; the last good checkpoint (epoch {kept}) is kept in {checkpoint_dir}"
                     if kept is not None else "")
            steps = f"step ≤ {int(state.step) + (x.shape[0] // batch_size)}"
            if not math.isfinite(info["loss"]):
                raise NonFiniteLossError(
                    f"training loss became {info['loss']} during epoch {epoch + 1} "
                    f"({steps}){where}. Try a smaller learning rate."
                )
            raise NonFiniteParamsError(
                f"the parameters became NaN or Inf during epoch {epoch + 1} ({steps}) while "
                f"the loss stayed finite ({info['loss']:.4g}): a non-finite gradient; they "
                f"were not saved{where}. Try a smaller learning rate."
            )
        state = new_state
        row = {"epoch": epoch + 1, "step": int(state.step), **info,
               "seconds": time.perf_counter() - t0}
        if eval_fn is not None:
            row.update(eval_fn(state.params, epoch))
        history.append(row)
        bar.set_postfix({k: f"{row[k]:.2f}" for k in ("elbo", "iwae") if k in row} or
                        {"loss": f"{row['loss']:.3g}"})
        if log is not False:
            emit(_format_row(row))
        done = epoch + 1 == epochs
        crossed = int(state.step) // checkpoint_every > last_saved_step // checkpoint_every
        if checkpoint_dir is not None and (done or crossed):
            save_checkpoint(checkpoint_dir, state, {**meta, "history": history}, epoch=epoch + 1)
            last_saved_step = int(state.step)
    bar.close()
    return state, history


def _refuse_existing(directory, resume: bool) -> None:
    """`fit`'s own check: a run that does not resume must not write into a folder that already
    holds checkpoints (subfolders, such as a recipe's pretraining, are not its business)."""
    step = None if directory is None or resume else latest_checkpoint(directory)
    if step is not None:
        raise ValueError(
            f"{str(directory)!r} already holds checkpoints (latest: epoch {step}); resume from "
            "it (`resume=True`, `--resume`), write to another folder, or delete it first "
            "(`jaxvi train --overwrite`)."
        )


def _resume_from(directory, target: TrainState) -> tuple[TrainState, dict]:
    """Restore the newest intact checkpoint; damaged newer ones are set aside (renamed, so the
    resumed run can write those epochs again) and named in one warning."""
    state, saved, damaged = restore_into(directory, target)
    if damaged:
        moved = set_aside(directory, [d.step for d in damaged])
        listing = "; ".join(f"epoch {d.step}: {d.reason}" for d in damaged)
        warnings.warn(
            f"the newest checkpoint(s) in {str(directory)!r} are damaged ({listing}); resuming "
            f"from epoch {saved['epoch']}, the newest intact one; the damaged one(s) are kept "
            f"as {', '.join(repr(m.name) for m in moved)}.",
            DamagedCheckpointWarning, stacklevel=3,
        )
    return state, saved


def _format_row(row: dict) -> str:
    parts = [f"epoch {row['epoch']:4d}"]
    for k, v in row.items():
        if k in ("epoch", "step", "seconds"):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


# ----------------------------------------------------------------------------- the recipe


INFERENCE = ("elbo", "forward-kl")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training recipe. Defaults are what `jaxvi train` uses.

    epochs: joint ELBO epochs; pretrain_epochs: autoencoder epochs before a GMM on the codes
    initialises the prior (0 = none); pretrain_neighbors: k > 0 makes the pretraining target of
    each x one of its k nearest training neighbours (0 = a plain autoencoder); restarts: how
    many autoencoders are pretrained (together, vmapped); with more than one, the prior starts
    from their consensus clusters (a GMM on all restarts' codes side by side,
    `consensus_labels`) on the codes of the restart whose own GMM agrees with it most: no
    labels are used. n_samples: samples of w per data point in the ELBO. inference: "elbo"
    trains every network on the ELBO; "forward-kl" trains decoder and prior on the IWAE bound
    and the inference networks on the forward KL (reweighted wake-sleep, `jaxvi.wake_sleep`)
    with `wake_sleep_samples` samples of w.
    consensus_weight: with pretraining and inference="elbo", the joint loss adds this times the
    cross-entropy of q(z | w, x) against the pretraining clusters (the consensus labels; no
    labels of the data are used), each point's target the label fractions among it and its
    `consensus_smoothing` nearest training neighbours (0 = its own label); 0 = the ELBO alone.
    """

    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 1e-3
    pretrain_epochs: int = 100
    pretrain_learning_rate: float = 1e-3
    pretrain_neighbors: int = 5
    # 10 rather than 5: digits test accuracy over seeds 0-5 went from 0.842 ± 0.021 (min 0.802)
    # to 0.860 ± 0.007 (min 0.850) (benchmarks/eval_vae_digits.py); 16 or 20 were no better.
    # With the stacked-codes consensus it is 0.862 ± 0.005 (min 0.858).
    restarts: int = 10
    n_samples: int = 1
    seed: int = 0
    checkpoint_every: int = 500
    iwae_samples: int = 64
    eval_every: int = 10
    inference: str = "elbo"
    wake_sleep_samples: int = 16
    consensus_weight: float = 3.0
    consensus_smoothing: int = 15

    def __post_init__(self):
        for name in ("epochs", "batch_size", "n_samples", "checkpoint_every", "iwae_samples",
                     "eval_every", "restarts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer; got {getattr(self, name)!r}."
                )
        for name in ("pretrain_epochs", "pretrain_neighbors", "consensus_smoothing"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"`{name}` must be ≥ 0; got {getattr(self, name)!r}.")
        if not self.learning_rate > 0 or not self.pretrain_learning_rate > 0:
            raise ValueError("`learning_rate` and `pretrain_learning_rate` must be positive.")
        if not float(self.consensus_weight) >= 0:
            raise ValueError(f"`consensus_weight` must be ≥ 0; got {self.consensus_weight!r}.")
        check_choice("inference", self.inference, INFERENCE)
        if int(self.wake_sleep_samples) < 2:
            raise ValueError("`wake_sleep_samples` must be an integer ≥ 2; "
                             f"got {self.wake_sleep_samples!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def encode_means(model: HierarchicalVAE, x) -> np.ndarray:
    """Means of q(w | x) as float64 numpy. x: (N, D) -> (N, L)."""
    return np.asarray(jax.jit(lambda m, xx: m.encoder(xx)[0])(model, jnp.asarray(x)), np.float64)


def fit_code_gmm(codes: np.ndarray, k: int, *, seed: int):
    """A diagonal GMM (scikit-learn, 5 inits) on the codes. -> fitted GaussianMixture."""
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(k, covariance_type="diag", n_init=5, random_state=seed, reg_covar=1e-4)
    return gmm.fit(codes)


def consensus_labels(codes: Sequence[np.ndarray], k: int, *, seed: int) -> np.ndarray:
    """Consensus clusters of R encodings of the same N points: a diagonal GMM (`fit_code_gmm`)
    on the encodings side by side. codes: R arrays (N, L) -> labels (N,).

    Each restart's codes carry its own errors; a point's R codes together place it where the
    restarts agree. On digits (6 seeds, 10 restarts) this consensus labelled the training set
    0.871-0.882 correctly against 0.793-0.889 for a co-association matrix of the restarts'
    own GMM clusterings cut by average linkage."""
    stacked = np.concatenate([np.asarray(c, np.float64) for c in codes], axis=1)
    return fit_code_gmm(stacked, k, seed=seed).predict(stacked)


def set_prior(model: HierarchicalVAE, weights, means, variances) -> None:
    """Set the prior (π, μ_z, σ_z) in place. weights: (K,), means, variances: (K, L)."""
    model.prior.logits[...] = jnp.asarray(np.log(weights), jnp.float32)
    model.prior.mean[...] = jnp.asarray(means, jnp.float32)
    model.prior.raw_scale[...] = jnp.asarray(np.log(np.expm1(np.sqrt(variances))), jnp.float32)


def prior_from_labels(codes: np.ndarray, labels: np.ndarray, k: int, reg: float = 1e-4):
    """Per-cluster weights, means and (regularised) variances of the codes."""
    weights = np.array([np.mean(labels == c) for c in range(k)]) + 1e-6
    means = np.stack([codes[labels == c].mean(0) if np.any(labels == c) else codes.mean(0)
                      for c in range(k)])
    var = np.stack([codes[labels == c].var(0) if np.sum(labels == c) > 1 else codes.var(0)
                    for c in range(k)])
    return weights / weights.sum(), means, var + reg


def init_prior_from_codes(model: HierarchicalVAE, x: np.ndarray, *, seed: int) -> None:
    """Set the prior (π, μ_z, σ_z) in place from a diagonal GMM fitted to the encoder means."""
    gmm = fit_code_gmm(encode_means(model, x), model.config.components, seed=seed)
    set_prior(model, gmm.weights_, gmm.means_, gmm.covariances_)


def pretrain(
    model_config: VAEConfig, train_config: TrainConfig, x_train: np.ndarray, *,
    key: jax.Array, progress: bool = False, log: Callable[[str], None] | None = None,
    mesh: jax.sharding.Mesh | None = None, checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[HierarchicalVAE, dict]:
    """Pretrain `restarts` autoencoders (vmapped, one compiled step), cluster each one's codes
    with a GMM, and return the model whose prior starts from those clusters (the consensus when
    restarts > 1), with a summary (its "cluster_labels": (N,) the clusters of x_train the
    prior was set from). Uses no labels. With a `checkpoint_dir`, the autoencoders are
    checkpointed there every `checkpoint_every` steps and at the end (`fit`), and `resume=True`
    continues from there: the result equals an uninterrupted run's."""
    mc, tc = model_config, train_config
    r = tc.restarts
    keys = jax.random.split(key, r + 1)
    models = [HierarchicalVAE(mc, rngs=nnx.Rngs(params=keys[i])) for i in range(r)]
    graphdef = nnx.split(models[0])[0]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[split_model(m)[1] for m in models])
    n_neighbors = min(tc.pretrain_neighbors, x_train.shape[0] - 1)  # as many as there are
    x_fit = neighbor_table(x_train, n_neighbors) if n_neighbors else x_train
    loss = ensemble_loss(autoencoder_loss(graphdef, n_neighbors), r)
    meta = {"stage": "pretrain", "model_config": mc.to_dict(), "train_config": tc.to_dict()}
    state, hist = fit(
        loss, optax.adam(tc.pretrain_learning_rate), stacked, x_fit, key=keys[-1],
        epochs=tc.pretrain_epochs, batch_size=min(tc.batch_size, x_train.shape[0]),
        progress=progress, log=False, mesh=mesh, checkpoint_dir=checkpoint_dir,
        checkpoint_every=tc.checkpoint_every, resume=resume, meta=meta,
    )
    models = [merge_model(graphdef, jax.tree.map(lambda a, i=i: a[i], state.params))
              for i in range(r)]
    codes = [encode_means(m, x_train) for m in models]
    k = mc.components
    gmms = [fit_code_gmm(c, k, seed=tc.seed + i) for i, c in enumerate(codes)]
    summary = {"pretrain_loss": hist[-1]["loss"] / r}
    if r == 1:
        model = models[0]
        set_prior(model, gmms[0].weights_, gmms[0].means_, gmms[0].covariances_)
        summary.update(chosen_restart=0, cluster_labels=gmms[0].predict(codes[0]).tolist())
    else:
        labels = np.stack([g.predict(c) for g, c in zip(gmms, codes, strict=True)])
        consensus = consensus_labels(codes, k, seed=tc.seed)
        agreement = [metrics_lib.nmi(consensus, lab) for lab in labels]
        best = int(np.argmax(agreement))
        model = models[best]
        set_prior(model, *prior_from_labels(codes[best], consensus, k))
        summary.update(chosen_restart=best, agreement_nmi=agreement,
                       cluster_labels=consensus.tolist())
    if log:
        log("pretrained {} autoencoder(s) for {} epochs (loss {:.3g}); prior from {}".format(
            r, tc.pretrain_epochs, summary["pretrain_loss"],
            "a GMM on the codes" if r == 1 else
            f"the consensus of their GMMs (restart {summary['chosen_restart']}, NMI with "
            f"consensus {max(summary['agreement_nmi']):.3f})"))
    return model, summary


def train_vae(
    x_train: np.ndarray,
    model_config: VAEConfig,
    train_config: TrainConfig = TrainConfig(),
    *,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    data_name: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[HierarchicalVAE, list[dict]]:
    """The full recipe: autoencoder pretraining (`pretrain`), the prior from a GMM on the
    codes, joint training (ELBO, with the consensus term of `TrainConfig.consensus_weight`, or
    wake-sleep with `inference="forward-kl"`) with test
    metrics every `eval_every` epochs when x_test is given. Same seed, same result. With a
    `mesh`, training is data-parallel over its "data" axis. Every input is checked first
    (`check_train_inputs`). With a `checkpoint_dir`, pretraining is checkpointed in its
    `PRETRAIN_DIR` subfolder (removed once the run ends) and joint training in the folder
    itself; `resume=True` continues from wherever the run stopped, to the same result as an
    uninterrupted run. -> (trained model, history)."""
    check_train_inputs(x_train, model_config, train_config, x_test=x_test, mesh=mesh)
    check_fresh_checkpoint_dir(checkpoint_dir, resume)
    tc, mc = train_config, model_config
    key = jax.random.key(tc.seed)
    k_init, k_pre, k_train, k_eval = jax.random.split(key, 4)
    meta = {"model_config": mc.to_dict(), "train_config": tc.to_dict(), "data": data_name}
    pre_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / PRETRAIN_DIR
    resuming = (
        resume and checkpoint_dir is not None and latest_checkpoint(checkpoint_dir) is not None
    )
    if resuming:
        saved, _ = read_meta(checkpoint_dir)  # `fit`'s restore names any damage, once
        _check_saved_config(checkpoint_dir, saved, mc)
        model = HierarchicalVAE(mc, rngs=nnx.Rngs(params=k_init))  # structure only
        if "pretrain" in saved:
            meta["pretrain"] = saved["pretrain"]
        cluster_labels = meta.get("pretrain", {}).get("cluster_labels")
    elif tc.pretrain_epochs > 0:
        pre_resume = resume and pre_dir is not None and latest_checkpoint(pre_dir) is not None
        if pre_resume:
            saved, _ = read_meta(pre_dir)
            _check_saved_config(pre_dir, saved, mc, tc, ("restarts",))
            if log:
                log(f"resuming pretraining from epoch {saved['epoch']} of "
                    f"{tc.pretrain_epochs} ({pre_dir})")
        model, summary = pretrain(mc, tc, x_train, key=k_pre, progress=progress,
                                  log=log if log else None, mesh=mesh, checkpoint_dir=pre_dir,
                                  resume=pre_resume)
        meta["pretrain"] = summary
        cluster_labels = summary["cluster_labels"]
    else:
        model = HierarchicalVAE(mc, rngs=nnx.Rngs(params=k_init))
        cluster_labels = None
    graphdef, params = split_model(model)
    eval_fn = None
    if x_test is not None:
        evaluator = make_evaluator(graphdef, iwae_samples=tc.iwae_samples)

        def eval_fn(p, epoch):
            if (epoch + 1) % tc.eval_every and epoch + 1 != tc.epochs:
                return {}
            res, _ = evaluator(p, x_test, y_test, key=jax.random.fold_in(k_eval, epoch))
            return {f"test_{k}": v for k, v in res.items() if k not in ("reconstruction",)}

    if tc.inference == "forward-kl":
        from jaxvi.wake_sleep import rws_loss

        loss = rws_loss(graphdef, tc.wake_sleep_samples)
        x_fit = x_train
    elif cluster_labels is not None and tc.consensus_weight > 0:
        loss = consensus_elbo_loss(graphdef, tc.n_samples, tc.consensus_weight)
        targets = smooth_targets(np.asarray(x_train), np.asarray(cluster_labels),
                                 mc.components, tc.consensus_smoothing)
        x_fit = np.concatenate([np.asarray(x_train, np.float32), targets], axis=1)
    else:
        loss = elbo_loss(graphdef, tc.n_samples)
        x_fit = x_train
    state, history = fit(
        loss, optax.adam(tc.learning_rate), params, x_fit,
        key=k_train, epochs=tc.epochs, batch_size=tc.batch_size, eval_fn=eval_fn,
        checkpoint_dir=checkpoint_dir, checkpoint_every=tc.checkpoint_every, resume=resume,
        meta=meta, progress=progress, log=log, mesh=mesh,
    )
    if pre_dir is not None and pre_dir.is_dir():
        shutil.rmtree(pre_dir)  # the run's own checkpoint now holds what resuming needs
    return merge_model(graphdef, state.params), history


def check_train_inputs(
    x_train, model_config: VAEConfig, train_config: TrainConfig, *, x_test=None,
    mesh: jax.sharding.Mesh | None = None,
) -> None:
    """Everything `train_vae` needs of its inputs, checked before anything is trained: the
    data's shape, features and values, a `batch_size` no larger than the training set (and a
    multiple of the mesh's devices), and, with pretraining, at least `components` training
    points for the GMM on the codes. Raises `ValueError` naming the argument."""
    mc, tc = model_config, train_config
    check_data("x_train", x_train, mc.data_dim)
    if x_test is not None:
        check_data("x_test", x_test, mc.data_dim)
    n = np.shape(x_train)[0]
    if n < tc.batch_size:
        raise ValueError(
            f"`batch_size` ({tc.batch_size}) must not exceed the number of training points "
            f"({n}); use a batch size of at most {n}."
        )
    if tc.pretrain_epochs > 0 and n < mc.components:
        raise ValueError(
            f"`components` ({mc.components}) must not exceed the number of training points "
            f"({n}): the prior starts from a {mc.components}-component GMM on their codes."
        )
    if mesh is not None:
        n_dev = distributed.check_mesh(mesh).shape[distributed.DATA_AXIS]
        if tc.batch_size % n_dev:
            raise ValueError(
                f"`batch_size` ({tc.batch_size}) must be a multiple of the {n_dev} devices of "
                "`mesh` for data-parallel training."
            )


def _check_saved_config(directory, saved: dict, mc: VAEConfig, tc: TrainConfig | None = None,
                        train_fields: Sequence[str] = ()) -> None:
    """The checkpoint in `directory` was written for this model (and these `train_fields`)."""
    if "model_config" not in saved:
        raise ValueError(f"the checkpoint in {str(directory)!r} has no model config: it was "
                         "not written by `train_vae`.")
    saved_cfg = VAEConfig.from_dict(saved["model_config"])
    if saved_cfg != mc:
        raise ValueError(
            f"the checkpoint in {str(directory)!r} was written for model config "
            f"{saved_cfg}, not {mc}."
        )
    for name in train_fields:
        was = saved.get("train_config", {}).get(name)
        if was != getattr(tc, name):
            raise ValueError(f"the checkpoint in {str(directory)!r} was written with `{name}` "
                             f"{was!r}, not {getattr(tc, name)!r}.")


def load_model(checkpoint_dir) -> tuple[HierarchicalVAE, dict]:
    """Rebuild the model from a checkpoint folder written by `train_vae`: the newest intact
    checkpoint there (see `jaxvi.checkpoint`). -> (model, meta)."""
    meta, _ = read_meta(checkpoint_dir)  # `restore_checkpoint` below names any damage, once
    if "model_config" not in meta:
        raise ValueError(f"checkpoint in {str(checkpoint_dir)!r} has no model config.")
    if meta.get("stage") == "pretrain":
        raise ValueError(f"{str(checkpoint_dir)!r} holds a pretraining checkpoint (the "
                         "autoencoders), not a trained model; resume the run to finish it.")
    mc = VAEConfig.from_dict(meta["model_config"])
    tc = TrainConfig.from_dict(meta.get("train_config", {}))
    model = HierarchicalVAE(mc, rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    target = init_state(params, optax.adam(tc.learning_rate))
    state, meta = restore_checkpoint(checkpoint_dir, target)
    return merge_model(graphdef, state.params), meta


def dump_json(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def test_metrics(
    model: HierarchicalVAE, x_test, y_test=None, *, key: jax.Array, iwae_samples: int = 64
) -> dict:
    """The final metrics of a trained model on held-out data, keys named plainly:
    test_elbo, test_iwae, test_reconstruction, test_kl_z, test_kl_w, test_clusters_used and,
    with labels, test_accuracy and test_nmi. Checks x_test against the model's data_dim."""
    check_data("x_test", x_test, model.config.data_dim)
    graphdef, params = split_model(model)
    res, _ = make_evaluator(graphdef, iwae_samples=iwae_samples)(
        params, jnp.asarray(x_test), y_test, key=key
    )
    return {f"test_{k}": v for k, v in res.items()}
