"""The one streaming driver that stepwise EM (`jaxvi.em.online.fit_minibatch`, and
`partial_fit` through `jaxvi.em.online_starts`) and stochastic VI
(`jaxvi.em.variational.online.fit_variational_minibatch`) share, as `jaxvi.em.driver` is the
full-batch fits' one driver: the checked host-side stream of batches (`weighted_batches`), a
batch as the chunks a jitted step reads, on one device (`batch_chunks`) or with its rows split
over a mesh (`chunker`), and the host-side loop that runs the step on each batch and collects
the value each step reports (`run_stream`), and the finite check of the fitted parameters
after the stream (`raise_if_not_finite`). A variant supplies its state (made from the first
batch), its step and its result."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp

from jaxvi.em import checks
from jaxvi.em.stats import chunk_layout, to_chunks


def weighted_batches(batches: Iterable, sample_weight: Iterable | None,
                     max_steps: int | None = None) -> Iterator[tuple[jax.Array, jax.Array | None]]:
    """The host-side stream of the mini-batch fits: yields (batch (B_t, D), its weights (B_t,)
    or None), checked, each later batch with the first's D and cast to its dtype, at most
    `max_steps` of them. Lazy: batch t + 1 is drawn from `batches` only when asked for, after
    the step on batch t; `sample_weight` (one array per batch, in step) must not end first."""
    iterator = iter(batches)
    weights = None if sample_weight is None else iter(sample_weight)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("`batches` must yield at least one batch; got none.") from None
    checks.check_x(first, name="batches")
    first = checks.as_float_data(first, "batches")
    yield first, _next_weights(weights, first)
    t = 1
    while max_steps is None or t < max_steps:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        checks.check_x(batch, first.shape[1], name="batches")
        batch = jnp.asarray(batch, first.dtype)
        t += 1
        yield batch, _next_weights(weights, batch)


def _next_weights(weights: Iterator | None, batch: jax.Array) -> jax.Array | None:
    """The sample weights of `batch` (B, D): the next item of `weights` checked (B,), or
    None when unweighted."""
    if weights is None:
        return None
    try:
        w = next(weights)
    except StopIteration:
        raise ValueError("`sample_weight` must yield one array per batch; it ended "
                         "first.") from None
    return checks.check_sample_weight(w, batch.shape[0], batch.dtype)


def raise_if_not_finite(params, message: str) -> None:
    """The guard after a streaming fit, as the full-batch driver's: a ValueError(message)
    when any leaf of the fitted `params` is not finite."""
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(params)):
        raise ValueError(message)


def batch_chunks(batch: jax.Array, sample_weight: jax.Array | None, covariance_type: str,
                 chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """A batch (B, D) and its weights (B,) or None as the chunks a step reads on one device:
    (xb (C, R, D), mask (C, R) row weights), by `chunk_layout` and `to_chunks`."""
    n_chunks, rows = chunk_layout(batch.shape[0], batch.shape[1], covariance_type, chunk_size)
    return to_chunks(batch, n_chunks, rows, sample_weight)


def chunker(mesh: jax.sharding.Mesh | None, n_features: int, covariance_type: str,
            chunk_size: int | None = None) -> Callable:
    """(batch (B, D), weights (B,) or None) -> (xb, mask): `batch_chunks` on one device
    (mesh None), or the batch's rows (and weights) split over `mesh`'s "data" axis
    (`jaxvi.distributed.shard_chunks`; the mesh is checked here, once)."""
    if mesh is None:
        return lambda batch, w: batch_chunks(batch, w, covariance_type, chunk_size)
    from jaxvi import distributed

    distributed.check_mesh(mesh)

    def layout(n_rows):
        return chunk_layout(n_rows, n_features, covariance_type, chunk_size)

    return lambda batch, w: distributed.shard_chunks(batch, mesh, layout, weights=w)


def run_stream(step: Callable, state, batches: Iterable):
    """The host-side loop of a streaming fit: state, value = step(state, t, batch, weights)
    for each (batch, weights) of `batches`, t = 0, 1, ... (drawn lazily: batch t + 1 only
    after step t). -> (the final state, history (T,): the values stacked)."""
    history = []
    for t, (batch, w) in enumerate(batches):
        state, value = step(state, t, batch, w)
        history.append(value)
    return state, jnp.stack(history)
