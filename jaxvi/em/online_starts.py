"""Stepwise EM from several starts at once (`Candidates`): the starts run side by side
(vmapped) on the first batches of a stream, each scored by its running predictive
log-likelihood (every batch scored before it updates the start), and after a warm-up the best
one is kept (`best`) and continued alone. A start drawn from one small first batch can lead
stepwise EM to a poor local optimum (a component starved, or two clusters merged) that later
batches do not undo; several starts kept through the warm-up, like `fit`'s `n_init`
restarts, make that unlikely."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvi.em.model import GMM
from jaxvi.em.online import (
    StepwiseState,
    blend,
    step_size,
    stepwise_init,
    stepwise_step,
    stepwise_update,
)
from jaxvi.em.streaming import batch_chunks


class Candidates(NamedTuple):
    """C stepwise-EM runs on one stream, until the warm-up ends.

    states: a `StepwiseState` batched along axis 0 (C, ...); score: (C,) each run's running
    mean of the batch log-likelihoods before its updates (the prequential log-likelihood,
    averaged with the step sizes of the Stats, so recent batches weigh more); warmup: ()
    int, the number of batches after which `best` is to be kept.
    """

    states: StepwiseState
    score: jax.Array
    warmup: jax.Array


def candidates_init(gmms: GMM, first: jax.Array, sample_weight: jax.Array | None = None, *,
                    warmup: int, kappa: float = 0.6, reg_covar: float = 1e-6, fixed=None,
                    chunk_size: int | None = None) -> Candidates:
    """The candidates before the first batch: one `stepwise_init` state per GMM of `gmms`.

    All with the shift of the first batch, scores 0. Settings as `stepwise_init`.

    Args:
      gmms: C starting GMMs batched along axis 0 (e.g. `init.initial_gmms`).
      first: (B, D) the first batch.
      sample_weight: (B,) its weights, or None.
      warmup: ≥ 1 batches before `best` is kept (unchecked).
      kappa: κ, as `stepwise_init`.
      reg_covar: as `stepwise_init`.
      fixed: as `stepwise_init`.
      chunk_size: as `stepwise_init`.

    Returns:
      The `Candidates`.
    """
    states = jax.vmap(lambda g: stepwise_init(g, first, sample_weight, kappa=kappa,
                                              reg_covar=reg_covar, fixed=fixed,
                                              chunk_size=chunk_size))(gmms)
    score = jnp.zeros(gmms.weights.shape[:1], first.dtype)
    return Candidates(states, score, jnp.asarray(warmup, jnp.int32))


def candidates_update(xb, mask, cands: Candidates):
    """`stepwise_update` of every candidate on one chunked batch.

    The score moves by the step size of the Stats: score ← (1 − ρ) score + ρ ll.

    Args:
      xb: (C', R, D) the batch's chunks.
      mask: (C', R) row weights.
      cands: the `Candidates` (C runs).

    Returns:
      (new candidates, the batch's mean log-likelihood under each (C,)).
    """
    rho = step_size(cands.states.seen[0], jnp.sum(mask), cands.states.kappa[0])
    states, ll = jax.vmap(stepwise_update, in_axes=(None, None, 0))(xb, mask, cands.states)
    score = blend(cands.score, ll, rho.astype(ll.dtype))
    return cands._replace(states=states, score=score), ll


_candidates_jit = jax.jit(candidates_update)


def candidates_step(cands: Candidates, batch: jax.Array, sample_weight=None, *,
                    chunk_size: int | None = None):
    """`candidates_update` on one device from a batch. Jitted.

    Args:
      cands: the `Candidates`.
      batch: (B, D) points.
      sample_weight: (B,) weights, or None.
      chunk_size: rows per chunk, or None.

    Returns:
      (new candidates, (C,) the batch's mean log-likelihood under each).
    """
    xb, mask = batch_chunks(batch, sample_weight, cands.states.gmm.covariance_type, chunk_size)
    return _candidates_jit(xb, mask, cands)


def leader(cands: Candidates) -> jax.Array:
    """The candidate with the best score so far (the first on ties; NaN never).

    Args:
      cands: the `Candidates`.

    Returns:
      () int, its index.
    """
    return jnp.argmax(jnp.where(jnp.isnan(cands.score), -jnp.inf, cands.score))


def best(cands: Candidates) -> StepwiseState:
    """The leading candidate's `StepwiseState` (unbatched), to continue alone.

    Args:
      cands: the `Candidates`.

    Returns:
      The `StepwiseState` at `leader(cands)`.
    """
    i = leader(cands)
    return jax.tree_util.tree_map(lambda a: a[i], cands.states)


def advance(state: StepwiseState | Candidates, batch: jax.Array, sample_weight=None, *,
            chunk_size: int | None = None):
    """One batch of a stream run as a `StepwiseState` or as `Candidates`.

    Candidates whose warm-up ends with this batch come back as the best one's `StepwiseState`.
    The host waits for the device only at that end.

    Args:
      state: the `StepwiseState` or `Candidates`.
      batch: (B, D) points.
      sample_weight: (B,) weights, or None.
      chunk_size: rows per chunk, or None.

    Returns:
      (new state, the batch's mean log-likelihood () under the (leading) mixture before the
      update).
    """
    if not isinstance(state, Candidates):
        return stepwise_step(state, batch, sample_weight, chunk_size=chunk_size)
    state, ll = candidates_step(state, batch, sample_weight, chunk_size=chunk_size)
    ll = ll[leader(state)]
    if int(state.states.step[0]) >= int(state.warmup):
        state = best(state)
    return state, ll


def steps(state: StepwiseState | Candidates) -> int:
    """The number of batches the stream has taken (host-side).

    Args:
      state: the `StepwiseState` or `Candidates`.

    Returns:
      A Python int.
    """
    step = state.states.step[0] if isinstance(state, Candidates) else state.step
    return int(step)


def current_gmm(state: StepwiseState | Candidates) -> GMM:
    """The mixture a stream's state stands for: its own, or its leading candidate's.

    Args:
      state: the `StepwiseState` or `Candidates`.

    Returns:
      The `GMM` (unbatched).
    """
    if isinstance(state, Candidates):
        i = leader(state)
        return jax.tree_util.tree_map(lambda a: a[i], state.states.gmm)
    return state.gmm
