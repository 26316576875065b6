"""The types of variational Bayes for Gaussian mixtures: the conjugate prior
`VariationalPrior` (scikit-learn's defaults: `default_variational_prior`) and the posterior
`VariationalPosterior` q(π) q(μ, Λ), which carries its covariance type and its weight prior's
type; its mean weights `mixture_weights` and expected log weights `expected_log_weights`.
Layouts follow scikit-learn's `BayesianGaussianMixture`: covariances full (K, D, D), tied
(D, D), diag (K, D), spherical (K,); degrees of freedom (K,), tied ().
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from jaxvi.em import covariance
from jaxvi.em.stats import weighted_covariance, weighted_mean

WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


class VariationalPrior(NamedTuple):
    """The conjugate prior of VB-EM, with scikit-learn's names (its defaults:
    `default_variational_prior`).

    weight_concentration_prior: () γ > 0 (Dirichlet(γ·1), or the sticks' Beta(1, γ));
    mean_precision_prior: () β0 > 0; mean_prior: (D,) m0; degrees_of_freedom_prior: () ν0 > D − 1;
    covariance_prior: W0⁻¹ in scikit-learn's layout: full/tied (D, D), diag (D,), spherical ().
    """

    weight_concentration_prior: jax.Array
    mean_precision_prior: jax.Array
    mean_prior: jax.Array
    degrees_of_freedom_prior: jax.Array
    covariance_prior: jax.Array


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weight_concentration", "mean_precision", "means", "degrees_of_freedom",
                 "covariances", "scale_tril"],
    meta_fields=["covariance_type", "weight_type"],
)
@dataclasses.dataclass(frozen=True)
class VariationalPosterior:
    """q(π) q(μ, Λ), scikit-learn's fitted attributes.

    weight_concentration: Dirichlet (K,) α_k, or the sticks' Beta parameters (2, K) (a_k, b_k)
    for "dirichlet_process"; mean_precision: (K,) β_k; means: (K, D) m_k; degrees_of_freedom:
    (K,) ν_k, () for tied; covariances: (ν_k W_k)⁻¹ (scikit-learn's `covariances_`: full
    (K, D, D), tied (D, D), diag (K, D), spherical (K,)); scale_tril: their lower Cholesky
    factors for full/tied, None for diag/spherical. covariance_type and weight_type (the
    weight prior's type, one of `WEIGHT_PRIOR_TYPES`): static pytree metadata, set by the
    fit (None when not known; then functions that need them take them as arguments).
    """

    weight_concentration: jax.Array
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    covariances: jax.Array
    scale_tril: jax.Array | None = None
    covariance_type: str | None = None
    weight_type: str | None = None

    def _replace(self, **kwargs) -> VariationalPosterior:
        return dataclasses.replace(self, **kwargs)


def settings(post: VariationalPosterior, covariance_type: str | None = None,
             weight_type: str | None = None) -> tuple[str, str]:
    """(covariance type, weight prior type) of `post`: those given, else those it carries.

    Args:
      post: the posterior.
      covariance_type: the covariance type, or None for the one `post` carries.
      weight_type: the weight prior type, or None for the one `post` carries.

    Returns:
      (covariance_type, weight_type), two strings.

    Raises:
      ValueError: neither the argument nor `post` says one of them.
    """
    return (_setting("covariance_type", covariance_type, post.covariance_type),
            _setting("weight_type", weight_type, post.weight_type))


def _setting(name: str, given, carried):
    if given is None and carried is None:
        raise ValueError(f"`{name}` must be given: the posterior does not carry it.")
    return carried if given is None else given


def default_variational_prior(x: jax.Array, *, covariance_type: str = "full", n_components: int,
                              weight_concentration_prior=None, mean_precision_prior=None,
                              mean_prior=None, degrees_of_freedom_prior=None,
                              covariance_prior=None, sample_weight=None) -> VariationalPrior:
    """scikit-learn's prior for x, each argument left None taking its default.

    The defaults: 1/K, 1, the data mean, D, and the data covariance (ddof 1; its diagonal for
    diag, the mean of that for spherical). With sample_weight: the weighted mean and the
    frequency-weighted covariance (those of x with rows repeated: `weighted_covariance`).
    A traced primitive (no checks: `fit_variational` checks). Not MAP-EM's `Prior`
    (`jaxvi.em.default_prior`).

    Args:
      x: (N, D) data.
      covariance_type: "full", "tied", "diag" or "spherical".
      n_components: K.
      weight_concentration_prior: () γ, default 1/K.
      mean_precision_prior: () β0, default 1.
      mean_prior: (D,) m0, default the data mean.
      degrees_of_freedom_prior: () ν0, default D.
      covariance_prior: W0⁻¹, full/tied (D, D), diag (D,), spherical (); default from the data.
      sample_weight: (N,) row weights, or None.

    Returns:
      The `VariationalPrior`, in x's dtype.
    """
    dt = x.dtype
    d = x.shape[-1]
    if covariance_prior is None:
        if covariance.of(covariance_type).matrix:
            covariance_prior = weighted_covariance(x, sample_weight)
        else:
            var = (jnp.var(x, axis=0, ddof=1) if sample_weight is None
                   else jnp.diagonal(weighted_covariance(x, sample_weight)))
            covariance_prior = var if covariance_type == "diag" else jnp.mean(var)
    return VariationalPrior(
        jnp.asarray(1.0 / n_components if weight_concentration_prior is None
                    else weight_concentration_prior, dt),
        jnp.asarray(1.0 if mean_precision_prior is None else mean_precision_prior, dt),
        jnp.asarray(weighted_mean(x, sample_weight) if mean_prior is None else mean_prior, dt),
        jnp.asarray(d if degrees_of_freedom_prior is None else degrees_of_freedom_prior, dt),
        jnp.asarray(covariance_prior, dt),
    )


def expected_log_weights(weight_concentration: jax.Array, weight_type: str) -> jax.Array:
    """E_q[ln π_k]: ψ(α_k) − ψ(Σα) (Dirichlet), or for the sticks v_k ~ Beta(a_k, b_k)
    E[ln v_k] + Σ_{j<k} E[ln(1 − v_j)].

    Args:
      weight_concentration: (K,) α (Dirichlet) or (2, K) the sticks' (a, b).
      weight_type: "dirichlet_distribution" or "dirichlet_process".

    Returns:
      (K,) the expected log weights.
    """
    if weight_type == "dirichlet_distribution":
        return digamma(weight_concentration) - digamma(jnp.sum(weight_concentration))
    a, b = weight_concentration
    total = digamma(a + b)
    log_rest = digamma(b) - total
    return digamma(a) - total + jnp.cumsum(log_rest) - log_rest


def mixture_weights(post: VariationalPosterior, weight_type: str | None = None) -> jax.Array:
    """E_q[π], scikit-learn's `weights_`.

    Args:
      post: the posterior.
      weight_type: the weight prior's type (default: the one `post` carries).

    Returns:
      (K,) the mean weights, summing to 1.

    Raises:
      ValueError: no weight_type given and none carried.
    """
    weight_type = _setting("weight_type", weight_type, post.weight_type)
    conc = post.weight_concentration
    if weight_type == "dirichlet_distribution":
        return conc / jnp.sum(conc)
    a, b = conc
    stick = b / (a + b)
    w = a / (a + b) * jnp.concatenate([jnp.ones((1,), a.dtype), jnp.cumprod(stick[:-1])])
    return w / jnp.sum(w)
