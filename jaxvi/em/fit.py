"""`fit`: EM to convergence on device (`lax.while_loop`), restarts batched, on one device or
with the rows split over a mesh (statistics `psum`-ed before every M step)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvi import _linalg, _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.loop import ascent_loop, best_restart, finite_along
from jaxvi.em.model import GMM, FitResult, Prior, with_scale_tril
from jaxvi.em.stats import chunk_layout, feature_chunks, log_likelihood_sum, to_chunks
from jaxvi.em.step import em_update, identity, per_restart


def _fit_batched(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine=identity,
                 fixed=None):
    """The on-device EM loop (`jaxvi.em.loop.ascent_loop`) of restarts batched along axis 0
    of `gmm0s`, on chunked data xb: (C, R, D), mask: (C, R) (row weights); `fixed`: None or
    the (3,) bool mask of the parameters kept at their initial values; `combine` goes to every step
    (e.g. a `psum` over a mesh axis inside `shard_map`). Returns a FitResult batched along
    axis 0. The features φ(x − c) do not change during a fit, so (when they fit in memory)
    they are computed once and a fast-kernel iteration is two matmuls and a softmax per
    chunk."""
    chunks, shift, featurized = feature_chunks(xb, mask, gmm0s.covariance_type, combine)

    def update(gmms):
        return em_update(gmms, xb, mask, chunks, shift, featurized, reg_covar, prior, combine,
                         fixed)

    return FitResult(*ascent_loop(update, with_scale_tril(gmm0s), max_iter, tol, xb.dtype))


def all_finite(gmm: GMM) -> jax.Array:
    """Whether every parameter of each GMM (any leading batch axes) is finite: (batch...)."""
    return finite_along(gmm, gmm.means.ndim - 2)


def _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine=identity,
                  fixed=None):
    """Run the EM loop from each of the batched initial GMMs, score the GMMs it returns (one
    more E pass, by the precise kernel: the loop's last objective is that of the parameters
    before the last M step, and may be the fast kernel's) and keep the best restart by that
    log-likelihood (a NaN fit never wins; ties go to the first)."""
    results = _fit_batched(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine, fixed)
    sums = per_restart(lambda g: log_likelihood_sum(xb, mask, g), results.gmm)
    sums, count = combine((sums, jnp.sum(mask)))
    results = results._replace(log_likelihood=sums / count)
    return best_restart(results, results.gmm, results.log_likelihood)


@functools.partial(jax.jit, static_argnames=("max_iter", "n_chunks", "rows", "init", "k", "cov"))
def _fit_from_keys(x, keys, weights, *, k, cov, init, max_iter, tol, reg_covar, prior, n_chunks,
                   rows, fixed):
    xb, mask = to_chunks(x, n_chunks, rows, weights)
    gmm0s = em_init.initial_gmms(x, keys, k, cov, init, reg_covar, prior, weights)
    return _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, fixed=fixed)


@functools.partial(jax.jit, static_argnames=("max_iter", "n_chunks", "rows"))
def _fit_from_gmm(x, gmm, weights, *, max_iter, tol, reg_covar, prior, n_chunks, rows, fixed):
    xb, mask = to_chunks(x, n_chunks, rows, weights)
    gmm0s = jax.tree_util.tree_map(lambda a: a[None], gmm)
    return _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, fixed=fixed)


def _fit_sharded(x, weights, gmm0s, mesh, *, max_iter, tol, reg_covar, prior, chunk_size,
                 fixed):
    """`_fit_restarts` with the rows of x split over the mesh's "data" axis: each device runs
    the fused E step on its rows and the Stats are `psum`-ed before every M step."""
    from jaxvi import distributed

    distributed.check_mesh(mesh)
    gmm0s = distributed.same_on_every_process(gmm0s)
    xb, mask = distributed.shard_chunks(
        x, mesh, lambda n: chunk_layout(n, gmm0s.n_features, gmm0s.covariance_type, chunk_size),
        weights=weights,
    )
    return _sharded_fit_fn(mesh, max_iter)(xb, mask, gmm0s, tol, reg_covar, prior, fixed)


@functools.lru_cache(maxsize=16)
def _sharded_fit_fn(mesh, max_iter):
    """The jitted `shard_map` of the EM loop for one mesh (compiled once per shapes)."""
    from jaxvi import distributed

    def local(xb, mask, gmm0s, tol, reg_covar, prior, fixed):
        return _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior,
                             distributed.psum_data, fixed)

    return jax.jit(distributed.shard_map_data(local, mesh, 2, 5))


def _raise_if_not_finite(result: FitResult) -> FitResult:
    """The guard after a fit: `result`, or a ValueError when its (concrete) mixture has
    non-finite parameters."""
    if _validate.is_concrete(*jax.tree_util.tree_leaves(result)) and not bool(
        all_finite(result.gmm)
    ):
        raise ValueError(
            "Fitting the mixture failed: some components have an ill-defined (singular) "
            "covariance, e.g. from collapsed or duplicated points. Increase `reg_covar`, "
            "pass a `prior`, decrease `n_components` or rescale `x`."
        )
    return result


def lapack_scoped(fn):
    """Run `fn` with single-threaded LAPACK on CPU (`_linalg.single_threaded_lapack`) and
    wait for its result inside that scope."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _linalg.single_threaded_lapack():
            return jax.block_until_ready(fn(*args, **kwargs))

    return wrapper


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


def _as_mask(fixed):
    """`fixed` names -> the M step's (3,) bool mask as an array, or None."""
    mask = checks.fixed_mask(fixed)
    return None if mask is None else jnp.asarray(mask)


def _check_warm_start(init: GMM, covariance_type, k, x) -> GMM:
    """A given initial GMM, checked against the fit's options and cast to x's dtype."""
    if init.covariance_type != covariance_type:
        raise ValueError(
            f"`init` has covariance_type {init.covariance_type!r} but `covariance_type` "
            f"is {covariance_type!r}."
        )
    checks.check_gmm(init, n_components=k, n_features=x.shape[1], name="init")
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype), init)


