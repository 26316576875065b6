"""Flax NNX modules for the hierarchical (Gaussian-mixture-prior) VAE. They return the
distributions' parameters; the bounds themselves live in `jaxvi.elbo`."""

from jaxvi.nn.vae import (
    LIKELIHOODS,
    MLP,
    ClusterHead,
    Decoder,
    Encoder,
    GaussianMixturePrior,
    HierarchicalVAE,
    VAEConfig,
)

__all__ = [
    "LIKELIHOODS",
    "MLP",
    "ClusterHead",
    "Decoder",
    "Encoder",
    "GaussianMixturePrior",
    "HierarchicalVAE",
    "VAEConfig",
]
