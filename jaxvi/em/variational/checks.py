"""The checks of variational Bayes (concrete values, outside jit; messages that name the
argument): a warm-start posterior (`check_posterior`), a prior (`check_variational_prior`),
and the prior of a fit from its given parts and scikit-learn's defaults (`checked_prior`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi.em import checks as em_checks
from jaxvi.em import covariance
from jaxvi.em.variational.model import (
    VariationalPosterior,
    VariationalPrior,
    default_variational_prior,
)


def check_posterior(post: VariationalPosterior, k: int, d: int, cov: str, wt: str,
                    dtype) -> VariationalPosterior:
    """A warm-start q of `fit_variational`, its shapes checked against the fit's options.

    Args:
      post: the warm-start posterior.
      k: K, the number of components.
      d: D, the number of features.
      cov: the fit's covariance type ("full", "tied", "diag" or "spherical").
      wt: the fit's weight prior type (one of `WEIGHT_PRIOR_TYPES`).
      dtype: the dtype its arrays are cast to.

    Returns:
      `post` cast to dtype, carrying `cov` and `wt`.

    Raises:
      ValueError: a field of the wrong shape, or a carried type other than the fit's.
    """
    kind = covariance.of(cov)
    want = dict(weight_concentration=(k,) if wt == "dirichlet_distribution" else (2, k),
                mean_precision=(k,), means=(k, d),
                degrees_of_freedom=() if cov == "tied" else (k,), covariances=kind.shape(k, d),
                scale_tril=kind.shape(k, d) if kind.matrix else None)
    for name, shape in want.items():
        got = getattr(post, name)
        if (shape is None) != (got is None) or (got is not None and np.shape(got) != shape):
            raise ValueError(f"`init.{name}` must have shape {shape} for K = {k}, D = {d}, "
                             f"{cov!r} and {wt!r}; got "
                             f"{None if got is None else np.shape(got)}.")
    for name, carried, option in (("covariance_type", post.covariance_type, cov),
                                  ("weight_type", post.weight_type, wt)):
        if carried is not None and carried != option:
            raise ValueError(f"`init` is a posterior of {name} {carried!r}; the fit's is "
                             f"{option!r}.")
    post = post._replace(covariance_type=cov, weight_type=wt)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), post)


def check_variational_prior(prior: VariationalPrior, covariance_type: str, d: int) -> None:
    """scikit-learn's checks of a VB-EM prior (concrete arrays), with messages that name the
    argument.

    Args:
      prior: the prior; its fields' shapes are checked for D and the covariance type.
      covariance_type: "full", "tied", "diag" or "spherical".
      d: D, the number of features.

    Raises:
      ValueError: a non-positive γ or β0, a mean prior not (D,) or not finite, ν0 ≤ D − 1,
        or a covariance prior of the wrong shape or not positive (definite).
    """
    _validate.check_positive("weight_concentration_prior", prior.weight_concentration_prior)
    _validate.check_positive("mean_precision_prior", prior.mean_precision_prior)
    if prior.mean_prior.shape != (d,):
        raise ValueError(f"`mean_prior` must have shape ({d},); got {prior.mean_prior.shape}.")
    _validate.check_finite("mean_prior", prior.mean_prior)
    nu0 = float(prior.degrees_of_freedom_prior)
    if not nu0 > d - 1:
        raise ValueError(f"`degrees_of_freedom_prior` must be > n_features − 1 = {d - 1}; "
                         f"got {nu0!r}.")
    want = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance_type]
    psi0 = prior.covariance_prior
    if psi0.shape != want:
        raise ValueError(f"`covariance_prior` must have shape {want} for covariance_type "
                         f"{covariance_type!r}; got {psi0.shape}.")
    if len(want) == 2:
        _validate.check_positive_definite("covariance_prior", psi0)
    else:
        _validate.check_positive("covariance_prior", psi0)


# one compiled program (eagerly, each of its jnp operations would be one)
_default_prior = jax.jit(default_variational_prior,
                         static_argnames=("covariance_type", "n_components"))


def checked_prior(x: jax.Array, covariance_type: str, n_components: int, sample_weight=None,
                  reg_covar: float = 0.0, **given) -> VariationalPrior:
    """The prior of a fit to x, each prior left None taking scikit-learn's default.

    The defaults are `default_variational_prior`'s; each value is checked (concrete values;
    messages name them). The default covariance prior, the data's covariance, has its
    eigenvalues (variances for diag/spherical) floored at `reg_covar`, so that constant or
    collinear features (a singular data covariance) still give a valid prior; a given one is
    used as it is.

    Args:
      x: (N, D) data.
      covariance_type: "full", "tied", "diag" or "spherical".
      n_components: K.
      sample_weight: (N,) row weights, or None.
      reg_covar: the floor of the default covariance prior's eigenvalues.
      **given: the priors by `VariationalPrior`'s field names, None for the default.

    Returns:
      The checked `VariationalPrior`.

    Raises:
      ValueError: a given prior not finite or invalid, weights with Σ w ≤ 1 (default
        covariance prior), or a default covariance prior still singular after the floor.
    """
    for name, value in given.items():
        if value is not None:
            _validate.check_finite(name, np.asarray(value, dtype=float))
    default_psi = given.get("covariance_prior") is None
    if sample_weight is not None and default_psi:
        em_checks.check_weight_total(sample_weight)
    prior = _default_prior(x, covariance_type=covariance_type, n_components=n_components,
                           sample_weight=sample_weight, **given)
    if default_psi:  # (a covariance beyond the dtype's range is named as such first)
        _validate.check_finite("covariance_prior", prior.covariance_prior)
        prior = prior._replace(covariance_prior=_floored(prior.covariance_prior, reg_covar))
        psi = np.asarray(prior.covariance_prior, np.float64)
        low = float(np.min(np.linalg.eigvalsh(psi) if psi.ndim == 2 else psi))
        if not low > 0:
            raise ValueError(
                "The default `covariance_prior`, the covariance of `x`, is singular (smallest "
                f"eigenvalue {low:.3g}): some features are constant or collinear. Pass "
                "`reg_covar` > 0 (it floors the default prior's eigenvalues) or a "
                "`covariance_prior`.")
    check_variational_prior(prior, covariance_type, x.shape[1])
    return prior


def _floored(psi0: jax.Array, floor: float) -> jax.Array:
    """A covariance prior (D, D), (D,) or () with its eigenvalues (entries) raised to at
    least `floor`; unchanged where they already are. Host-side (concrete arrays)."""
    a = np.asarray(psi0, np.float64)
    if a.ndim < 2:
        return jnp.asarray(np.maximum(a, floor), psi0.dtype) if np.any(a < floor) else psi0
    lam, vec = np.linalg.eigh(a)
    if lam.min() >= floor:
        return psi0
    return jnp.asarray((vec * np.maximum(lam, floor)) @ vec.T, psi0.dtype)
