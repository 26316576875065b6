"""VB-EM iterations and `fit_variational`: the loop on device (`lax.while_loop`), restarts
batched, each iteration EM's fused E step (fast or precise kernel) on `expected_gmm`, then
the conjugate M step and the lower bound from the same `Stats`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.fit import lapack_scoped
from jaxvi.em.loop import ascent_loop, best_restart, finite_along
from jaxvi.em.stats import (
    chunk_layout,
    feature_chunks,
    sufficient_stats,
    to_chunks,
    weighted_mean,
)
from jaxvi.em.step import e_step_batched, identity, per_restart
from jaxvi.em.variational import (
    WEIGHT_PRIOR_TYPES,
    VariationalPosterior,
    VariationalPrior,
    default_prior,
    expected_gmm,
    lower_bound,
    resp_entropy,
    variational_m_step,
)


class VariationalFitResult(NamedTuple):
    """Result of `fit_variational`.

    posterior: the fitted q (after the last M step); lower_bound: () the ELBO after it
    (scikit-learn's `lower_bound_`); n_iter: () int; converged: () bool, the last change of
    the ELBO was below `tol`; history: (max_iter,) the ELBO after each iteration, NaN from
    `n_iter` on.
    """

    posterior: VariationalPosterior
    lower_bound: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array


def initialize_from_resp(x, resp, prior: VariationalPrior, *, covariance_type: str,
                         weight_type: str, reg_covar, sample_weight=None
                         ) -> VariationalPosterior:
    """q from responsibilities resp: (N, K) of x: (N, D) (scikit-learn's `_initialize`):
    the variational M step from their Stats (weighted by sample_weight (N,) when given)
    about the (weighted) data mean. A traced primitive."""
    shift = weighted_mean(x, sample_weight)
    stats = sufficient_stats(x, resp.astype(x.dtype), shift, covariance_type=covariance_type,
                             sample_weight=sample_weight)
    return variational_m_step(stats, shift, prior, covariance_type=covariance_type,
                              weight_type=weight_type, reg_covar=reg_covar)


def variational_update(posts: VariationalPosterior, xb, mask, chunks, shift, featurized,
                       prior, reg_covar, covariance_type, weight_type, combine):
    """One VB-EM iteration of restarts batched along axis 0: (new posteriors, ELBO (B,) after
    the M step). Arguments as `jaxvi.em.step.em_update`; `combine` maps local to global
    (Stats, Σ log p) (e.g. a `psum`), so the entropy, being linear in them, is global too."""
    cfg = dict(covariance_type=covariance_type, weight_type=weight_type)
    gmms = per_restart(lambda p: expected_gmm(p, **cfg), posts)
    stats, sum_ll, centres = e_step_batched(gmms, xb, mask, chunks, shift, featurized, combine)
    entropy = per_restart(resp_entropy, gmms, stats, centres, sum_ll)
    new = per_restart(lambda st, c: variational_m_step(st, c, prior, reg_covar=reg_covar, **cfg),
                      stats, centres)
    return new, per_restart(lambda p, h: lower_bound(p, h, **cfg), new, entropy)


def variational_step(x: jax.Array, post: VariationalPosterior, prior: VariationalPrior, *,
                     covariance_type: str, weight_type: str, reg_covar=1e-6,
                     combine: Callable = identity, chunk_size: int | None = None):
    """One VB-EM iteration on x: (N, D): (new posterior, ELBO after its M step), as
    scikit-learn's `_e_step`, `_m_step`, `_compute_lower_bound`. A traced primitive."""
    n_chunks, rows = chunk_layout(x.shape[0], x.shape[1], covariance_type, chunk_size)
    xb, mask = to_chunks(x, n_chunks, rows)
    chunks, shift, featurized = feature_chunks(xb, mask, covariance_type, combine)
    batched = jax.tree_util.tree_map(lambda a: a[None], post)
    new, elbo = variational_update(batched, xb, mask, chunks, shift, featurized, prior,
                                   reg_covar, covariance_type, weight_type, combine)
    return jax.tree_util.tree_map(lambda a: a[0], new), elbo[0]


def _fit_batched(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt, combine=identity):
    """The on-device VB-EM loop (`jaxvi.em.loop.ascent_loop`) of restarts batched along
    axis 0 -> VariationalFitResult batched along axis 0."""
    chunks, shift, featurized = feature_chunks(xb, mask, cov, combine)

    def update(posts):
        return variational_update(posts, xb, mask, chunks, shift, featurized, prior, reg_covar,
                                  cov, wt, combine)

    return VariationalFitResult(*ascent_loop(update, posts, max_iter, tol, xb.dtype))


def _initial_posteriors(x, keys, prior, k, cov, wt, init, reg_covar, weights=None):
    """One initial q per key of keys: (B,), from `init`'s responsibilities (weighted by
    weights (N,) when given), batched along axis 0. A traced primitive."""
    return jax.vmap(lambda key: initialize_from_resp(
        x, em_init.init_resp(key, x, k, init, weights), prior, covariance_type=cov,
        weight_type=wt, reg_covar=reg_covar, sample_weight=weights))(keys)


def _fit_restarts(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt, combine=identity):
    """The VB-EM loop from each batched initial q; the restart with the highest final ELBO
    is kept (a non-finite one never wins; ties go to the first)."""
    results = _fit_batched(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt, combine)
    return best_restart(results, results.posterior, results.lower_bound)


@functools.partial(jax.jit, static_argnames=("k", "cov", "wt", "init", "max_iter", "n_chunks",
                                             "rows"))
def _fit_from_keys(x, keys, prior, weights, *, k, cov, wt, init, max_iter, tol, reg_covar,
                   n_chunks, rows):
    xb, mask = to_chunks(x, n_chunks, rows, weights)
    posts = _initial_posteriors(x, keys, prior, k, cov, wt, init, reg_covar, weights)
    return _fit_restarts(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt)


@functools.partial(jax.jit, static_argnames=("cov", "wt", "max_iter", "n_chunks", "rows"))
def _fit_from_posterior(x, post, prior, weights, *, cov, wt, max_iter, tol, reg_covar, n_chunks,
                        rows):
    xb, mask = to_chunks(x, n_chunks, rows, weights)
    posts = jax.tree_util.tree_map(lambda a: a[None], post)
    return _fit_restarts(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt)


@functools.lru_cache(maxsize=16)
def _sharded_fit_fn(mesh, max_iter, cov, wt):
    """The jitted `shard_map` of the VB-EM loop for one mesh: Stats (and Σ log p, hence the
    entropy) `psum`-ed over "data" before every M step."""
    from jaxvi import distributed

    def local(xb, mask, posts, prior, tol, reg_covar):
        return _fit_restarts(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt,
                             distributed.psum_data)

    return jax.jit(distributed.shard_map_data(local, mesh, 2, 4))


def _fit_sharded(x, weights, posts, prior, mesh, *, cov, wt, max_iter, tol, reg_covar,
                 chunk_size):
    """`fit_variational` from the batched initial q `posts` with the rows of x split over the
    mesh's "data" axis (several processes: process 0's `posts` are used everywhere)."""
    from jaxvi import distributed

    distributed.check_mesh(mesh)
    posts = distributed.same_on_every_process(posts)
    xb, mask = distributed.shard_chunks(
        x, mesh, lambda n: chunk_layout(n, x.shape[1], cov, chunk_size), weights=weights)
    return _sharded_fit_fn(mesh, max_iter, cov, wt)(xb, mask, posts, prior, tol, reg_covar)


def _raise_if_not_finite(result: VariationalFitResult) -> VariationalFitResult:
    """The guard after a fit: `result`, or a ValueError when its posterior is not finite."""
    if not bool(finite_along(result.posterior, 0)):
        raise ValueError(
            "Fitting the variational mixture failed: some components have an ill-defined "
            "(singular) covariance, e.g. from collapsed or duplicated points. Increase "
            "`reg_covar` or `covariance_prior`, or rescale `x`.")
    return result


def checked_prior(x: jax.Array, covariance_type: str, n_components: int, sample_weight=None,
                  reg_covar: float = 0.0, **given) -> VariationalPrior:
    """The prior of a fit to x: (N, D) (rows weighted by sample_weight (N,) when given):
    scikit-learn's defaults (`default_prior`) for each of `given`'s priors left None, each
    checked (concrete values; messages name them). The default covariance prior, the data's
    covariance, has its eigenvalues (variances for diag/spherical) floored at `reg_covar`, so
    that constant or collinear features (a singular data covariance) still give a valid prior;
    a given one is used as it is."""
    for name, value in given.items():
        if value is not None:
            _validate.check_finite(name, np.asarray(value, dtype=float))
    default_psi = given.get("covariance_prior") is None
    if sample_weight is not None and default_psi:
        checks.check_weight_total(sample_weight)
    prior = default_prior(x, covariance_type=covariance_type, n_components=n_components,
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
    checks.check_variational_prior(prior, covariance_type, x.shape[1])
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


@lapack_scoped
def fit_variational(
    x: jax.Array,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    weight_concentration_prior_type: str = "dirichlet_process",
    weight_concentration_prior=None,
    mean_precision_prior=None,
    mean_prior=None,
    degrees_of_freedom_prior=None,
    covariance_prior=None,
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    init: str | VariationalPosterior = "kmeans++",
    reg_covar: float = 1e-6,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    sample_weight: jax.Array | None = None,
) -> VariationalFitResult:
    """Fit a variational Bayesian Gaussian mixture by VB-EM (scikit-learn's
    `BayesianGaussianMixture`), the loop on device until |Δ ELBO| < tol or `max_iter`.

    Args:
      x: (N, D) data.
      n_components: K ≤ N, an upper bound: the prior switches off the components the data
        do not need.
      key: PRNG key of the initialisation (unused for a given posterior).
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_concentration_prior_type: "dirichlet_process" (truncated stick-breaking) or
        "dirichlet_distribution".
      weight_concentration_prior, mean_precision_prior, mean_prior,
        degrees_of_freedom_prior, covariance_prior: scikit-learn's names and defaults
        (`default_prior`; None takes the default computed from x).
      max_iter: at most this many iterations (0: the initial posterior, ELBO −∞).
      tol: stop when the ELBO changes less (0 runs exactly max_iter).
      n_init: restarts from independent keys, run batched; the highest final ELBO is kept.
      init: "kmeans++", "random" or "random_from_data" initial responsibilities, or a
        `VariationalPosterior` (a warm start; `n_init` ignored).
      reg_covar: added to each component's ML covariance S_k, as scikit-learn does.
      chunk_size: rows per chunk of the fused E step.
      mesh: a `jax.sharding.Mesh` with a "data" axis: the rows are split over it and the
        Stats summed across devices before each M step (as `jaxvi.em.fit`). With several
        processes, x is each process's own rows, and the default priors and the
        initialisation are computed from the job's rows (`jaxvi.processes.init_rows`: all
        of them up to 65,536, else a strided sample).
      sample_weight: (N,) ≥ 0, each point's weight in every sum, as in `jaxvi.em.fit`
        (integer weights equal repeated rows; the default priors use the weighted mean and
        the frequency-weighted covariance, so Σ w > 1 is needed for those).

    Returns:
      A `VariationalFitResult`; a ValueError if the fitted posterior is not finite.
    """
    n, d = checks.check_x(x)
    k = checks.check_n_components(n_components, n)
    checks.check_loop_options(covariance_type, max_iter, tol, reg_covar, chunk_size)
    _validate.check_choice("weight_concentration_prior_type", weight_concentration_prior_type,
                           WEIGHT_PRIOR_TYPES)
    _validate.check_int("n_init", n_init, 1)
    if not isinstance(init, VariationalPosterior):
        _validate.check_choice("init", init, em_init.INITS)
    x = checks.as_float_data(x)
    weights = checks.check_sample_weight(sample_weight, n, x.dtype, k)
    x0, w0 = x, weights  # the rows the prior's defaults and the initialisation see
    if mesh is not None:
        from jaxvi.processes import init_rows

        x0 = jnp.asarray(init_rows(x))
        w0 = None if weights is None else jnp.asarray(init_rows(weights))
    prior = checked_prior(
        x0, covariance_type, k, w0, float(reg_covar),
        weight_concentration_prior=weight_concentration_prior,
        mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
        degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior)
    loop = dict(cov=covariance_type, wt=weight_concentration_prior_type,
                max_iter=int(max_iter), tol=jnp.asarray(tol, x.dtype),
                reg_covar=jnp.asarray(reg_covar, x.dtype))
    n_chunks, rows = chunk_layout(n, d, covariance_type, chunk_size)
    cov, wt = covariance_type, weight_concentration_prior_type
    if isinstance(init, VariationalPosterior):
        post = checks.check_posterior(init, k, d, cov, wt, x.dtype)
        if mesh is None:
            return _raise_if_not_finite(
                _fit_from_posterior(x, post, prior, weights, **loop, n_chunks=n_chunks,
                                    rows=rows))
        posts = jax.tree_util.tree_map(lambda a: a[None], post)
    else:
        keys = jax.random.split(key, int(n_init))
        if mesh is None:
            return _raise_if_not_finite(_fit_from_keys(
                x, keys, prior, weights, k=k, init=init, **loop, n_chunks=n_chunks, rows=rows))
        posts = jax.jit(_initial_posteriors, static_argnums=(3, 4, 5, 6))(
            x0, keys, prior, k, cov, wt, init, loop["reg_covar"], w0)
    return _raise_if_not_finite(
        _fit_sharded(x, weights, posts, prior, mesh, **loop, chunk_size=chunk_size))
