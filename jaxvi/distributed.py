"""Data parallelism over a `jax.sharding.Mesh`: EM whose sufficient statistics are summed
across devices, and the batch sharding used by data-parallel VAE training.

Rows of the data are split over the mesh axis ``"data"``. For EM every device runs the fused
E step on its rows and `lax.psum` adds the `jaxvi.em.Stats` (they are sums over points), so
each M step sees the statistics of the whole data set and the fit equals the single-device fit
up to the order of summation. Nothing else changes: the loop, the M step and the restart logic
are `jaxvi.em`'s own, run inside `jax.shard_map`.

Several processes (one per host on a cluster, or several on one machine, joined by
`jaxvi.processes.initialize`): `jax.devices()` then lists every process's devices,
`data_mesh()` spans them all, and each process passes *its own* rows as `x`
(`jaxvi.processes.local_rows`)::

    jaxvi.processes.initialize("host0:1234", num_processes=2, process_id=i)
    x = jaxvi.processes.local_rows(np.load("data.npy", mmap_mode="r"))
    result = jaxvi.em.fit(x, 16, key=jax.random.key(0), mesh=jaxvi.distributed.data_mesh())
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices`.

    Args:
      devices: the devices (default: every device of every process).

    Returns:
      The `Mesh`, one axis "data" of len(devices).

    Raises:
      ValueError: an empty `devices`.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` must name at least one device; got none.")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_mesh(mesh) -> Mesh:
    """`mesh`, checked: a `jax.sharding.Mesh` with a "data" axis.

    Args:
      mesh: the mesh to check.

    Returns:
      `mesh` itself.

    Raises:
      ValueError: not a `Mesh`, or one without a "data" axis.
    """
    if not isinstance(mesh, Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"`mesh` must have an axis named {DATA_AXIS!r}; got axes {mesh.axis_names}."
        )
    return mesh


def psum_data(tree):
    """Sum a pytree over the "data" axis (inside `shard_map`). A traced primitive.

    Args:
      tree: a pytree of arrays.

    Returns:
      The pytree of sums over the devices, each leaf its input's shape.
    """
    return jax.lax.psum(tree, DATA_AXIS)


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding that splits axis `batch_axis` of an array over the "data" axis.

    Args:
      mesh: a `Mesh` with a "data" axis.
      batch_axis: the axis split, ≥ 0.

    Returns:
      The `NamedSharding`.

    Raises:
      ValueError: a bad `mesh`, or `batch_axis` not a non-negative integer.
    """
    check_mesh(mesh)
    if isinstance(batch_axis, bool) or not isinstance(batch_axis, int) or batch_axis < 0:
        raise ValueError(f"`batch_axis` must be a non-negative integer; got {batch_axis!r}.")
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a whole copy of an array on every device of `mesh`.

    Args:
      mesh: a `Mesh` with a "data" axis.

    Returns:
      The `NamedSharding`.

    Raises:
      ValueError: a bad `mesh`.
    """
    return NamedSharding(check_mesh(mesh), P())


def shard_chunks(x, mesh: Mesh, rows_per_chunk_fn, weights=None):
    """Pad and lay out the process-local rows as chunks sharded over "data".

    With several processes, every process pads its rows to the largest local count.

    Args:
      x: (n, D) the process-local rows.
      mesh: a `Mesh` with a "data" axis.
      rows_per_chunk_fn: `rows_per_chunk_fn(n_per_device) -> (n_chunks, rows)` chooses the
        per-device chunking.
      weights: (n,) sample weights, or None.

    Returns:
      (xb (devices·n_chunks, rows, D), mask (devices·n_chunks, rows)), both split over the
      mesh along axis 0; mask is 1 for real rows (or their `weights`) and 0 for padding.

    Raises:
      ValueError: a bad `mesh`, or x not 2-D.
    """
    check_mesh(mesh)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`x` must have 2 dimensions (n_samples, n_features); got shape "
                         f"{x.shape}.")
    n, d = x.shape
    local_devices = len(mesh.local_devices)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        n = int(np.max(multihost_utils.process_allgather(np.asarray(n))))
    per_device = math.ceil(n / local_devices)
    n_chunks, rows = rows_per_chunk_fn(per_device)
    padded = local_devices * n_chunks * rows
    mask = np.zeros((padded,), x.dtype)
    mask[: x.shape[0]] = 1 if weights is None else np.asarray(weights, x.dtype)
    xp = np.zeros((padded, d), x.dtype)
    xp[: x.shape[0]] = x
    sharding = batch_sharding(mesh)
    xb = jax.make_array_from_process_local_data(
        sharding, xp.reshape(local_devices * n_chunks, rows, d)
    )
    mb = jax.make_array_from_process_local_data(
        sharding, mask.reshape(local_devices * n_chunks, rows)
    )
    return xb, mb


def shard_map_data(fn, mesh: Mesh, n_sharded: int, n_replicated: int):
    """`shard_map` of `fn(*sharded, *replicated)`. Builds the mapped function only: shapes
    are checked when it is traced.

    Args:
      fn: the function mapped.
      mesh: a `Mesh` with a "data" axis.
      n_sharded: the first this many arguments are split over "data" along axis 0.
      n_replicated: the rest, this many, are replicated (and so is the output).

    Returns:
      The mapped function.
    """
    in_specs = (P(DATA_AXIS),) * n_sharded + (P(),) * n_replicated
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P())


def same_on_every_process(tree):
    """Process 0's values of `tree`, on every process.

    Args:
      tree: a pytree of arrays (e.g. initial parameters computed from each process's own
        rows).

    Returns:
      With several processes, process 0's values of `tree`; with one process, `tree`
      unchanged.
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(tree)
