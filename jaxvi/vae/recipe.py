"""The hierarchical VAE's training recipe: autoencoder pretraining (`jaxvi.vae.pretrain`), the
prior from a GMM on the codes, then joint training (`jaxvi.training.loop.fit`) on the ELBO
(with a consensus-clustering term) or by reweighted wake-sleep; checkpointed and resumable at
every stage. `TrainConfig` holds the recipe, `train_vae` runs it, `load_model` rebuilds a
trained model from its checkpoint folder. The checks of the inputs and of the checkpoint folder
are `jaxvi.vae.recipe_checks`, whose public names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from jaxvi import processes
from jaxvi._deprecation import renamed_keyword
from jaxvi._validate import check_choice
from jaxvi.training.checkpoint import (
    has_checkpoint,
    read_meta,
    remove_saved,
    restore_checkpoint,
    saved_entries,
)
from jaxvi.training.loop import epoch_plan, fit
from jaxvi.training.step import LossFn, init_state
from jaxvi.vae.clusters import EMBEDDINGS
from jaxvi.vae.evaluate import make_evaluator
from jaxvi.vae.losses import (
    consensus_elbo_loss,
    elbo_loss,
    neighbor_indices,
    principal_components,
    smooth_targets,
)
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, merge_model, split_model
from jaxvi.vae.pretrain import pretrain
from jaxvi.vae.recipe_checks import (  # also re-exported: their former home
    PRETRAIN_DIR,
    _check_saved_config,
    check_fresh_checkpoint_dir,
    check_train_inputs,
)

INFERENCE = ("elbo", "forward-kl")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training recipe. Defaults are what `jaxvi train` uses.

    Attributes:
      epochs: joint ELBO epochs.
      steps: the step budget of joint training (None = none): at most that many optimizer
        steps (rounded up to a whole number of batches per epoch) whatever the data's size,
        fewer epochs of fewer batches when the epochs would take more
        (`jaxvi.training.loop.epoch_plan`), so that the cost stops growing with N.
      batch_size: rows per optimizer step.
      learning_rate: Adam's learning rate in joint training.
      pretrain_epochs: autoencoder epochs before a GMM on the codes initialises the prior
        (0 = none).
      pretrain_steps: the step budget of pretraining, as `steps`.
      pretrain_learning_rate: Adam's learning rate in pretraining.
      pretrain_neighbors: k > 0 makes the pretraining target of each x one of its k nearest
        training neighbours (0 = a plain autoencoder).
      neighbor_dims: with more features than this, neighbours are searched on that many
        principal components (0 = always on all features).
      restarts: how many autoencoders are pretrained (together, vmapped); with more than one,
        the prior starts from their consensus clusters (a GMM on all restarts' codes side by
        side, `jaxvi.vae.clusters.consensus_labels`) on the codes of the restart whose own GMM
        agrees with it most: no labels are used.
      elbo_samples: samples of w per data point in the ELBO (formerly `n_samples`, still
        accepted with a DeprecationWarning).
      seed: the run's random seed.
      checkpoint_every: optimizer steps between checkpoints.
      iwae_samples: samples of w for the test IWAE bound.
      eval_every: epochs between test evaluations (and at the last).
      inference: "elbo" trains every network on the ELBO; "forward-kl" trains decoder and
        prior on the IWAE bound and the inference networks on the forward KL (reweighted
        wake-sleep, `jaxvi.vae.wake_sleep`) with `wake_sleep_samples` samples of w.
      wake_sleep_samples: samples of w per data point for "forward-kl", ≥ 2.
      consensus_weight: with pretraining and inference="elbo", the joint loss adds this times
        the cross-entropy of q(z | w, x) against the pretraining clusters (the consensus
        labels; no labels of the data are used); 0 = the ELBO alone.
      consensus_smoothing: each point's target is the label fractions among it and its
        `consensus_smoothing` nearest training neighbours (0 = its own label).
      embedding: how the pretraining clusters are found in the codes
        (`jaxvi.vae.clusters.consensus_labels`): "umap", a full-covariance GMM on the codes'
        UMAP embedding in K dimensions with `embedding_neighbors` neighbours (N2D's step);
        "none", a diagonal GMM on the codes themselves.
      embedding_neighbors: neighbours of the UMAP embedding.

    Raises:
      ValueError: a field out of its range, or an unknown `inference` or `embedding`.
    """

    epochs: int = 60
    steps: int | None = 3000
    batch_size: int = 128
    learning_rate: float = 1e-3
    pretrain_epochs: int = 100
    pretrain_steps: int | None = 4000
    pretrain_learning_rate: float = 1e-3
    pretrain_neighbors: int = 0
    neighbor_dims: int = 64
    restarts: int = 2
    elbo_samples: int = 1
    seed: int = 0
    checkpoint_every: int = 500
    iwae_samples: int = 64
    eval_every: int = 10
    inference: str = "elbo"
    wake_sleep_samples: int = 16
    consensus_weight: float = 10.0
    consensus_smoothing: int = 0
    embedding: str = "umap"
    embedding_neighbors: int = 20

    def __post_init__(self):
        for name in ("epochs", "batch_size", "elbo_samples", "checkpoint_every", "iwae_samples",
                     "eval_every", "restarts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer; got {getattr(self, name)!r}."
                )
        for name in ("steps", "pretrain_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value
                                      or int(value) < 1):
                raise ValueError(f"`{name}` must be a positive integer or None (no step "
                                 f"budget); got {value!r}.")
        for name in ("pretrain_epochs", "pretrain_neighbors", "consensus_smoothing",
                     "neighbor_dims", "embedding_neighbors"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"`{name}` must be ≥ 0; got {getattr(self, name)!r}.")
        if not self.learning_rate > 0 or not self.pretrain_learning_rate > 0:
            raise ValueError("`learning_rate` and `pretrain_learning_rate` must be positive.")
        if not float(self.consensus_weight) >= 0:
            raise ValueError(f"`consensus_weight` must be ≥ 0; got {self.consensus_weight!r}.")
        check_choice("inference", self.inference, INFERENCE)
        check_choice("embedding", self.embedding, EMBEDDINGS)
        if int(self.wake_sleep_samples) < 2:
            raise ValueError("`wake_sleep_samples` must be an integer ≥ 2; "
                             f"got {self.wake_sleep_samples!r}.")

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict, stored with the checkpoints.

        Returns:
          A dict of the fields.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config of a dict from `to_dict` (a checkpoint's former field names accepted).

        Args:
          d: the fields; unknown keys are ignored.

        Returns:
          The `TrainConfig`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        d = {_RENAMED.get(k, k): v for k, v in d.items()}  # a checkpoint's former names
        return cls(**{k: v for k, v in d.items() if k in names})


# TrainConfig's former field names -> the new ones (one release: a DeprecationWarning)
_RENAMED = {"n_samples": "elbo_samples"}
TrainConfig.__init__ = renamed_keyword("n_samples", "elbo_samples", "TrainConfig")(
    TrainConfig.__init__)


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
    input_scale: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[HierarchicalVAE, list[dict]]:
    """The full recipe: pretraining, the prior from a GMM on the codes, then joint training.

    Autoencoder pretraining is `jaxvi.vae.pretrain.pretrain`; joint training is the ELBO,
    with the consensus term of `TrainConfig.consensus_weight`, or wake-sleep with
    `inference="forward-kl"`. Same seed, same result. Every input is checked first
    (`check_train_inputs`).

    Args:
      x_train: (N, D) training data, D = `model_config.data_dim`.
      model_config: the model.
      train_config: the recipe.
      x_test: (M, D) held-out data: test metrics join the history every `eval_every` epochs
        and at the last.
      y_test: (M,) labels of x_test, optional.
      checkpoint_dir: pretraining is checkpointed in its `PRETRAIN_DIR` subfolder (removed
        once the run ends) and joint training in the folder itself.
      resume: continue from wherever the run in `checkpoint_dir` stopped, to the same result
        as an uninterrupted run.
      progress: show progress bars.
      log: called with one line per epoch and the pretraining summary (False: silent).
      data_name: stored with the checkpoints (what `jaxvi evaluate` loads by default).
      input_scale: stored with the checkpoints: the factor the data was multiplied by on load
        (1/255 for uint8 images, `jaxvi.data.input_scale`), for predicting on data in the
        user's units.
      mesh: train data-parallel over its "data" axis.

    Returns:
      (trained model, history: one dict of metrics per joint-training epoch).

    Raises:
      ValueError: an input `check_train_inputs` or `check_fresh_checkpoint_dir` refuses, or a
        checkpoint to resume from that another model wrote.
    """
    check_train_inputs(x_train, model_config, train_config, x_test=x_test, mesh=mesh)
    check_fresh_checkpoint_dir(checkpoint_dir, resume)
    tc, mc = train_config, model_config
    key = jax.random.key(tc.seed)
    k_init, k_pre, k_train, k_eval = jax.random.split(key, 4)
    meta = {"model_config": mc.to_dict(), "train_config": tc.to_dict(), "data": data_name,
            "input_scale": float(input_scale)}
    pre_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / PRETRAIN_DIR
    neighbors = _Neighbors(x_train, tc)
    model, pretrained = _initial_model(
        mc, tc, x_train, checkpoint_dir=checkpoint_dir, pre_dir=pre_dir, resume=resume,
        k_init=k_init, k_pre=k_pre, progress=progress, log=log, mesh=mesh, neighbors=neighbors,
    )
    if pretrained is not None:
        meta["pretrain"] = pretrained
    graphdef, params = split_model(model)
    epochs, _ = epoch_plan(np.shape(x_train)[0], tc.batch_size, tc.epochs, tc.steps)
    eval_fn = (None if x_test is None else
               _test_eval_fn(graphdef, tc, epochs, x_test, y_test, k_eval))
    cluster_labels = None if pretrained is None else pretrained.get("cluster_labels")
    loss, x_fit = _joint_loss(graphdef, mc, tc, x_train, cluster_labels, neighbors)
    if pretrained is not None and "seconds" in pretrained:
        pretrained["seconds"]["neighbors"] = neighbors.seconds
        pretrained["cpu_seconds"]["neighbors"] = neighbors.cpu_seconds
    state, history = fit(
        loss, optax.adam(tc.learning_rate), params, x_fit, max_steps=tc.steps,
        key=k_train, epochs=tc.epochs, batch_size=tc.batch_size, eval_fn=eval_fn,
        checkpoint_dir=checkpoint_dir, checkpoint_every=tc.checkpoint_every, resume=resume,
        meta=meta, progress=progress, log=log, mesh=mesh,
    )
    if pre_dir is not None and pre_dir.is_dir():
        processes.wait_for_all("pretraining checkpoints done")
        if processes.is_main_process():  # the run's own checkpoint now holds what resuming
            remove_saved(saved_entries(pre_dir))  # needs; only what saves wrote goes
            if not any(pre_dir.iterdir()):
                pre_dir.rmdir()
    return merge_model(graphdef, state.params), history


# ----------------------------------------------------------------------------- the stages


class _Neighbors:
    """The training points' neighbour indices, searched when first asked for, once per k
    (one search for the widest k would order distance ties differently from the narrower
    search), on principal components computed once (`neighbor_indices`' `max_dims`).
    `seconds`, `cpu_seconds`: the wall and process CPU time of the projection and searches."""

    def __init__(self, x_train, tc: TrainConfig):
        self.x, self.max_dims, self._idx = x_train, tc.neighbor_dims, {}
        self.seconds = self.cpu_seconds = 0.0

    def __call__(self, k: int) -> np.ndarray:
        """-> (N, min(k, N − 1) + 1) indices, each point first."""
        if k not in self._idx:
            t0, c0 = time.perf_counter(), time.process_time()
            if 0 < self.max_dims < np.shape(self.x)[1]:
                self.x = principal_components(np.asarray(self.x), self.max_dims)
            self._idx[k] = neighbor_indices(np.asarray(self.x), k)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
        return self._idx[k]


def _initial_model(mc: VAEConfig, tc: TrainConfig, x_train, *, checkpoint_dir, pre_dir,
                   resume: bool, k_init, k_pre, progress, log, mesh, neighbors: _Neighbors):
    """The model joint training starts from, and the pretraining summary (None without one):
    when resuming joint training, a model of the right structure (`fit` restores the
    parameters) and the saved summary; else the pretrained model (pretraining resumed from
    `pre_dir` if it stopped there); without pretraining, a freshly initialised model."""
    if resume and has_checkpoint(checkpoint_dir):
        saved, _ = read_meta(checkpoint_dir)  # `fit`'s restore names any damage, once
        _check_saved_config(checkpoint_dir, saved, mc)
        return HierarchicalVAE(mc, rngs=nnx.Rngs(params=k_init)), saved.get("pretrain")
    if tc.pretrain_epochs == 0:
        return HierarchicalVAE(mc, rngs=nnx.Rngs(params=k_init)), None
    pre_resume = resume and has_checkpoint(pre_dir)
    if pre_resume:
        saved, _ = read_meta(pre_dir)
        _check_saved_config(pre_dir, saved, mc, tc, ("restarts",))
        if log:
            log(f"resuming pretraining from epoch {saved['epoch']} of "
                f"{tc.pretrain_epochs} ({pre_dir})")
    table = neighbors(tc.pretrain_neighbors) if tc.pretrain_neighbors else None
    return pretrain(mc, tc, x_train, key=k_pre, progress=progress, log=log if log else None,
                    mesh=mesh, checkpoint_dir=pre_dir, resume=pre_resume, neighbors=table)


def _test_eval_fn(graphdef, tc: TrainConfig, epochs: int, x_test, y_test,
                  key) -> Callable[[dict, int], dict]:
    """-> eval_fn(params, epoch): the test metrics ("test_" + name, reconstruction left out)
    every `eval_every` epochs and at the last of `epochs`, {} otherwise."""
    evaluator = make_evaluator(graphdef, iwae_samples=tc.iwae_samples)

    def eval_fn(p, epoch):
        if (epoch + 1) % tc.eval_every and epoch + 1 != epochs:
            return {}
        res, _ = evaluator(p, x_test, y_test, key=jax.random.fold_in(key, epoch))
        return {f"test_{k}": v for k, v in res.items() if k not in ("reconstruction",)}

    return eval_fn


def _joint_loss(graphdef, mc: VAEConfig, tc: TrainConfig, x_train, cluster_labels,
                neighbors: _Neighbors) -> tuple[LossFn, np.ndarray]:
    """-> (the joint-training loss, the data rows it reads): wake-sleep on x; the ELBO with the
    consensus term on x followed by its smoothed cluster targets, given pretraining clusters
    and a positive `consensus_weight`; else the ELBO on x."""
    if tc.inference == "forward-kl":
        from jaxvi.vae.wake_sleep import rws_loss

        return rws_loss(graphdef, tc.wake_sleep_samples), x_train
    if cluster_labels is not None and tc.consensus_weight > 0:
        loss = consensus_elbo_loss(graphdef, tc.elbo_samples, tc.consensus_weight)
        table = neighbors(tc.consensus_smoothing) if tc.consensus_smoothing else None
        targets = smooth_targets(np.asarray(cluster_labels), mc.components, table)
        return loss, np.concatenate([np.asarray(x_train, np.float32), targets], axis=1)
    return elbo_loss(graphdef, tc.elbo_samples), x_train


# ----------------------------------------------------------------------------- loading


def load_model(checkpoint_dir) -> tuple[HierarchicalVAE, dict]:
    """Rebuild the model from a checkpoint folder written by `train_vae`.

    From the newest intact checkpoint there (see `jaxvi.training.checkpoint`).

    Args:
      checkpoint_dir: the folder.

    Returns:
      (model, meta): the `HierarchicalVAE` and the checkpoint's metadata dict.

    Raises:
      FileNotFoundError: no checkpoint in the folder.
      ValueError: no intact checkpoint, no model config, or a pretraining checkpoint.
    """
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
