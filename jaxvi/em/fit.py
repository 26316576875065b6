"""`fit`: EM to convergence on device (`lax.while_loop`), restarts batched, on one device or
with the rows split over a mesh (statistics `psum`-ed before every M step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.driver import (
    Config,
    Model,
    ascent_loop,
    best_restart,
    iteration_limits,
    lapack_scoped,
    options,
    run,
    start_keys,
    trimmed,
)
from jaxvi.em.missing_fit import fit_missing
from jaxvi.em.model import FIT_FAILED, GMM, EMFitResult, Prior, with_scale_tril
from jaxvi.em.stats import chunk_layout, feature_chunks, log_likelihood_sum, to_chunks
from jaxvi.em.step import em_update, identity, per_restart


def _fit_batched(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine=identity,
                 fixed=None, limit=None):
    """The on-device EM loop (`jaxvi.em.ascent.ascent_loop`) of restarts batched along axis 0
    of `gmm0s`, on chunked data xb: (C, R, D), mask: (C, R) (row weights); `fixed`: None or
    the (3,) bool mask of the parameters kept at their initial values; `limit`: None or a
    traced iteration limit ≤ max_iter (`ascent_loop`); `combine` goes to every step
    (e.g. a `psum` over a mesh axis inside `shard_map`). Returns an EMFitResult batched along
    axis 0. The features φ(x − c) do not change during a fit, so (when they fit in memory)
    they are computed once and a fast-kernel iteration is two matmuls and a softmax per
    chunk."""
    chunks, shift, featurized = feature_chunks(xb, mask, gmm0s.covariance_type, combine)

    def update(gmms):
        return em_update(gmms, xb, mask, chunks, shift, featurized, reg_covar, prior, combine,
                         fixed)

    return EMFitResult(*ascent_loop(update, with_scale_tril(gmm0s), max_iter, tol, xb.dtype,
                                    limit))


def _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine=identity,
                  fixed=None, limit=None):
    """Run the EM loop from each of the batched initial GMMs, score the GMMs it returns (one
    more E pass, by the precise kernel: the loop's last objective is that of the parameters
    before the last M step, and may be the fast kernel's) and keep the best restart by that
    log-likelihood (a NaN fit never wins; ties go to the first)."""
    results = _fit_batched(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine, fixed,
                           limit)
    sums = per_restart(lambda g: log_likelihood_sum(xb, mask, g), results.gmm)
    sums, count = combine((sums, jnp.sum(mask)))
    results = results._replace(objective=sums / count)
    return best_restart(results, results.gmm, results.objective)


def _layout(x, weights, config: Config):
    """x: (N, D) -> the chunks and row weights the loop reads (`to_chunks`)."""
    return to_chunks(x, config.n_chunks, config.rows, weights)


def _initial(x, keys, weights, opts, config: Config) -> GMM:
    """One initial GMM per key of keys (B,), batched along axis 0 (`init.initial_gmms`)."""
    return em_init.initial_gmms(x, keys, config.k, config.covariance_type, config.init,
                                opts["reg_covar"], opts["prior"], weights)


def _restarts(data, gmm0s, opts, config: Config, combine):
    xb, mask = data
    return _fit_restarts(xb, mask, gmm0s, config.max_iter, opts["tol"], opts["reg_covar"],
                         opts["prior"], combine, opts["fixed"], opts["max_iter"])


EM = Model(
    layout=_layout, initial=_initial, restarts=_restarts, params=lambda r: r.gmm,
    failure=FIT_FAILED,
)


def _check_fit_args(x, n_components, covariance_type, max_iter, tol, reg_covar, chunk_size,
                    prior):
    """`fit`'s checks of its data and options -> (x as a float array, K, prior as arrays)."""
    n, d = checks.check_x(x)
    k = checks.check_n_components(n_components, n)
    checks.check_loop_options(covariance_type, max_iter, tol, reg_covar, chunk_size)
    x = checks.as_float_data(x)
    if prior is not None:
        prior = checks.check_prior(prior, d, x.dtype)
    return x, k, prior


def _fit_missing(x, n_components, *, mesh, missing, **kwargs) -> EMFitResult:
    """`fit`'s dispatch to EM with missing values (`jaxvi.em.missing_fit`)."""
    _validate.check_choice("missing", missing, ("marginalize",))
    if mesh is not None:
        raise ValueError('`mesh` is not supported with missing="marginalize"; got a mesh.')
    return fit_missing(x, n_components, **kwargs)


@lapack_scoped
def fit(
    x: jax.Array,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    init: str | GMM = "kmeans++",
    reg_covar: float = 1e-6,
    prior: Prior | None = None,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    missing: str | None = None,
    sample_weight: jax.Array | None = None,
    fixed: tuple[str, ...] = (),
) -> EMFitResult:
    """Fit a Gaussian mixture by EM.

    The loop runs on device (`lax.while_loop`) until |Δ mean log-likelihood| < tol or
    `max_iter` iterations. The per-point features φ(x − mean(x)) (D(D+1)/2 + D values per
    point for full and tied, 2D for diag and spherical) are computed once per fit when they
    take at most 1 GiB, so each iteration is only matmuls and a softmax over them; beyond
    that they are recomputed chunk by chunk in every iteration.

    Args:
      x: (N, D) data.
      n_components: K ≤ N.
      key: PRNG key of the initialisation (unused for a given `init` GMM).
      covariance_type: "full", "tied", "diag" or "spherical".
      max_iter: at most this many EM iterations (0: the initial parameters).
      tol: stop when the mean log-likelihood changes less (0 runs exactly max_iter).
      n_init: restarts from independent keys, run batched; the one with the highest final
        log-likelihood is kept.
      init: "kmeans++" (seeding and 10 Lloyd steps), "kmeans" (a converged k-means,
        scikit-learn's "kmeans": `init.kmeans`), "random", "random_from_data" or a `GMM`
        (warm start; then `n_init` is ignored).
      reg_covar: added to the covariances' diagonal in every M step.
      prior: a `Prior` turns ML-EM into MAP-EM.
      chunk_size: rows per chunk of the fused E step (default: from a per-backend budget).
      mesh: a `jax.sharding.Mesh` with a "data" axis (`jaxvi.distributed.data_mesh`): the
        rows of x are split over it and the sufficient statistics summed across devices
        (`psum`) before each M step; the result equals the single-device fit. With several
        processes, x is each process's own rows and the initialisation is computed from the
        job's rows (`jaxvi.processes.init_rows`: all of them up to 65,536, else a strided
        sample), the same on every process.
      sample_weight: (N,) ≥ 0, each point's weight in every sum of the E and M steps, the
        initialisation included (`init.init_resp`): integer weights give the fit of x with
        rows repeated, zero weights that of x without those rows; the log-likelihood (and
        `tol`) is then the weighted mean Σ w log p / Σ w. With `mesh`, split with the rows.
      fixed: names among "weights", "means", "covariances" kept at their initial values
        (bit for bit) while EM maximises over the rest given them (still monotone); all
        subsets share one compiled loop.
      missing: None (default): a NaN in x is an error. "marginalize": NaN entries are
        missing at random and EM is exact on the observed entries
        (`jaxvi.em.missing_fit.fit_missing`; not with `mesh`).

    Returns:
      An `EMFitResult` (computed; on CPU LAPACK runs single-threaded meanwhile, see
      `_linalg.single_threaded_lapack`). A ValueError if the fitted parameters are not finite.

    Examples:
      >>> import jax
      >>> import numpy as np
      >>> from jaxvi import em
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(-3, 1, (100, 2)), rng.normal(3, 1, (100, 2))])
      >>> result = em.fit(x, 2, key=jax.random.key(0))
      >>> bool(result.converged), np.sort(np.round(result.gmm.means[:, 0])).tolist()
      (True, [-3.0, 3.0])
    """
    if missing is not None:
        return _fit_missing(x, n_components, key=key, covariance_type=covariance_type,
                            max_iter=max_iter, tol=tol, n_init=n_init, init=init,
                            reg_covar=reg_covar, prior=prior, chunk_size=chunk_size,
                            mesh=mesh, missing=missing, sample_weight=sample_weight,
                            fixed=fixed)
    x, k, prior = _check_fit_args(x, n_components, covariance_type, max_iter, tol, reg_covar,
                                  chunk_size, prior)
    weights = checks.check_sample_weight(sample_weight, x.shape[0], x.dtype, k,
                                          rescale=prior is None)
    length, limit = iteration_limits(max_iter)
    opts = options(x.dtype, tol=tol, reg_covar=reg_covar, prior=prior,
                   fixed=checks.fixed_array(fixed), max_iter=limit)
    n_chunks, rows = chunk_layout(x.shape[0], x.shape[1], covariance_type, chunk_size)
    config = Config(k=k, covariance_type=covariance_type, max_iter=length,
                    n_chunks=n_chunks, rows=rows)
    if isinstance(init, GMM):
        gmm0 = checks.check_warm_start(init, covariance_type, k, x)
        return trimmed(run(EM, config, x, weights, opts, params=gmm0, mesh=mesh,
                           chunk_size=chunk_size), int(max_iter))
    keys = start_keys(key, init, em_init.INITS, n_init)
    return trimmed(run(EM, config._replace(init=init), x, weights, opts, keys=keys, mesh=mesh,
                       chunk_size=chunk_size), int(max_iter))
