"""`fit_minibatch`: stepwise (online) EM over a stream of batches (Cappé & Moulines 2009), on
running averages of per-point `Stats`; each step jitted, the loop over batches host-side (the
streaming driver `jaxvi.em.streaming`, shared with stochastic VI)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.driver import lapack_scoped
from jaxvi.em.model import GMM, EMFitResult, Stats, with_scale_tril
from jaxvi.em.stats import e_step_stats, e_step_stats_fast, weighted_mean
from jaxvi.em.step import factored_m_step, identity
from jaxvi.em.streaming import (
    batch_chunks,
    chunker,
    raise_if_not_finite,
    run_stream,
    weighted_batches,
)


class StepwiseState(NamedTuple):
    """The state of stepwise EM between batches, with its settings.

    gmm: the current mixture (with its Cholesky factors); running: the running per-point
    `Stats` (per unit of sample weight) about `shift` (D,), fixed when the state is made;
    step: () int, batches seen; seen: () the total weight the running Stats stand for (0
    before the first batch); kappa: () κ, the step-size decay; reg_covar: () added to the
    covariances' diagonal in every M step; fixed: None or (3,) bool, the parameters kept
    (`checks.fixed_mask`).
    """

    gmm: GMM
    running: Stats
    shift: jax.Array
    step: jax.Array
    seen: jax.Array
    kappa: jax.Array
    reg_covar: jax.Array
    fixed: jax.Array | None = None


def _settings(dtype, kappa, reg_covar, fixed):
    """(κ, reg_covar, fixed) as the arrays a `StepwiseState` holds."""
    fixed = None if fixed is None else jnp.asarray(fixed, bool)
    return jnp.asarray(kappa, dtype), jnp.asarray(reg_covar, dtype), fixed


def stepwise_init(gmm: GMM, first: jax.Array, sample_weight: jax.Array | None = None, *,
                  kappa: float = 0.6, reg_covar: float = 1e-6, fixed=None,
                  chunk_size: int | None = None) -> StepwiseState:
    """The state before the first batch.

    `gmm` (its factors computed), zero running Stats, nothing seen, and the shift: the
    weighted mean of the first batch.

    Args:
      gmm: the initial mixture.
      first: (B, D) the first batch.
      sample_weight: (B,) its weights, or None.
      kappa: κ ∈ (0.5, 1], the step-size decay (unchecked).
      reg_covar: added to the covariances' diagonal in every M step (unchecked).
      fixed: None or (3,) bool, the parameters kept (unchecked).
      chunk_size: rows per chunk of the E step (only shapes are evaluated here).

    Returns:
      The `StepwiseState`.
    """
    shift = weighted_mean(first, sample_weight)
    gmm = with_scale_tril(gmm)  # the same pytree structure in every step
    # Zero running statistics of the right shapes (shapes only: no E step is run for them).
    shapes, _ = jax.eval_shape(lambda: e_step_stats(first, gmm, shift, chunk_size=chunk_size))
    running = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    zero = jnp.zeros((), first.dtype)
    return StepwiseState(gmm, running, shift, jnp.zeros((), jnp.int32), zero,
                         *_settings(first.dtype, kappa, reg_covar, fixed))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def stepwise_resume(gmm: GMM, x: jax.Array, sample_weight: jax.Array | None = None, *,
                    kappa: float = 0.6, reg_covar: float = 1e-6, fixed=None,
                    chunk_size: int | None = None) -> StepwiseState:
    """The state of a stream whose earlier batches were the rows of x.

    E.g. the data a full-batch `fit` returned `gmm` on: running Stats = x's per-point Stats
    under `gmm` (about x's weighted mean), seen = Σ w (N unweighted), step 0. The next batch
    of weight w then gets ρ = (seen / w + 2)^(−κ), the step size it would get after seen / w
    batches like it (`step_size`), so continuing a fit weighs what the fit learned. One
    compiled program (an estimator's `fit` makes this state after every fit).

    Args:
      gmm: the mixture fitted so far.
      x: (N, D) the data seen.
      sample_weight: (N,) its weights, or None.
      kappa: κ, as `stepwise_init`.
      reg_covar: as `stepwise_init`.
      fixed: as `stepwise_init`.
      chunk_size: rows per chunk of the E step (static).

    Returns:
      The `StepwiseState`.
    """
    shift = weighted_mean(x, sample_weight)
    gmm = with_scale_tril(gmm)
    stats, _ = e_step_stats(x, gmm, shift, sample_weight=sample_weight, chunk_size=chunk_size)
    return StepwiseState(gmm, per_point(stats), shift, jnp.zeros((), jnp.int32), stats.count,
                         *_settings(x.dtype, kappa, reg_covar, fixed))


def step_size(seen, weight, kappa):
    """ρ of a batch of total weight `weight` after the batches before it.

    1 for the first batch (seen = 0: the running Stats start as its Stats), else
    (seen / weight + 2)^(−κ), i.e. (t + 2)^(−κ) at step t (0-based) of equal batches. Works
    on Python numbers and on (traced) arrays.

    Args:
      seen: the total weight of the batches before it.
      weight: the batch's total weight.
      kappa: κ, the step-size decay.

    Returns:
      ρ, an array of the broadcast shape of the arguments (() for scalars).
    """
    later = (seen / jnp.maximum(weight, jnp.finfo(jnp.result_type(weight, float)).tiny)
             + 2.0) ** (-kappa)
    return jnp.where(seen > 0, later, 1.0)


def per_point(stats: Stats) -> Stats:
    """`Stats` per unit of weight (divided by their count).

    Args:
      stats: `Stats` with count ().

    Returns:
      `Stats` of the same shapes, count 1.
    """
    return jax.tree_util.tree_map(lambda a: a / stats.count, stats)


def blend(running, new, rho):
    """The stepwise step (1 − ρ) running + ρ new, leaf by leaf.

    Args:
      running: a pytree (e.g. `Stats`).
      new: a pytree of the same structure and shapes.
      rho: ρ, a scalar.

    Returns:
      The blended pytree.
    """
    return jax.tree_util.tree_map(lambda r, s: (1 - rho) * r + rho * s, running, new)


def stepwise_update(xb, mask, state: StepwiseState, *, combine=identity):
    """One stepwise-EM update from a chunked batch. A pure function of arrays.

    s ← (1 − ρ) s + ρ ŝ with ŝ the batch's per-point Stats (so batches of different sizes or
    total weights weigh the same per unit of weight) and ρ = `step_size`(seen, Σ w, κ), then
    θ ← M step(s), keeping the parameters that `state.fixed` marks.

    Args:
      xb: (C, R, D) the batch's chunks.
      mask: (C, R) row weights.
      state: the `StepwiseState`.
      combine: maps local to global (Stats, Σ log p) (a `psum` over a mesh).

    Returns:
      (new state, the batch's mean log-likelihood () under `state.gmm`, Σ w log p / Σ w).
    """
    gmm, running, shift = state.gmm, state.running, state.shift
    stats, sum_ll = combine(e_step_stats_fast(xb, mask, gmm, shift))
    rho = step_size(state.seen, stats.count, state.kappa).astype(state.seen.dtype)
    running = blend(running, per_point(stats), rho)
    batched = jax.tree_util.tree_map(lambda a: a[None], (running, shift, gmm))
    new = factored_m_step(*batched[:2], covariance_type=gmm.covariance_type,
                          reg_covar=state.reg_covar, fixed=state.fixed, current=batched[2])
    new = jax.tree_util.tree_map(lambda a: a[0], new)
    state = state._replace(gmm=new, running=running, step=state.step + 1,
                           seen=state.seen + stats.count)
    return state, sum_ll / stats.count


_stepwise_jit = jax.jit(stepwise_update, static_argnames=("combine",))

STREAM_FAILED = (
    "Stepwise EM failed: the fitted mixture is not finite (e.g. from collapsed or duplicated "
    "points in a batch). Increase `reg_covar`, lower the step sizes (a larger `kappa`), "
    "decrease `n_components` or rescale `batches`.")
"""The ValueError's message of a `fit_minibatch` whose fitted mixture is not finite."""


def stepwise_step(state: StepwiseState, batch: jax.Array, sample_weight=None, *,
                  chunk_size: int | None = None):
    """`stepwise_update` on one device from a batch.

    Jitted (compiled once per batch layout); no argument checks.

    Args:
      state: the `StepwiseState`.
      batch: (B, D) points.
      sample_weight: (B,) weights, or None.
      chunk_size: rows per chunk, or None.

    Returns:
      (new state, the batch's mean log-likelihood ()).
    """
    xb, mask = batch_chunks(batch, sample_weight, state.gmm.covariance_type, chunk_size)
    return _stepwise_jit(xb, mask, state)


@functools.lru_cache(maxsize=16)
def _sharded_stepwise_fn(mesh):
    from jaxvi import distributed

    update = functools.partial(stepwise_update, combine=distributed.psum_data)
    return jax.jit(distributed.shard_map_data(update, mesh, 2, 1))


def _check_minibatch_args(kappa, covariance_type, max_steps, tol, reg_covar) -> None:
    if not 0.5 < float(kappa) <= 1.0:
        raise ValueError(f"`kappa` must be in (0.5, 1]; got {kappa!r}.")
    checks.check_covariance_type(covariance_type)
    if max_steps is not None:
        _validate.check_int("max_steps", max_steps, 1)
    _validate.check_number("tol", tol)
    _validate.check_number("reg_covar", reg_covar)


def _initial_gmm(key, first, n_components, covariance_type, init, reg_covar, weights) -> GMM:
    """The given `init` GMM (checked, in the batches' dtype), or one initialised on the first
    batch (weighted by its sample weights)."""
    n, d = first.shape
    if isinstance(init, GMM):
        checks.check_gmm(init, n_components=n_components, n_features=d, name="init")
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, first.dtype), init)
    k = checks.check_n_components(n_components, n)
    _validate.check_choice("init", init, em_init.INITS)
    return em_init.initialize(key, first, k, covariance_type=covariance_type, init=init,
                              reg_covar=reg_covar, sample_weight=weights)


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
    sample_weight: Iterable | None = None,
    fixed: tuple[str, ...] = (),
) -> EMFitResult:
    """Stepwise EM (Cappé & Moulines 2009) on running averages of per-point `Stats`.

    Step t ≥ 1 sets s ← (1 − ρ_t) s + ρ_t ŝ(batch_t; θ) with ρ_t = (t + 2)^(−κ) for batches
    of equal weight (in general (W_t / w_t + 2)^(−κ), w_t the batch's weight and W_t that of
    the batches before it: `step_size`), then θ ← M step(s); s starts from the first batch's
    statistics under the initial θ. Each step
    (`stepwise_update`, on a `StepwiseState`) is jitted; the loop over batches is host-side.

    Args:
      batches: yields arrays (B_t, D) (any iterable, e.g. a generator over files; B_t may
        vary).
      n_components: K.
      key: PRNG key of the initialisation on the first batch (unused for a given GMM).
      covariance_type: "full", "tied", "diag" or "spherical".
      kappa: κ ∈ (0.5, 1], the step-size decay (the estimators' scikit-learn name:
        `learning_decay`).
      max_steps: stop after this many batches (default: when `batches` ends).
      tol: `converged` when the last change of the batch log-likelihood is below it.
      init: "kmeans++", "random", "random_from_data" (on the first batch) or a `GMM`.
      reg_covar: added to the covariances' diagonal in every M step.
      chunk_size: rows per chunk of the fused E step.
      mesh: each batch's rows are split over its "data" axis and the batch statistics
        summed across devices, as in `fit`; with several processes, each yields its own
        rows of every batch and the initialisation is computed from the first batch's rows
        of every process (`jaxvi.processes.init_rows`).
      sample_weight: yields one (B_t,) array of weights ≥ 0 per batch, in step with
        `batches` (as `fit`'s sample_weight; ŝ is then per unit of weight, and the initial
        mixture is fitted to the weighted first batch).
      fixed: parameters kept at their initial values, as in `fit`.

    Returns:
      An `EMFitResult` whose `history` (length = steps taken, no padding) holds each batch's
      mean log-likelihood before its update, `objective` the last one, `n_iter` the
      number of batches, and `converged` whether the last change of the batch log-likelihood
      was below `tol` (never with the default tol = 0). A ValueError if the fitted mixture
      is not finite (`STREAM_FAILED`).
    """
    _check_minibatch_args(kappa, covariance_type, max_steps, tol, reg_covar)
    fixed = checks.fixed_mask(fixed)
    fixed = None if fixed is None else jnp.asarray(fixed)
    stream = weighted_batches(batches, sample_weight, max_steps)
    first, w0 = next(stream)
    start, w_start = first, w0
    if mesh is not None:  # every process initialises from the whole first batch
        from jaxvi.processes import init_rows

        start = jnp.asarray(init_rows(first))
        w_start = None if w0 is None else jnp.asarray(init_rows(w0))
    gmm = _initial_gmm(key, start, n_components, covariance_type, init, reg_covar, w_start)
    state = stepwise_init(gmm, start, w_start, kappa=kappa, reg_covar=reg_covar, fixed=fixed,
                          chunk_size=chunk_size)
    chunks = chunker(mesh, state.gmm.n_features, state.gmm.covariance_type, chunk_size)
    update = _stepwise_jit
    if mesh is not None:  # the mesh's step, from process 0's state
        from jaxvi import distributed

        state = distributed.same_on_every_process(state)
        update = _sharded_stepwise_fn(mesh)
    state, hist = run_stream(lambda s, t, batch, w: update(*chunks(batch, w), s), state,
                             itertools.chain([(first, w0)], stream))
    raise_if_not_finite(state.gmm, STREAM_FAILED)
    n = hist.shape[0]
    converged = jnp.abs(hist[-1] - hist[-2]) < tol if n > 1 else jnp.zeros((), bool)
    return EMFitResult(state.gmm, hist[-1], jnp.asarray(n), converged, hist)
