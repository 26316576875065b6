"""`kl_divergence(p, q)`: one entry point for distrax distributions and `jaxvi.mixture.Mixture`,
picking the closed form of `jaxvi.kl.gaussian` where one exists and a mixture estimate of
`jaxvi.kl.mixtures` otherwise."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi.kl.gaussian import categorical, mvn, mvn_tril, normal_diag
from jaxvi.kl.mixtures import (
    mixture_bounds,
    mixture_matched_upper_bound,
    mixture_monte_carlo,
    mixture_variational,
    mixture_variational_upper_bound,
)
from jaxvi.mixture import Mixture

__all__ = ["kl_divergence"]


def _as_mvn_tril(dist):
    """(loc, scale_tril) of a distrax MVN (Diag/Tri/FullCovariance), else None."""
    import distrax

    if isinstance(dist, distrax.MultivariateNormalDiag):
        return dist.loc, jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(dist.scale_diag)
    if isinstance(dist, (distrax.MultivariateNormalTri, distrax.MultivariateNormalFullCovariance)):
        return dist.loc, dist.scale_tri
    return None


def _as_mixture(dist) -> Mixture | None:
    import distrax

    if isinstance(dist, Mixture):
        return dist
    mvn_params = _as_mvn_tril(dist)
    if mvn_params is not None:  # a single Gaussian is a one-component mixture
        loc, tril = mvn_params
        return Mixture(jnp.zeros((*loc.shape[:-1], 1), loc.dtype),
                               loc[..., None, :], tril[..., None, :, :])
    if isinstance(dist, distrax.MixtureSameFamily):
        comp = _as_mvn_tril(dist.components_distribution)
        if comp is not None:
            return Mixture(dist.mixture_distribution.logits, *comp)
    return None


_MIXTURE_METHODS = ("auto", "monte_carlo", "variational", "matched", "variational_upper",
                    "lower", "upper")


def _closed_form(p, q) -> jax.Array | None:
    """The closed-form KL of a supported pair of distrax distributions, else None."""
    import distrax

    if isinstance(p, distrax.Categorical) and isinstance(q, distrax.Categorical):
        return categorical(p.logits, q.logits)
    if isinstance(p, distrax.Normal) and isinstance(q, distrax.Normal):
        return normal_diag(jnp.asarray(p.loc)[..., None], jnp.asarray(p.scale)[..., None],
                           jnp.asarray(q.loc)[..., None], jnp.asarray(q.scale)[..., None])
    full, diag = distrax.MultivariateNormalFullCovariance, distrax.MultivariateNormalDiag
    if isinstance(p, diag) and isinstance(q, diag):
        return normal_diag(p.loc, p.scale_diag, q.loc, q.scale_diag)
    if isinstance(p, full) and isinstance(q, full):
        return mvn(p.loc, p.covariance_matrix, q.loc, q.covariance_matrix)
    p_tril, q_tril = _as_mvn_tril(p), _as_mvn_tril(q)
    if p_tril is not None and q_tril is not None:
        return mvn_tril(*p_tril, *q_tril)
    return None


def _mixture_estimate(p: Mixture, q: Mixture, key, method: str, num_samples: int) -> jax.Array:
    """The mixture KL estimate that `method` names (see `kl_divergence`)."""
    if method == "auto":
        method = "monte_carlo" if key is not None else "variational"
    if method == "monte_carlo":
        if key is None:
            raise ValueError("`key` is required for method='monte_carlo'; got None.")
        return mixture_monte_carlo(key, p, q, num_samples).estimate
    if method == "variational":
        return mixture_variational(p, q)
    if method == "matched":
        return mixture_matched_upper_bound(p, q)
    if method == "variational_upper":
        return mixture_variational_upper_bound(p, q)
    if method == "lower":
        return mixture_bounds(p, q).lower
    return mixture_bounds(p, q).upper


def kl_divergence(p, q, *, key: jax.Array | None = None, method: str = "auto",
                  num_samples: int = 10_000) -> jax.Array:
    """KL(p ‖ q) for distrax distributions, closed form where one exists.

    Closed forms: `Normal`‖`Normal` and `MultivariateNormalDiag`‖`MultivariateNormalDiag`
    (`normal_diag`), `MultivariateNormalFullCovariance` pairs (`mvn`), any other pair of
    `MultivariateNormalDiag/Tri/FullCovariance` (`mvn_tril`), `Categorical` (`categorical`).

    Gaussian mixtures (`distrax.MixtureSameFamily` with MVN components,
    `jaxvi.mixture.Mixture`, or a mixture against a single MVN) have no closed form; `method`
    picks the estimate: "auto" = Monte Carlo with `num_samples` draws if `key` is given,
    otherwise the Hershey–Olsen variational approximation; "monte_carlo" (needs `key`; for its
    standard error call `monte_carlo`), "variational", "matched" (matched upper bound),
    "variational_upper", "lower", "upper" (the tightest of our upper bounds).

    Args:
      p, q: the two distributions (batch shapes broadcast).
      key: PRNG key for the Monte Carlo estimate of a mixture pair.
      method: one of "auto", "monte_carlo", "variational", "matched", "variational_upper",
        "lower", "upper" (used for mixture pairs only).
      num_samples: Monte Carlo draws.

    Returns:
      KL(p ‖ q), an array of the broadcast batch shape.
    """
    _validate.check_choice("method", method, _MIXTURE_METHODS)
    closed = _closed_form(p, q)
    if closed is not None:
        return closed
    p_mix, q_mix = _as_mixture(p), _as_mixture(q)
    if p_mix is None or q_mix is None:
        raise ValueError(
            f"`p` and `q` must be a supported pair (Normal, MultivariateNormalDiag/Tri/"
            f"FullCovariance, Categorical, MixtureSameFamily of MVNs, jaxvi.mixture.Mixture); "
            f"got {type(p).__name__} and {type(q).__name__}.")
    return _mixture_estimate(p_mix, q_mix, key, method, num_samples)
