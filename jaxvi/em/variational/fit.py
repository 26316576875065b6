"""VB-EM iterations and `fit_variational`: the loop on device (`lax.while_loop` of the one fit
driver, `jaxvi.em.driver`), restarts batched, each iteration EM's fused E step (fast or
precise kernel) on `expected_gmm`, then the conjugate M step and the lower bound from the same
`Stats`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax

from jaxvi import _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.driver import (
    Config,
    Model,
    ascent_loop,
    best_restart,
    job_rows,
    lapack_scoped,
    options,
    run,
)
from jaxvi.em.stats import (
    chunk_layout,
    feature_chunks,
    sufficient_stats,
    to_chunks,
    weighted_mean,
)
from jaxvi.em.step import e_step_batched, identity, per_restart
from jaxvi.em.variational.checks import check_posterior, checked_prior
from jaxvi.em.variational.model import WEIGHT_PRIOR_TYPES, VariationalPosterior, VariationalPrior
from jaxvi.em.variational.step import (
    expected_gmm,
    lower_bound,
    resp_entropy,
    variational_m_step,
)


class VariationalFitResult(NamedTuple):
    """Result of `fit_variational` / `fit_variational_minibatch`, with the field names of
    every fit result (`jaxvi.em.EMFitResult`): the fitted model first, then `objective`,
    `n_iter`, `converged`, `history`.

    posterior: the fitted q (after the last M step); objective: () the ELBO after it
    (scikit-learn's `lower_bound_`; also read as `lower_bound`); n_iter: () int; converged:
    () bool, the last change of the ELBO was below `tol`; history: (max_iter,) the ELBO after
    each iteration, NaN from `n_iter` on.
    """

    posterior: VariationalPosterior
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array

    @property
    def lower_bound(self) -> jax.Array:
        """`objective`, by what it is: the ELBO (the field's former name)."""
        return self.objective


def initialize_from_resp(x, resp, prior: VariationalPrior, *, covariance_type: str,
                         weight_type: str, reg_covar, sample_weight=None
                         ) -> VariationalPosterior:
    """q from responsibilities (scikit-learn's `_initialize`): the variational M step from
    their Stats about the (weighted) data mean. A traced primitive.

    Args:
      x: (N, D) data.
      resp: (N, K) responsibilities.
      prior: the `VariationalPrior`.
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_type: "dirichlet_process" or "dirichlet_distribution".
      reg_covar: added to the diagonal of each ML covariance.
      sample_weight: (N,) row weights of the Stats, or None.

    Returns:
      The initial `VariationalPosterior`.
    """
    shift = weighted_mean(x, sample_weight)
    stats = sufficient_stats(x, resp.astype(x.dtype), shift, covariance_type=covariance_type,
                             sample_weight=sample_weight)
    return variational_m_step(stats, shift, prior, covariance_type=covariance_type,
                              weight_type=weight_type, reg_covar=reg_covar)


def variational_update(posts: VariationalPosterior, xb, mask, chunks, shift, featurized,
                       prior, reg_covar, covariance_type, weight_type, combine):
    """One VB-EM iteration of B restarts batched along axis 0.

    Args:
      posts: the B posteriors, batched along axis 0.
      xb: (C, R, D) the chunked rows (as in `jaxvi.em.step.em_update`).
      mask: (C, R) the rows' weights (0 on padding).
      chunks: what the fast kernel reads: xb, or its features about `shift`.
      shift: (D,) the fixed shift c (the data mean) of `feature_chunks`.
      featurized: whether `chunks` are the features.
      prior: the `VariationalPrior`.
      reg_covar: added to the diagonal of each ML covariance.
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_type: "dirichlet_process" or "dirichlet_distribution".
      combine: maps local to global (Stats, Σ log p) (e.g. a `psum`), so the entropy, being
        linear in them, is global too.

    Returns:
      (new posteriors, ELBO (B,) after the M step).
    """
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
    """One VB-EM iteration, as scikit-learn's `_e_step`, `_m_step`, `_compute_lower_bound`.

    A traced primitive.

    Args:
      x: (N, D) points.
      post: the current `VariationalPosterior`.
      prior: the `VariationalPrior`.
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_type: the weight prior, as in `fit_variational`.
      reg_covar: added to the covariances' diagonal.
      combine: maps local statistics to global ones (e.g. a `psum` inside `shard_map`).
      chunk_size: rows per chunk of the E step.

    Returns:
      (new_post, elbo): the new posterior and the lower bound () after its M step.
    """
    n_chunks, rows = chunk_layout(x.shape[0], x.shape[1], covariance_type, chunk_size)
    xb, mask = to_chunks(x, n_chunks, rows)
    chunks, shift, featurized = feature_chunks(xb, mask, covariance_type, combine)
    batched = jax.tree_util.tree_map(lambda a: a[None], post)
    new, elbo = variational_update(batched, xb, mask, chunks, shift, featurized, prior,
                                   reg_covar, covariance_type, weight_type, combine)
    return jax.tree_util.tree_map(lambda a: a[0], new), elbo[0]


def _fit_batched(xb, mask, posts, prior, max_iter, tol, reg_covar, cov, wt, combine=identity):
    """The on-device VB-EM loop (`jaxvi.em.driver.ascent_loop`) of restarts batched along
    axis 0 -> VariationalFitResult batched along axis 0."""
    chunks, shift, featurized = feature_chunks(xb, mask, cov, combine)

    def update(posts):
        return variational_update(posts, xb, mask, chunks, shift, featurized, prior, reg_covar,
                                  cov, wt, combine)

    return VariationalFitResult(*ascent_loop(update, posts, max_iter, tol, xb.dtype))


def _layout(x, weights, config: Config):
    """x: (N, D) -> the chunks and row weights the loop reads (`to_chunks`)."""
    return to_chunks(x, config.n_chunks, config.rows, weights)


def _initial(x, keys, weights, opts, config: Config) -> VariationalPosterior:
    """One initial q per key of keys: (B,), from `init`'s responsibilities (weighted by
    weights (N,) when given), batched along axis 0. A traced primitive."""
    return jax.vmap(lambda key: initialize_from_resp(
        x, em_init.init_resp(key, x, config.k, config.init, weights), opts["prior"],
        covariance_type=config.covariance_type, weight_type=config.weight_type,
        reg_covar=opts["reg_covar"], sample_weight=weights))(keys)


def _restarts(data, posts, opts, config: Config, combine):
    """The VB-EM loop from each batched initial q; the restart with the highest final ELBO
    is kept (a non-finite one never wins; ties go to the first)."""
    xb, mask = data
    results = _fit_batched(xb, mask, posts, opts["prior"], config.max_iter, opts["tol"],
                           opts["reg_covar"], config.covariance_type, config.weight_type,
                           combine)
    return best_restart(results, results.posterior, results.objective)


VBEM = Model(
    layout=_layout, initial=_initial, restarts=_restarts, params=lambda r: r.posterior,
    failure="Fitting the variational mixture failed: some components have an ill-defined "
            "(singular) covariance, e.g. from collapsed or duplicated points. Increase "
            "`reg_covar` or `covariance_prior`, or rescale `x`.")


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
      weight_concentration_prior: () γ; this and the next four priors have scikit-learn's
        names and defaults (`default_variational_prior`; None takes the default computed
        from x).
      mean_precision_prior: () β0.
      mean_prior: (D,) m0.
      degrees_of_freedom_prior: () ν0 > D − 1.
      covariance_prior: W0⁻¹: full/tied (D, D), diag (D,), spherical ().
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
      A `VariationalFitResult`.

    Raises:
      ValueError: an invalid argument, or a fitted posterior that is not finite.
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
    # the rows the prior's defaults and the initialisation see
    x0, w0 = (x, weights) if mesh is None else job_rows(x, weights)
    prior = checked_prior(
        x0, covariance_type, k, w0, float(reg_covar),
        weight_concentration_prior=weight_concentration_prior,
        mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
        degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior)
    opts = options(x.dtype, tol=tol, reg_covar=reg_covar, prior=prior)
    n_chunks, rows = chunk_layout(n, d, covariance_type, chunk_size)
    config = Config(k=k, covariance_type=covariance_type, max_iter=int(max_iter),
                    n_chunks=n_chunks, rows=rows, weight_type=weight_concentration_prior_type)
    if isinstance(init, VariationalPosterior):
        post = check_posterior(init, k, d, covariance_type,
                                      weight_concentration_prior_type, x.dtype)
        return run(VBEM, config, x, weights, opts, params=post, mesh=mesh,
                   chunk_size=chunk_size)
    keys = jax.random.split(key, int(n_init))
    return run(VBEM, config._replace(init=init), x, weights, opts, keys=keys, mesh=mesh,
               chunk_size=chunk_size)
