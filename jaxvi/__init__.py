"""jaxvi: KL divergences, EM for Gaussian mixtures and a hierarchical VAE in JAX.

Submodules load on first use, so `import jaxvi` stays cheap: `jaxvi.kl` (KL divergences),
`jaxvi.mixture` (the Gaussian-mixture distribution), `jaxvi.em` (EM), `jaxvi.vi` (fitting by
inclusive or exclusive KL), `jaxvi.vae` (the hierarchical VAE), `jaxvi.training` (the optax
step, loop and checkpoints), ...

Importing jaxvi changes two JAX settings, each only where the user has not set it: it turns
on JAX's persistent compilation cache in a user cache folder, so that a second process does
not compile again (`jaxvi.compilation_cache`; `JAXVI_COMPILATION_CACHE=0` in the environment
keeps it off, `jaxvi.disable_compilation_cache()` turns it off, `jaxvi.enable_compilation_cache`
picks another folder); and on jaxlib 0.10.x with fewer than 8 usable cores, if neither
`PJRT_NPROC` nor `NPROC` is set and JAX's backends have not started, it sets `PJRT_NPROC=8`,
the size of XLA's CPU thread pool, against a deadlock of batched LAPACK calls in those
versions (`jaxvi._cpu_threads`).
"""

from __future__ import annotations

import importlib

from jaxvi import _cpu_threads, compilation_cache

_cpu_threads.apply()
compilation_cache.apply_default()

__version__ = "0.1.0"  # the one source of the version: pyproject.toml reads it from here

_SUBMODULES = (
    "kl", "mixture", "em", "vi", "vae", "training", "data", "metrics", "nn", "distributed",
)
_ATTRIBUTES = {"GaussianMixture": "jaxvi.estimators.gaussian_mixture",
               "BayesianGaussianMixture": "jaxvi.estimators.bayesian_mixture",
               "MixtureVAE": "jaxvi.vae.estimator",
               "enable_compilation_cache": "jaxvi.compilation_cache",
               "disable_compilation_cache": "jaxvi.compilation_cache"}

__all__ = [*_SUBMODULES, *_ATTRIBUTES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxvi.{name}")
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'jaxvi' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
