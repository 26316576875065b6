"""`kl_divergence(p, q)`: one entry point for distrax distributions and `jaxvi.mixture.Mixture`:
the closed form of `jaxvi.kl.gaussian` where one exists (else distrax's registered KL), and for
Gaussian mixtures the estimate of `jaxvi.kl.mixtures` that `method` names (never one chosen by
whether a key is passed); `divergence(p, q, method=...)`: every estimator of KL and every
other divergence between Gaussian mixtures in this package, by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi.kl.approximations import mixture_stratified_monte_carlo, mixture_unscented
from jaxvi.kl.divergences import mixture_cauchy_schwarz, mixture_jensen_renyi, mixture_l2_squared
from jaxvi.kl.gaussian import categorical, mvn, mvn_tril, normal_diag
from jaxvi.kl.mixtures import (
    mixture_bounds,
    mixture_lower_bound,
    mixture_matched_upper_bound,
    mixture_monte_carlo,
    mixture_product_upper_bound,
    mixture_variational,
    mixture_variational_upper_bound,
)
from jaxvi.kl.univariate import mixture_guaranteed_bounds_1d
from jaxvi.kl.wasserstein import mixture_w2_squared
from jaxvi.mixture import Mixture

__all__ = ["DIVERGENCE_METHODS", "divergence", "kl_divergence"]


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


def _registered(p, q) -> jax.Array | None:
    """distrax's own registered KL of the pair (e.g. Beta‖Beta), else None."""
    try:
        return p.kl_divergence(q)
    except (NotImplementedError, AttributeError, TypeError):
        return None


def _mixture_estimate(p: Mixture, q: Mixture, key, method: str, num_samples: int) -> jax.Array:
    """The mixture KL estimate that `method` names (see `kl_divergence`)."""
    if method == "auto":
        raise ValueError(
            "Gaussian mixtures have no closed-form KL, so `method` must name an estimate: "
            "'variational' (Hershey-Olsen), 'monte_carlo' (with `key`), 'matched', "
            "'variational_upper', 'lower' or 'upper'; got method='auto'.")
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
    """KL(p ‖ q) for distrax distributions and Gaussian mixtures. The estimator is always the
    one `method` names; a key never changes it.

    The rule: a pair with a closed form gets it, whatever `method` (which is for mixture
    pairs only): jaxvi's own — `Normal`‖`Normal` and `MultivariateNormalDiag`‖
    `MultivariateNormalDiag` (`normal_diag`), `MultivariateNormalFullCovariance` pairs
    (`mvn`), any other pair of `MultivariateNormalDiag/Tri/FullCovariance` (`mvn_tril`),
    `Categorical` (`categorical`) — else distrax's registered KL for the pair (e.g.
    `Beta`‖`Beta`). Gaussian mixtures (`distrax.MixtureSameFamily` with MVN components,
    `jaxvi.mixture.Mixture`, or a mixture against a single MVN) have no closed form, so
    "auto" raises and `method` must name the estimate: "monte_carlo" (`num_samples` draws,
    needs `key`; for its standard error call `mixture_monte_carlo`), "variational"
    (Hershey–Olsen), "matched" (matched upper bound), "variational_upper", "lower", "upper"
    (the tightest of our upper bounds). `key` is taken by "monte_carlo" only: passing one
    with any other method is an error, never a silent switch of estimator.

    Args:
      p, q: the two distributions (batch shapes broadcast).
      key: PRNG key of method="monte_carlo" (and only of it).
      method: "auto" (closed forms only) or one of "monte_carlo", "variational", "matched",
        "variational_upper", "lower", "upper" (mixture pairs).
      num_samples: Monte Carlo draws.

    Returns:
      KL(p ‖ q), an array of the broadcast batch shape.

    Examples:
      >>> import distrax
      >>> import jax.numpy as jnp
      >>> from jaxvi.kl import kl_divergence
      >>> p = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
      >>> q = distrax.MultivariateNormalDiag(jnp.ones(2), jnp.ones(2))
      >>> float(kl_divergence(p, q))  # ½‖μ_p − μ_q‖² with unit variances
      1.0
    """
    _validate.check_choice("method", method, _MIXTURE_METHODS)
    if key is not None and method != "monte_carlo":
        raise ValueError(f"`key` is used by method='monte_carlo' only; got a key with "
                         f"method={method!r} (name the estimator you want).")
    closed = _closed_form(p, q)
    if closed is not None:
        return closed
    p_mix, q_mix = _as_mixture(p), _as_mixture(q)
    if p_mix is None or q_mix is None:
        registered = _registered(p, q)
        if registered is not None:
            return registered
        raise ValueError(
            f"`p` and `q` must be a supported pair (Normal, MultivariateNormalDiag/Tri/"
            f"FullCovariance, Categorical, MixtureSameFamily of MVNs, jaxvi.mixture.Mixture, "
            f"or a pair distrax has a registered KL for); got {type(p).__name__} and "
            f"{type(q).__name__}.")
    return _mixture_estimate(p_mix, q_mix, key, method, num_samples)


def _sampled(fn):
    def run(p, q, key, num_samples):
        if key is None:
            raise ValueError("`key` is required for a Monte Carlo method; got None.")
        return fn(key, p, q, num_samples).estimate
    return run


def _deterministic(fn):
    return lambda p, q, key, num_samples: fn(p, q)


