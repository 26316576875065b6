"""`fit_minibatch`: stepwise (online) EM over a stream of batches (Cappé & Moulines 2009), on
running averages of per-point `Stats`; each step jitted, the loop over batches host-side."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.fit import lapack_scoped
from jaxvi.em.model import GMM, FitResult, with_scale_tril
from jaxvi.em.stats import chunk_layout, e_step_stats, e_step_stats_fast, to_chunks
from jaxvi.em.step import factored_m_step, identity


def _minibatch_update(xb, mask, gmm, running, shift, rho, reg_covar, combine=identity):
    """One stepwise-EM update from a chunked batch xb: (C, R, D), mask: (C, R) ->
    (new gmm, new running Stats, the batch's mean log-likelihood under `gmm`)."""
    stats, sum_ll = combine(e_step_stats_fast(xb, mask, gmm, shift))
    # Per-point stats, so batches of different sizes weigh the same per point.
    normalised = jax.tree_util.tree_map(lambda a: a / stats.count, stats)
    running = jax.tree_util.tree_map(lambda r, s: (1 - rho) * r + rho * s, running, normalised)
    batched = jax.tree_util.tree_map(lambda a: a[None], (running, shift))
    new = factored_m_step(*batched, covariance_type=gmm.covariance_type, reg_covar=reg_covar)
    return jax.tree_util.tree_map(lambda a: a[0], new), running, sum_ll / stats.count


_minibatch_step = jax.jit(_minibatch_update)


@functools.lru_cache(maxsize=16)
def _sharded_minibatch_fn(mesh):
    from jaxvi import distributed

    update = functools.partial(_minibatch_update, combine=distributed.psum_data)
    return jax.jit(distributed.shard_map_data(update, mesh, 2, 5))


def _check_minibatch_args(kappa, covariance_type, max_steps, tol, reg_covar) -> None:
    if not 0.5 < float(kappa) <= 1.0:
        raise ValueError(f"`kappa` must be in (0.5, 1]; got {kappa!r}.")
    checks.check_covariance_type(covariance_type)
    if max_steps is not None:
        _validate.check_int("max_steps", max_steps, 1)
    _validate.check_number("tol", tol)
    _validate.check_number("reg_covar", reg_covar)


def first_batch(iterator: Iterator) -> jax.Array:
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("`batches` must yield at least one batch; got none.") from None
    checks.check_x(first, name="batches")
    return jnp.asarray(first)


def _initial_gmm(key, first, n_components, covariance_type, init, reg_covar) -> GMM:
    """The given `init` GMM (checked, in the batches' dtype), or one initialised on the first
    batch."""
    n, d = first.shape
    if isinstance(init, GMM):
        checks.check_gmm(init, n_components=n_components, n_features=d, name="init")
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, first.dtype), init)
    k = checks.check_n_components(n_components, n)
    _validate.check_choice("init", init, em_init.INITS)
    return em_init.initialize(key, first, k, covariance_type=covariance_type, init=init,
                              reg_covar=reg_covar)


def _stepper(gmm, shift, mesh, chunk_size):
    """(gmm, shift, the jitted update, batch -> its chunks): on one device, or with each
    batch's rows split over `mesh`'s "data" axis."""
    d = gmm.n_features

    def layout(n_rows):
        return chunk_layout(n_rows, d, gmm.covariance_type, chunk_size)

    if mesh is None:
        return gmm, shift, _minibatch_step, lambda batch: to_chunks(batch, *layout(batch.shape[0]))
    from jaxvi import distributed

    distributed.check_mesh(mesh)
    gmm, shift = distributed.same_on_every_process((gmm, shift))
    return (gmm, shift, _sharded_minibatch_fn(mesh),
            lambda batch: distributed.shard_chunks(batch, mesh, layout))


@lapack_scoped
def fit_minibatch(
    batches: Iterable,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    kappa: float = 0.6,
    max_steps: int | None = None,
    tol: float = 0.0,
    init: str | GMM = "kmeans++",
    reg_covar: float = 1e-6,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Stepwise EM (Cappé & Moulines 2009) on running averages of per-point `Stats`.

    Step t ≥ 1 sets s ← (1 − ρ_t) s + ρ_t ŝ(batch_t; θ) with ρ_t = (t + 2)^(−κ), then
    θ ← M step(s); s starts from the first batch's statistics under the initial θ. Each step
    is jitted; the loop over batches is host-side.

    Args:
      batches: yields arrays (B_t, D) (any iterable, e.g. a generator over files; B_t may
        vary).
      n_components: K.
      key: PRNG key of the initialisation on the first batch (unused for a given GMM).
      covariance_type: "full", "tied", "diag" or "spherical".
      kappa: κ ∈ (0.5, 1], the step-size decay.
      max_steps: stop after this many batches (default: when `batches` ends).
      tol: `converged` when the last change of the batch log-likelihood is below it.
      init: "kmeans++", "random", "random_from_data" (on the first batch) or a `GMM`.
      reg_covar: added to the covariances' diagonal in every M step.
      chunk_size: rows per chunk of the fused E step.
      mesh: each batch's rows are split over its "data" axis and the batch statistics
        summed across devices, as in `fit`; with several processes, each yields its own
        rows of every batch and the initialisation is computed from the first batch's rows
        of every process (`jaxvi.processes.init_rows`).

    Returns:
      A `FitResult` whose `history` (length = steps taken, no padding) holds each batch's
      mean log-likelihood before its update, `log_likelihood` the last one, `n_iter` the
      number of batches, and `converged` whether the last change of the batch log-likelihood
      was below `tol` (never with the default tol = 0).
    """
    _check_minibatch_args(kappa, covariance_type, max_steps, tol, reg_covar)
    iterator = iter(batches)
    first = first_batch(iterator)
    d = first.shape[1]
    if mesh is None:
        start = first
    else:  # every process initialises from the whole first batch, as one process would
        from jaxvi.processes import init_rows

        start = jnp.asarray(init_rows(first))
    gmm = _initial_gmm(key, start, n_components, covariance_type, init, reg_covar)
    shift = jnp.mean(start, axis=0)
    reg = jnp.asarray(reg_covar, first.dtype)
    gmm = with_scale_tril(gmm)  # the same pytree structure in every step
    # Zero running statistics of the right shapes (shapes only: no E step is run for them).
    shapes, _ = jax.eval_shape(lambda: e_step_stats(first, gmm, shift, chunk_size=chunk_size))
    running = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    gmm, shift, step, chunks = _stepper(gmm, shift, mesh, chunk_size)
    history = []
    t = 0
    batch = first
    while True:
        rho = jnp.asarray(1.0 if t == 0 else (t + 2.0) ** (-float(kappa)), first.dtype)
        gmm, running, ll = step(*chunks(batch), gmm, running, shift, rho, reg)
        history.append(ll)
        t += 1
        if max_steps is not None and t >= max_steps:
            break
        try:
            batch = next(iterator)
        except StopIteration:
            break
        checks.check_x(batch, d, name="batches")
        batch = jnp.asarray(batch, first.dtype)
    hist = jnp.stack(history)
    converged = (
        jnp.abs(hist[-1] - hist[-2]) < tol if len(history) > 1 else jnp.zeros((), bool)
    )
    return FitResult(gmm, hist[-1], jnp.asarray(t), converged, hist)
