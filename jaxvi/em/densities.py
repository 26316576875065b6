"""Densities of a `GMM`, checked public functions: `log_prob`, `e_step`, `free_energy`,
`sample` and the information criteria `n_parameters`, `bic` and `aic`; each validates its
arguments, then calls its unchecked kernel in `jaxvi.em.kernels` (re-exported here).

EM is coordinate ascent on the free energy F(θ, q) = Σ_z q(z) log p_θ(x, z) − Σ_z q(z) log q(z):
the E step sets q = p_θ(z | x), and then F = log p_θ(x).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi.em import checks
from jaxvi.em.kernels import (  # noqa: F401  (re-exported: the kernels' former home)
    _free_energy,
    conditional_log_prob,
    count_parameters,
    e_step_kernel,
    joint_log_prob,
    log_prob_kernel,
    sample_kernel,
    whitening,
)
from jaxvi.em.model import GMM


def log_prob(x: jax.Array, gmm: GMM) -> jax.Array:
    """Mixture log density log p(x_n). x: (N, D) -> (N,)."""
    checks.check_gmm(gmm)
    checks.check_x(x, gmm.n_features)
    return log_prob_kernel(checks.as_float(x, gmm), gmm)


def e_step(x: jax.Array, gmm: GMM) -> tuple[jax.Array, jax.Array]:
    """E step: log q(z_n = k) = log p(z = k | x_n) and the mean log-likelihood.
    x: (N, D) -> (log_resp (N, K), ()). Through Cholesky factors and log-sum-exp."""
    checks.check_x(x, gmm.n_features)
    checks.check_gmm(gmm)
    return e_step_kernel(jnp.asarray(x), gmm)


def free_energy(x: jax.Array, gmm: GMM, resp: jax.Array) -> jax.Array:
    """Mean free energy (1/N) Σ_n [Σ_k q_nk log p(x_n, k) − Σ_k q_nk log q_nk].
    x: (N, D), resp q: (N, K) -> (). Equals the mean log-likelihood when q is the E step's."""
    checks.check_x(x, gmm.n_features)
    checks.check_gmm(gmm)
    checks.check_resp(resp, np.shape(x)[0], gmm.n_components)
    return _free_energy(jnp.asarray(x), gmm, jnp.asarray(resp))


def sample(key: jax.Array, gmm: GMM, n: int) -> tuple[jax.Array, jax.Array]:
    """Draw n points: returns (x (n, D), component labels z (n,))."""
    checks.check_gmm(gmm)
    if int(n) < 1:
        raise ValueError(f"`n` must be a positive integer; got {n!r}.")
    return sample_kernel(key, gmm, int(n))


def n_parameters(gmm: GMM) -> int:
    """Free parameters: K−1 weights, K·D means and the covariances (scikit-learn's count)."""
    checks.check_gmm(gmm)
    return count_parameters(gmm.covariance_type, gmm.n_components, gmm.n_features)


def bic(x: jax.Array, gmm: GMM) -> jax.Array:
    """Bayesian information criterion −2 log L + p log N (lower is better). x: (N, D)."""
    n = np.shape(x)[0] if np.ndim(x) == 2 else 0
    return -2.0 * jnp.sum(log_prob(x, gmm)) + n_parameters(gmm) * math.log(max(n, 1))


def aic(x: jax.Array, gmm: GMM) -> jax.Array:
    """Akaike information criterion −2 log L + 2p (lower is better). x: (N, D)."""
    return -2.0 * jnp.sum(log_prob(x, gmm)) + 2 * n_parameters(gmm)
