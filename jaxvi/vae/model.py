"""The hierarchical VAE as Flax NNX modules.

p(z) = Cat(π), p(w | z) = N(μ_z, diag σ_z²), p(x | w) = N(f(w), diag σ_x²) with a learned,
floored per-pixel σ_x (or Bernoulli(σ(f(w))));
q(w | x) = N(m(x), diag s(x)²), q(z | w, x) = Cat(softmax(log π + log p(w | z) + r(w, x))).

The head's logits start from the prior's own posterior p(z | w) plus a learned residual r whose
last layer starts at zero, so q(z | w, x) = p(z | w) at initialisation: the "warm start" that
keeps a near-uniform q(z | w, x) from dragging every prior component onto every point.

The modules return the distributions' parameters; the bounds themselves are the pure functions
of `jaxvi.vae.bounds`. `split_model` / `merge_model` turn a model into (graphdef, a pure dict of
arrays) and back, the form the training step differentiates. The modules' configuration,
`VAEConfig`, is `jaxvi.vae.model_config` (importable from here too).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvi._deprecation import renamed_keyword
from jaxvi._linalg import inverse_softplus
from jaxvi.nn import dense
from jaxvi.vae import bounds
from jaxvi.vae.model_config import LIKELIHOODS, VAEConfig  # noqa: F401  (LIKELIHOODS: re-exported)


class MLP(nnx.Module):
    """Dense layers with ReLU between them (none after the last): (..., d_in) -> (..., d_out).

    Args:
      d_in: input width.
      hidden: widths of the hidden layers.
      d_out: output width.
      rngs: the initialisation's random streams.
      zero_last: start the last layer's weights at zero (else LeCun normal).
    """

    def __init__(
        self, d_in: int, hidden: Sequence[int], d_out: int, *, rngs: nnx.Rngs, zero_last=False
    ):
        sizes = [d_in, *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, dot_general=dense.dot_general, rngs=rngs)
                               for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
        init = nnx.initializers.zeros_init() if zero_last else nnx.initializers.lecun_normal()
        self.out = nnx.Linear(sizes[-1], d_out, kernel_init=init, dot_general=dense.dot_general,
                              rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.out(x)


class Encoder(nnx.Module):
    """q(w | x) = N(mean, diag scale²). Called on x: (..., D), returns mean, scale: (..., L).

    Args:
      cfg: the model's config.
      rngs: the initialisation's random streams.
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.net = MLP(cfg.data_dim, cfg.hidden, 2 * cfg.latent_dim, rngs=rngs)
        self.min_scale = cfg.min_latent_scale

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, raw = jnp.split(self.net(x), 2, axis=-1)
        return mean, self.min_scale + jax.nn.softplus(raw)


class GaussianMixturePrior(nnx.Module):
    """p(z) = Cat(softmax(logits)), p(w | z) = N(mean_z, diag scale_z²).

    Args:
      cfg: the model's config.
      rngs: the initialisation's random streams (the means start N(0, 1)).
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        k, l = cfg.components, cfg.latent_dim
        self.logits = nnx.Param(jnp.zeros((k,), jnp.float32))
        self.mean = nnx.Param(jax.random.normal(rngs.params(), (k, l)))
        self.raw_scale = nnx.Param(jnp.full((k, l), inverse_softplus(1.0), jnp.float32))

    def __call__(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """-> logits (K,), mean (K, L), scale (K, L)."""
        return self.logits[...], self.mean[...], jax.nn.softplus(self.raw_scale[...]) + 1e-4


class ClusterHead(nnx.Module):
    """Logits of q(z | w, x): log π + log p(w | z) + r(w, x), r starting at zero.

    Called on w: (S, L), x: (D,) and prior: (logits, mean, scale), returns (S, K).

    Args:
      cfg: the model's config.
      rngs: the initialisation's random streams.
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.net = MLP(
            cfg.latent_dim + cfg.data_dim, cfg.head_hidden, cfg.components, rngs=rngs,
            zero_last=True,
        )

    def __call__(self, w: jax.Array, x: jax.Array, prior) -> jax.Array:
        xs = jnp.broadcast_to(x, (*w.shape[:-1], x.shape[-1]))
        residual = self.net(jnp.concatenate([w, xs], axis=-1))
        return bounds.prior_posterior_logits(w, *prior) + residual


