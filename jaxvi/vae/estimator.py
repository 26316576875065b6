"""`MixtureVAE`: the hierarchical VAE's recipe (`jaxvi.vae.recipe.train_vae`) as a
scikit-learn clusterer and transformer, saved and loaded as the recipe's orbax checkpoint.

Inference is deterministic: the samples of w ~ q(w | x) behind `predict_proba` and
`score_samples` are w = m(x) + s(x)·ε with one fixed set of standard-normal draws ε for every
point (from `random_state`), so a point's result depends neither on the call nor on the other
points of X.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_feature_names, check_array, check_is_fitted

from jaxvi import _validate, data
from jaxvi.training.checkpoint import latest_checkpoint, other_entries, replace_checkpoint
from jaxvi.training.step import init_state
from jaxvi.vae._estimator_inference import _graphdef, _inference  # the jitted inference
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, merge_model, split_model
from jaxvi.vae.recipe import TrainConfig, load_model, train_vae

_CHUNK = 512  # rows per jitted inference call
_TC = TrainConfig()  # the recipe's defaults are the estimator's
_MC = VAEConfig(data_dim=1)


class MixtureVAE(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin,
                 BaseEstimator):
    """Clustering with the hierarchical (Gaussian-mixture-prior) VAE, by `jaxvi train`'s recipe.

    Autoencoder pretraining, the prior from the consensus of GMMs on the codes, joint training
    on the ELBO, within a step budget. X: (n_samples, n_features), or images
    (n_samples, H, W[, C]), which are flattened; uint8 arrays (0–255) are scaled to [0, 1].
    The factor (`input_scale_`) is kept and applied to the X of every later call, so pass data
    in the units `fit` saw.

    Args:
      n_components: K clusters; K = 1 fits one Gaussian prior.
      latent_dim: L, the codes' dimension.
      hidden: layer widths of the encoder and decoder.
      head_hidden: layer widths of the cluster head.
      likelihood: "gaussian" or "bernoulli" (X in [0, 1] after scaling).
      epochs: joint training takes at most this many passes.
      steps: joint training takes about this many optimizer steps.
      pretrain_epochs: as `epochs`, for pretraining; 0 epochs = none.
      pretrain_steps: as `steps`, for pretraining.
      restarts: see `jaxvi.vae.recipe.TrainConfig`.
      pretrain_neighbors: see `jaxvi.vae.recipe.TrainConfig`.
      embedding: "umap" or "none": how the clusters the prior starts from are found in the
        pretrained codes.
      batch_size: rows per optimizer step, capped at n_samples.
      learning_rate: see `jaxvi.vae.recipe.TrainConfig`.
      consensus_weight: see `jaxvi.vae.recipe.TrainConfig`.
      cluster_samples: samples of w for `predict_proba`.
      iwae_samples: samples of w for `score_samples`.
      random_state: seed of the recipe and of the fixed draws of inference.
      verbose: show progress bars and one line per epoch.

    Attributes:
      labels_: (n_samples,) the training points' clusters.
      n_features_in_: features per (flattened) sample.
      input_scale_: the factor X is multiplied by.
      model_config_: a `VAEConfig`.
      train_config_: a `TrainConfig`.
      params_: the networks' parameters, NumPy arrays.
      history_: metrics per joint-training epoch.
      n_steps_: joint-training steps.
      seed_: the seed used.
    """

    def __init__(self, n_components=10, *, latent_dim=_MC.latent_dim, hidden=_MC.hidden,
                 head_hidden=_MC.head_hidden, likelihood=_MC.likelihood, epochs=_TC.epochs,
                 steps=_TC.steps, pretrain_epochs=_TC.pretrain_epochs,
                 pretrain_steps=_TC.pretrain_steps, restarts=_TC.restarts,
                 pretrain_neighbors=_TC.pretrain_neighbors, embedding=_TC.embedding,
                 batch_size=_TC.batch_size, learning_rate=_TC.learning_rate,
                 consensus_weight=_TC.consensus_weight, cluster_samples=16, iwae_samples=64,
                 random_state=None, verbose=False):
        self.n_components = n_components
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.head_hidden = head_hidden
        self.likelihood = likelihood
        self.epochs = epochs
        self.steps = steps
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_steps = pretrain_steps
        self.restarts = restarts
        self.pretrain_neighbors = pretrain_neighbors
        self.embedding = embedding
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.consensus_weight = consensus_weight
        self.cluster_samples = cluster_samples
        self.iwae_samples = iwae_samples
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # the networks compute in float32
        return tags

    # ------------------------------------------------------------------------------ fitting

    def fit(self, X, y=None):
        """Train on X.

        Args:
          X: (n_samples, n_features).
          y: ignored (scikit-learn's signature).

        Returns:
          self, fitted.

        Raises:
          ValueError: a bad parameter, or X not numeric and finite, with fewer than
            max(2, n_components) samples, or with values the likelihood cannot take.
        """
        _validate.check_int("n_components", self.n_components, 1)
        for name in ("cluster_samples", "iwae_samples"):
            _validate.check_int(name, getattr(self, name), 1)
        x = self._features(X, reset=True)
        if x.shape[0] < self.n_components:
            raise ValueError(f"`X` must have at least n_components = {self.n_components} "
                             f"samples; got n_samples = {x.shape[0]}.")
        rs = self.random_state
        seed = (int(rs) if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool)
                else int(check_random_state(rs).randint(np.iinfo(np.int32).max)))
        mc = VAEConfig(data_dim=x.shape[1], components=self.n_components,
                       latent_dim=self.latent_dim, hidden=tuple(self.hidden),
                       head_hidden=tuple(self.head_hidden), likelihood=self.likelihood)
        tc = TrainConfig(
            epochs=self.epochs, steps=self.steps, pretrain_epochs=self.pretrain_epochs,
            pretrain_steps=self.pretrain_steps, restarts=self.restarts,
            pretrain_neighbors=self.pretrain_neighbors, embedding=self.embedding,
            batch_size=min(int(self.batch_size), x.shape[0]), learning_rate=self.learning_rate,
            consensus_weight=self.consensus_weight, seed=seed,
        )
        model, history = train_vae(x, mc, tc, progress=bool(self.verbose),
                                   log=print if self.verbose else False)
        self._set_fitted(model, tc, history, seed)
        self.labels_ = self.predict(X)
        return self

    def _set_fitted(self, model: HierarchicalVAE, tc: TrainConfig, history, seed: int) -> None:
        self.model_config_ = model.config
        self.train_config_ = tc
        self.params_ = jax.tree.map(np.asarray, split_model(model)[1])
        self.history_ = list(history)
        self.n_steps_ = int(history[-1]["step"]) if history else 0
        self.seed_ = int(seed)
        self._n_features_out = model.config.latent_dim

    def _features(self, X, *, reset: bool) -> np.ndarray:
        """X checked (numeric, finite, ≥ 2 samples to fit; in [0, 1] for a Bernoulli decoder,
        of a scale float32 training holds for a Gaussian one) -> (N, D) float32 scaled by
        `input_scale_` (set from X's dtype when `reset`)."""
        if not reset:
            check_is_fitted(self, "params_")
        _check_feature_names(self, X, reset=reset)
        X = check_array(X, allow_nd=True, dtype="numeric", ensure_min_samples=2 if reset else 1,
                        input_name="X")
        data.check_real_values(X, "`X`", np.float32)
        d = int(np.prod(X.shape[1:]))
        if reset:
            self.n_features_in_ = d
            self.input_scale_ = data.input_scale(X)
        elif d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        x = data.as_features(X, self.input_scale_)
        scaled = f", after scaling by {self.input_scale_:.4g}" if self.input_scale_ != 1 else ""
        if self.likelihood == "bernoulli":
            _validate.check_unit_interval(
                "X", x, "a Bernoulli decoder (likelihood='bernoulli')" + scaled)
        else:
            min_scale = VAEConfig.min_scale if reset else self.model_config_.min_scale
            _validate.check_gaussian_scale(f"`X`{scaled}", x, min_scale)
        return x

    # ---------------------------------------------------------------------------- inference

    def _eps(self, n: int, stream: int) -> jax.Array:
        """(n, L) fixed standard-normal draws, the same on every call."""
        key = jax.random.fold_in(jax.random.key(self.seed_), stream)
        return jax.random.normal(key, (n, self.model_config_.latent_dim), jnp.float32)

    def _run(self, name: str, x: np.ndarray, *extra) -> np.ndarray:
        """The jitted inference `name` over chunks of x, each padded with zero rows to a
        power of two (at most `_CHUNK` rows), so that a few shapes are ever compiled."""
        fn = getattr(_inference(self.model_config_), name)
        outs = []
        for i in range(0, x.shape[0], _CHUNK):
            chunk = x[i : i + _CHUNK]
            rows = min(_CHUNK, 1 << max(3, (chunk.shape[0] - 1).bit_length()))
            padded = np.zeros((rows, x.shape[1]), np.float32)
            padded[: chunk.shape[0]] = chunk
            outs.append(np.asarray(fn(self.params_, jnp.asarray(padded), *extra))[
                : chunk.shape[0]])
        return np.concatenate(outs)

    def predict_proba(self, X):
        """q(z | x) averaged over `cluster_samples` samples of w ~ q(w | x).

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples, n_components) cluster probabilities.
        Raises:
          ValueError: X with another number of features or values the model cannot take.
        """
        x = self._features(X, reset=False)
        return self._run("cluster_probs", x, self._eps(self.cluster_samples, 1))

    def predict(self, X):
        """The cluster of each sample, argmax of `predict_proba`.

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples,) int cluster labels.
        Raises:
          ValueError: X with another number of features or values the model cannot take.
        """
        return np.argmax(self.predict_proba(X), axis=1)

    def transform(self, X):
        """Means of q(w | x).

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples, latent_dim).
        Raises:
          ValueError: X with another number of features or values the model cannot take.
        """
        return self._run("latent_means", self._features(X, reset=False))

    def score_samples(self, X):
        """The `iwae_samples`-sample IWAE bound on log p(x) per sample.

        Of X as the model sees it, times `input_scale_`.

        Args:
          X: (n_samples, n_features).

        Returns:
          (n_samples,) lower bounds on log p(x).
        Raises:
          ValueError: X with another number of features or values the model cannot take.
        """
        x = self._features(X, reset=False)
        return self._run("iwae", x, self._eps(self.iwae_samples, 2))

    def score(self, X, y=None):
        """Mean IWAE bound over X.

        Args:
          X: (n_samples, n_features).
          y: ignored (scikit-learn's signature).

        Returns:
          The mean of `score_samples(X)`, a float.
        Raises:
          ValueError: X with another number of features or values the model cannot take.
        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, component=None):
        """Draws z ~ π (or z = component), w ~ p(w | z), decoded to E[x | w] in X's units.

        (Divided by `input_scale_`.)

        Args:
          n_samples: number of draws, ≥ 1.
          component: None to draw z from π, or a cluster index to fix it.

        Returns:
          (X, z): points (n_samples, n_features) and their clusters (n_samples,).

        Raises:
          ValueError: n_samples < 1, or a component outside [0, n_components).
        """
        check_is_fitted(self, "params_")
        n = _validate.check_int("n_samples", n_samples, 1)
        model = merge_model(_graphdef(self.model_config_), self.params_)
        x, z = model.sample(jax.random.fold_in(jax.random.key(self.seed_), 3), n, component)
        return np.asarray(x) / self.input_scale_, np.asarray(z)

    # ----------------------------------------------------------------------- save and load

    def save(self, path, *, overwrite: bool = False, allow_other_files: bool = False) -> Path:
        """Write the fitted model as an orbax checkpoint folder, the format `jaxvi train` writes.

        So `jaxvi.vae.recipe.load_model` and `jaxvi evaluate` read it too. A folder that
        already holds a checkpoint is refused unless `overwrite`, which replaces that
        checkpoint only (its step folders and metadata; the new one is complete on disk
        before the old one goes). A folder that holds anything a save did not write (a
        user's files or folders) is refused unless `allow_other_files`; those are never
        deleted or changed.

        Args:
          path: the folder.
          overwrite: replace a checkpoint already there.
          allow_other_files: save beside files a save did not write.

        Returns:
          The folder, a `Path`.

        Raises:
          ValueError: `path` is a file, or holds a checkpoint or other files not allowed.
        """
        check_is_fitted(self, "params_")
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"`path` must be a folder; got {str(path)!r}, which is a file.")
        if latest_checkpoint(path) is not None and not overwrite:
            raise ValueError(f"`path` {str(path)!r} already holds a checkpoint; pass "
                             "overwrite=True to replace it, or choose another folder.")
        others = other_entries(path)
        if others and not allow_other_files:
            names = ", ".join(repr(p.name) for p in others[:3])
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            raise ValueError(
                f"`path` {str(path)!r} holds what no save wrote ({names}{more}); pass "
                "allow_other_files=True to save beside them (they are left as they are), or "
                "choose another folder.")
        tc = self.train_config_
        params = jax.tree.map(jnp.asarray, self.params_)
        meta = {"model_config": self.model_config_.to_dict(), "train_config": tc.to_dict(),
                "input_scale": self.input_scale_, "history": self.history_,
                "estimator": {"class": type(self).__name__, "params": _json_params(self),
                              "seed": self.seed_}}
        epoch = int(self.history_[-1]["epoch"]) if self.history_ else 0
        replace_checkpoint(path, init_state(params, optax.adam(tc.learning_rate)), meta,
                           epoch=epoch)
        return path

    @classmethod
    def load(cls, path) -> MixtureVAE:
        """A fitted estimator from a checkpoint folder written by `save` or by `jaxvi train`.

        Args:
          path: the checkpoint folder.

        Returns:
          A fitted `MixtureVAE`.

        Raises:
          FileNotFoundError: no checkpoint in the folder.
          ValueError: no intact checkpoint of a trained model.
        """
        model, meta = load_model(path)
        tc = TrainConfig.from_dict(meta.get("train_config", {}))
        mc = model.config
        saved = meta.get("estimator", {})
        est = cls(**saved.get("params", {
            "n_components": mc.components, "latent_dim": mc.latent_dim, "hidden": mc.hidden,
            "head_hidden": mc.head_hidden, "likelihood": mc.likelihood, "epochs": tc.epochs,
            "steps": tc.steps, "pretrain_epochs": tc.pretrain_epochs,
            "pretrain_steps": tc.pretrain_steps, "restarts": tc.restarts,
            "pretrain_neighbors": tc.pretrain_neighbors, "embedding": tc.embedding,
            "batch_size": tc.batch_size, "learning_rate": tc.learning_rate,
            "consensus_weight": tc.consensus_weight, "random_state": tc.seed}))
        for name in ("hidden", "head_hidden"):
            setattr(est, name, tuple(getattr(est, name)))
        est.n_features_in_ = mc.data_dim
        est.input_scale_ = float(meta.get("input_scale", 1.0))
        est._set_fitted(model, tc, meta.get("history", []), saved.get("seed", tc.seed))
        return est


def _json_params(est: MixtureVAE) -> dict:
    """get_params() as JSON: tuples as lists, a RandomState as None."""
    params = est.get_params()
    params["hidden"], params["head_hidden"] = list(est.hidden), list(est.head_hidden)
    if not isinstance(params["random_state"], (int, np.integer, type(None))):
        params["random_state"] = None
    return params
