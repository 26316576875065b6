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
    """The host-side stream of the mini-batch fits: checked batches and their weights.

    Each later batch must have the first's D and is cast to its dtype. Lazy: batch t + 1 is
    drawn from `batches` only when asked for, after the step on batch t.

    Args:
      batches: an iterable of (B_t, D) arrays.
      sample_weight: an iterable of one (B_t,) array per batch, in step (must not end first),
        or None.
      max_steps: at most this many batches, or None.

    Yields:
      (batch (B_t, D), its weights (B_t,) or None).

    Raises:
      ValueError: no batch, an invalid batch or weights, or `sample_weight` ending first.
    """
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
    """The guard after a streaming fit, as the full-batch driver's.

    Args:
      params: the fitted parameters (a pytree).
      message: the error's message.

    Raises:
      ValueError: `message`, when any leaf of `params` is not finite.
    """
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(params)):
        raise ValueError(message)


def batch_chunks(batch: jax.Array, sample_weight: jax.Array | None, covariance_type: str,
                 chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """A batch and its weights as the chunks a step reads on one device.

    By `chunk_layout` and `to_chunks`.

    Args:
      batch: (B, D) points.
      sample_weight: (B,) weights, or None.
      covariance_type: "full", "tied", "diag" or "spherical" (sizes the chunks).
      chunk_size: rows per chunk, or None.

    Returns:
      (xb (C, R, D), mask (C, R) row weights).
    """
    n_chunks, rows = chunk_layout(batch.shape[0], batch.shape[1], covariance_type, chunk_size)
    return to_chunks(batch, n_chunks, rows, sample_weight)


def chunker(mesh: jax.sharding.Mesh | None, n_features: int, covariance_type: str,
            chunk_size: int | None = None) -> Callable:
    """The function that lays out each batch of a stream.

    `batch_chunks` on one device (mesh None), or the batch's rows (and weights) split over
    `mesh`'s "data" axis (`jaxvi.distributed.shard_chunks`; the mesh is checked here, once).

    Args:
      mesh: None, or a mesh with a "data" axis.
      n_features: D.
      covariance_type: "full", "tied", "diag" or "spherical".
      chunk_size: rows per chunk, or None.

    Returns:
      (batch (B, D), weights (B,) or None) -> (xb, mask).
    """
    if mesh is None:
        return lambda batch, w: batch_chunks(batch, w, covariance_type, chunk_size)
    from jaxvi import distributed

    distributed.check_mesh(mesh)

    def layout(n_rows):
        return chunk_layout(n_rows, n_features, covariance_type, chunk_size)

    return lambda batch, w: distributed.shard_chunks(batch, mesh, layout, weights=w)


def run_stream(step: Callable, state, batches: Iterable):
    """The host-side loop of a streaming fit.

    state, value = step(state, t, batch, weights) for each (batch, weights) of `batches`,
    t = 0, 1, ... (drawn lazily: batch t + 1 only after step t).

    Args:
      step: step(state, t, batch, weights) -> (state, value).
      state: the initial state.
      batches: an iterable of (batch, weights).

    Returns:
      (state, history): the final state and (T,) the values stacked.
    """
    history = []
    for t, (batch, w) in enumerate(batches):
        state, value = step(state, t, batch, w)
        history.append(value)
    return state, jnp.stack(history)
