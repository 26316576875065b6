"""The jitted inference behind `jaxvi.vae.estimator.MixtureVAE`'s `predict_proba`,
`transform` and `score_samples`: one set of compiled functions per model structure (a
`VAEConfig`), each applied to one chunk of rows with fixed standard-normal draws ε.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvi.vae import bounds
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, merge_model


@functools.lru_cache(maxsize=16)
def _graphdef(mc: VAEConfig):
    return nnx.split(HierarchicalVAE(mc, rngs=nnx.Rngs(0)))[0]


class _Inference:
    """Jitted per-chunk inference of one model structure: params, x (B, D), eps (S, L)."""

    def __init__(self, graphdef):
        self.graphdef = graphdef
        self.cluster_probs = jax.jit(self._cluster_probs)
        self.latent_means = jax.jit(lambda p, x: merge_model(graphdef, p).encoder(x)[0])
        self.iwae = jax.jit(self._iwae)

    def _latents(self, model, x, eps):
        mean, scale = model.encoder(x)
        return mean[:, None] + scale[:, None] * eps[None], mean, scale  # (B, S, L)

    def _cluster_probs(self, params, x, eps):
        model = merge_model(self.graphdef, params)
        w, _, _ = self._latents(model, x, eps)
        logits = model.cluster_logits(w, x, model.prior())
        return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=1)

    def _iwae(self, params, x, eps):
        model = merge_model(self.graphdef, params)
        prior = model.prior()
        w, mean, scale = self._latents(model, x, eps)
        log_px_w = jax.vmap(model.decoder.log_prob)(x, model.decoder(w))
        return jax.vmap(lambda lp, wb, m, s: bounds.iwae_bound(lp, wb, m, s, *prior))(
            log_px_w, w, mean, scale)


@functools.lru_cache(maxsize=16)
def _inference(mc: VAEConfig) -> _Inference:
    return _Inference(_graphdef(mc))