# name -> (what it is, fn(p, q, key, num_samples)); the order is the docstring's.
_DIVERGENCES = {
    "kl_monte_carlo": ("KL, Monte Carlo, ancestral draws (unbiased)",
                       _sampled(mixture_monte_carlo)),
    "kl_stratified": ("KL, Monte Carlo stratified by p's components, num_samples per "
                      "component (unbiased)", _sampled(mixture_stratified_monte_carlo)),
    "kl_unscented": ("KL, unscented transform (Goldberger et al. 2003)",
                     _deterministic(mixture_unscented)),
    "kl_variational": ("KL, variational approximation (Hershey & Olsen 2007)",
                       _deterministic(mixture_variational)),
    "kl_lower": ("KL lower bound (Durrieu, Thiran & Kelly 2012)",
                 _deterministic(mixture_lower_bound)),
    "kl_product_upper": ("KL upper bound (Durrieu, Thiran & Kelly 2012)",
                         _deterministic(mixture_product_upper_bound)),
    "kl_variational_upper": ("KL upper bound (Hershey & Olsen 2007)",
                             _deterministic(mixture_variational_upper_bound)),
    "kl_matched_upper": ("KL upper bound, best one-to-one matching (needs K ≤ J)",
                         _deterministic(mixture_matched_upper_bound)),
    "kl_upper": ("KL, the tightest of the upper bounds", lambda p, q, key, n:
                 mixture_bounds(p, q).upper),
    "kl_guaranteed_lower_1d": ("KL guaranteed lower bound, D = 1 (Nielsen & Sun 2016)",
                               lambda p, q, key, n: mixture_guaranteed_bounds_1d(p, q).lower),
    "kl_guaranteed_upper_1d": ("KL guaranteed upper bound, D = 1 (Nielsen & Sun 2016)",
                               lambda p, q, key, n: mixture_guaranteed_bounds_1d(p, q).upper),
    "cauchy_schwarz": ("Cauchy–Schwarz divergence (closed form)",
                       _deterministic(mixture_cauchy_schwarz)),
    "l2_squared": ("squared L2 distance ∫(p − q)² (closed form)",
                   _deterministic(mixture_l2_squared)),
    "jensen_renyi": ("Jensen–Rényi divergence of order 2, equal weights (closed form)",
                     _deterministic(mixture_jensen_renyi)),
    "mw2_squared": ("squared mixture Wasserstein distance MW2² (Delon & Desolneux 2020, "
                    "exact OT)", _deterministic(mixture_w2_squared)),
}

DIVERGENCE_METHODS = tuple(_DIVERGENCES)


def divergence(p, q, method: str, *, key: jax.Array | None = None,
               num_samples: int = 10_000) -> jax.Array:
    """A divergence between two Gaussian mixtures (or single Gaussians), by name.

    `method` is one of::

      "kl_monte_carlo"        KL, plain Monte Carlo with `num_samples` draws (needs `key`)
      "kl_stratified"         KL, Monte Carlo stratified by p's components, `num_samples` per
                              component (needs `key`)
      "kl_unscented"          KL, unscented-transform approximation
      "kl_variational"        KL, Hershey–Olsen variational approximation
      "kl_lower"              KL lower bound of Durrieu et al. (may be negative)
      "kl_product_upper"      KL upper bound of Durrieu et al.
      "kl_variational_upper"  KL upper bound of Hershey & Olsen
      "kl_matched_upper"      KL upper bound from the best matching of components (K ≤ J)
      "kl_upper"              the tightest of the KL upper bounds (`mixture_bounds`)
      "kl_guaranteed_lower_1d", "kl_guaranteed_upper_1d"
                              guaranteed KL bounds for D = 1 (`mixture_guaranteed_bounds_1d`)
      "cauchy_schwarz"        Cauchy–Schwarz divergence (closed form)
      "l2_squared"            ∫(p − q)² (closed form)
      "jensen_renyi"          Jensen–Rényi divergence of order 2, weights ½ (closed form)
      "mw2_squared"           squared mixture Wasserstein distance (exact discrete OT)

    For the standard errors of the Monte Carlo methods call `mixture_monte_carlo` /
    `mixture_stratified_monte_carlo`; for other Jensen–Rényi weights `mixture_jensen_renyi`.

    Args:
      p: `jaxvi.mixture.Mixture`, distrax `MixtureSameFamily` of MVNs or a distrax MVN (a
        one-component mixture), batch shape (...).
      q: the same kinds; batch axes broadcast with p's.
      method: a name from the list above (`DIVERGENCE_METHODS`).
      key: PRNG key, needed by the sampled methods only.
      num_samples: draws (per component for "kl_stratified") of the sampled methods.

    Returns:
      (...) the divergence.

    Raises:
      ValueError: an unknown `method`, a sampled method without `key`, or p and q that are
        not compatible mixtures.
    """
    _validate.check_choice("method", method, DIVERGENCE_METHODS)
    p_mix, q_mix = _as_mixture(p), _as_mixture(q)
    for name, dist, mix in (("p", p, p_mix), ("q", q, q_mix)):
        if mix is None:
            raise ValueError(f"`{name}` must be a jaxvi.mixture.Mixture, a distrax "
                             f"MixtureSameFamily of MVNs or a distrax MVN; got "
                             f"{type(dist).__name__}.")
    return _DIVERGENCES[method][1](p_mix, q_mix, key, num_samples)