def _fit_missing(x, n_components, *, mesh, missing, **options) -> FitResult:
    """`fit`'s dispatch to EM with missing values (`jaxvi.em.missing_fit`)."""
    from jaxvi.em.missing_fit import fit_missing

    _validate.check_choice("missing", missing, ("marginalize",))
    if mesh is not None:
        raise ValueError('`mesh` is not supported with missing="marginalize"; got a mesh.')
    return fit_missing(x, n_components, **options)


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
) -> FitResult:
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
      init: "kmeans++", "random", "random_from_data" or a `GMM` (warm start; then `n_init`
        is ignored).
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
      A `FitResult` (computed; on CPU LAPACK runs single-threaded meanwhile, see
      `_linalg.single_threaded_lapack`). A ValueError if the fitted parameters are not finite.
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
    loop = dict(max_iter=int(max_iter), tol=jnp.asarray(tol, x.dtype),
                reg_covar=jnp.asarray(reg_covar, x.dtype), prior=prior,
                fixed=_as_mask(fixed))
    n_chunks, rows = chunk_layout(x.shape[0], x.shape[1], covariance_type, chunk_size)
    if isinstance(init, GMM):
        gmm0 = _check_warm_start(init, covariance_type, k, x)
        if mesh is None:
            return _raise_if_not_finite(
                _fit_from_gmm(x, gmm0, weights, **loop, n_chunks=n_chunks, rows=rows))
        gmm0s = jax.tree_util.tree_map(lambda a: a[None], gmm0)
    else:
        _validate.check_choice("init", init, em_init.INITS)
        _validate.check_int("n_init", n_init, 1)
        keys = jax.random.split(key, int(n_init))
        if mesh is None:
            return _raise_if_not_finite(_fit_from_keys(
                x, keys, weights, k=k, cov=covariance_type, init=init, **loop,
                n_chunks=n_chunks, rows=rows))
        from jaxvi.processes import init_rows

        gmm0s = jax.jit(em_init.initial_gmms, static_argnums=(2, 3, 4))(
            init_rows(x), keys, k, covariance_type, init, loop["reg_covar"], prior,
            None if weights is None else jnp.asarray(init_rows(weights))
        )
    return _raise_if_not_finite(
        _fit_sharded(x, weights, gmm0s, mesh, **loop, chunk_size=chunk_size))
