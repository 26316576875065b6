"""jaxvi: KL divergences, EM for Gaussian mixtures and a hierarchical VAE in JAX."""

from jaxvi import kl

__version__ = "0.1.0"
__all__ = ["kl"]