class Decoder(nnx.Module):
    """p(x | w), the decoder.

    Called on w: (..., L), returns (mean, scale) each (..., D) for "gaussian" (scale per pixel,
    learned, floored at min_scale), or (logits,) for "bernoulli".

    Args:
      cfg: the model's config.
      rngs: the initialisation's random streams.
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.net = MLP(cfg.latent_dim, cfg.hidden[::-1], cfg.data_dim, rngs=rngs)
        self.likelihood = cfg.likelihood
        self.min_scale = cfg.min_scale
        if cfg.likelihood == "gaussian":
            raw = jnp.full((cfg.data_dim,), inverse_softplus(0.2), jnp.float32)
            self.raw_scale = nnx.Param(raw)

    def __call__(self, w: jax.Array) -> tuple[jax.Array, ...]:
        out = self.net(w)
        if self.likelihood == "gaussian":
            scale = self.min_scale + jax.nn.softplus(self.raw_scale[...])
            return out, jnp.broadcast_to(scale, out.shape)
        return (out,)

    def log_prob(self, x: jax.Array, params: tuple[jax.Array, ...]) -> jax.Array:
        """log p(x | w).

        Args:
          x: (D,) one data point.
          params: the decoder's output for w, with batch shape (...).

        Returns:
          (...) log-likelihoods.
        """
        if self.likelihood == "gaussian":
            return bounds.gaussian_log_likelihood(x, *params)
        return bounds.bernoulli_log_likelihood(x, *params)

    def mean(self, params: tuple[jax.Array, ...]) -> jax.Array:
        """E[x | w], the picture to draw.

        Args:
          params: the decoder's output for w, with batch shape (...).

        Returns:
          (..., D) means.
        """
        if self.likelihood == "gaussian":
            return params[0]
        return jax.nn.sigmoid(params[0])


class HierarchicalVAE(nnx.Module):
    """The whole model. All methods take a batch x: (B, D); keys are keyword-only.

    Args:
      cfg: the model's config (kept as `config`).
      rngs: the initialisation's random streams.
    """

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.encoder = Encoder(cfg, rngs=rngs)
        self.head = ClusterHead(cfg, rngs=rngs)
        self.prior = GaussianMixturePrior(cfg, rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)

    # ---- pieces -------------------------------------------------------------------------
    @renamed_keyword("n_samples", "num_samples", "HierarchicalVAE.sample_latents")
    def sample_latents(self, x: jax.Array, *, key: jax.Array, num_samples: int):
        """S reparameterised samples of q(w | x) per data point, one key per point split from
        `key`.

        Args:
          x: (B, D) data.
          key: PRNG key.
          num_samples: S, samples per data point.

        Returns:
          (w, mean, scale): samples (B, S, L) and q(w | x)'s mean and scale, each (B, L).
        """
        mean, scale = self.encoder(x)
        return bounds.sample_w_batch(mean, scale, num_samples, key=key), mean, scale

    def cluster_logits(self, w: jax.Array, x: jax.Array, prior) -> jax.Array:
        """Logits of q(z | w, x) for a batch.

        Args:
          w: (B, S, L) samples.
          x: (B, D) data.
          prior: (logits, mean, scale) as `self.prior()` gives them.

        Returns:
          (B, S, K) logits.
        """
        return jax.vmap(lambda wb, xb: self.head(wb, xb, prior))(w, x)

    def _per_point(self, x, key, num_samples):
        """For each x_b: S samples of w and the log-likelihoods. -> w (B, S, L), mean, scale
        (B, L), log_px_w (B, S)."""
        w, mean, scale = self.sample_latents(x, key=key, num_samples=num_samples)
        params = self.decoder(w)
        log_px_w = jax.vmap(self.decoder.log_prob)(x, params)
        return w, mean, scale, log_px_w

    @renamed_keyword("n_samples", "num_samples", "HierarchicalVAE.elbo_terms")
    def elbo_terms(self, x: jax.Array, *, key: jax.Array, num_samples: int = 1) -> bounds.ElboTerms:
        """The three ELBO terms per data point.

        Args:
          x: (B, D) data.
          key: PRNG key.
          num_samples: samples of w per data point.

        Returns:
          `ElboTerms`, each (B,).
        """
        prior = self.prior()
        w, mean, scale, log_px_w = self._per_point(x, key, num_samples)
        qz_logits = self.cluster_logits(w, x, prior)
        return jax.vmap(lambda lp, wb, m, s, ql: bounds.elbo_terms(lp, wb, m, s, ql, *prior))(
            log_px_w, w, mean, scale, qz_logits
        )

    @renamed_keyword("n_samples", "num_samples", "HierarchicalVAE.elbo")
    def elbo(self, x: jax.Array, *, key: jax.Array, num_samples: int = 1) -> jax.Array:
        """ELBO per data point.

        Args:
          x: (B, D) data.
          key: PRNG key.
          num_samples: samples of w per data point.

        Returns:
          (B,) ELBOs.
        """
        return self.elbo_terms(x, key=key, num_samples=num_samples).elbo

    @renamed_keyword("n_samples", "num_samples", "HierarchicalVAE.iwae")
    def iwae(self, x: jax.Array, *, key: jax.Array, num_samples: int = 64) -> jax.Array:
        """The num_samples-sample IWAE bound on log p(x) per data point.

        Args:
          x: (B, D) data.
          key: PRNG key.
          num_samples: samples of w per data point.

        Returns:
          (B,) bounds.
        """
        prior = self.prior()
        w, mean, scale, log_px_w = self._per_point(x, key, num_samples)
        return jax.vmap(lambda lp, wb, m, s: bounds.iwae_bound(lp, wb, m, s, *prior))(
            log_px_w, w, mean, scale
        )

    @renamed_keyword("n_samples", "num_samples", "HierarchicalVAE.cluster_probs")
    def cluster_probs(self, x: jax.Array, *, key: jax.Array, num_samples: int = 16) -> jax.Array:
        """q(z | x) ≈ mean over w ~ q(w | x) of q(z | w, x).

        Args:
          x: (B, D) data.
          key: PRNG key.
          num_samples: samples of w per data point.

        Returns:
          (B, K) probabilities.
        """
        prior = self.prior()
        w, _, _ = self.sample_latents(x, key=key, num_samples=num_samples)
        logits = self.cluster_logits(w, x, prior)
        return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=1)

    @renamed_keyword("n_samples", "num_samples", "HierarchicalVAE.cluster")
    def cluster(self, x: jax.Array, *, key: jax.Array, num_samples: int = 16) -> jax.Array:
        """Predicted component per data point: argmax of q(z | x).

        Args:
          x: (B, D) data.
          key: PRNG key.
          num_samples: samples of w per data point.

        Returns:
          (B,) int components.
        """
        return jnp.argmax(self.cluster_probs(x, key=key, num_samples=num_samples), axis=-1)

    def reconstruct(self, x: jax.Array) -> jax.Array:
        """E[x | w = mean of q(w | x)].

        Args:
          x: (B, D) data.

        Returns:
          (B, D) reconstructions.
        """
        mean, _ = self.encoder(x)
        return self.decoder.mean(self.decoder(mean))

    def sample(
        self, key: jax.Array, n: int, component: int | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """n draws from the model: z ~ π (or fixed to `component`), w ~ p(w | z), and the
        decoder mean E[x | w].

        Args:
          key: PRNG key.
          n: number of draws.
          component: None, or the component z to draw from.

        Returns:
          (x, z): decoder means (n, D) and components (n,).

        Raises:
          ValueError: a component outside [0, K).
        """
        logits, _, _ = self.prior()
        key_z, key_w = jax.random.split(key)
        if component is None:
            z = jax.random.categorical(key_z, logits, shape=(n,))
        else:
            k = self.config.components
            if not 0 <= int(component) < k:
                raise ValueError(f"`component` must be in [0, {k}); got {component!r}.")
            z = jnp.full((n,), int(component))
        return self.sample_given(key_w, z), z

    def sample_given(self, key: jax.Array, z: jax.Array) -> jax.Array:
        """E[x | w] for w ~ p(w | z) with the components z given (jit-friendly).

        Args:
          key: PRNG key.
          z: (n,) int components.

        Returns:
          (n, D) decoder means.
        """
        _, mean, scale = self.prior()
        w = mean[z] + scale[z] * jax.random.normal(key, (z.shape[0], mean.shape[-1]), mean.dtype)
        return self.decoder.mean(self.decoder(w))


def split_model(model: nnx.Module):
    """Split a model into its structure and its parameters, the form the step differentiates.

    Args:
      model: an NNX module, e.g. a `HierarchicalVAE`.

    Returns:
      (graphdef, params as a pure dict of arrays).
    """
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)


def merge_model(graphdef, params) -> HierarchicalVAE:
    """The model again from `split_model`'s (graphdef, params).

    Args:
      graphdef: the structure.
      params: the pure dict of arrays.

    Returns:
      The model.
    """
    return nnx.merge(graphdef, params)
