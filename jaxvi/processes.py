"""The processes of a multi-process job (`jax.distributed`; one per host on a cluster, or
several on one machine, started by `jaxvi launch`): joining it before JAX computes anything
(`initialize`, from arguments, the launcher's environment variables or JAX's cluster
auto-detection, with bounded waits), which process writes (`is_main_process`), each
process's contiguous block of rows (`process_rows`, `local_rows`, read from a memory map),
the rows every process initialises a fit from (`init_rows`), and small host-side exchanges
(`sum_over_processes`, `to_local`, `wait_for_all`). The mesh and the sharded programs are
`jaxvi.distributed`'s.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np

# What `jaxvi launch` sets in each process it starts (JAX itself reads the first).
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
DEFAULT_TIMEOUT_S = 60


def process_config(coordinator=None, num_processes=None, process_id=None, *, environ=None):
    """The job this process belongs to, each part from its argument or else from the
    environment (`ENV_COORDINATOR`, ...), checked.

    Args:
      coordinator: "host:port" of process 0.
      num_processes: the number of processes P ≥ 1.
      process_id: this process's index in [0, P).
      environ: the environment read (default `os.environ`).

    Returns:
      (coordinator "host:port", num_processes, process_id); None when none of the three is
      given (a single process).

    Raises:
      ValueError: naming a missing or malformed one.
    """
    environ = os.environ if environ is None else environ
    given = {
        "coordinator": coordinator if coordinator is not None else environ.get(ENV_COORDINATOR),
        "num_processes": (num_processes if num_processes is not None
                          else environ.get(ENV_NUM_PROCESSES)),
        "process_id": process_id if process_id is not None else environ.get(ENV_PROCESS_ID),
    }
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"a multi-process run needs `coordinator`, `num_processes` and "
                         f"`process_id` (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, "
                         f"{ENV_PROCESS_ID}); missing {', '.join(missing)}.")
    host, port = _host_port(str(given["coordinator"]))
    n = _as_int("num_processes", given["num_processes"], 1)
    i = _as_int("process_id", given["process_id"], 0)
    if i >= n:
        raise ValueError(f"`process_id` must be in [0, {n}) for {n} processes; got {i}.")
    return f"{host}:{port}", n, i


def initialize(coordinator=None, num_processes=None, process_id=None, *, cluster: bool = False,
               timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join a multi-process job (`jax.distributed.initialize`) before JAX computes anything.

    The job is given by the arguments or the environment (`process_config`), or, with
    `cluster`, detected by JAX (SLURM, Open MPI, Kubernetes, Cloud TPU). On CPU the
    collectives run over gloo. `timeout_s` bounds every wait: a process that cannot reach
    the coordinator within it raises `ConnectionError` naming the process; once joined, a
    process whose peer stops (dies, is killed) is ended by JAX within about `timeout_s`
    (its heartbeat timeout), with an error naming the silent task.

    Args:
      coordinator: "host:port" of process 0 (else from the environment).
      num_processes: the number of processes (else from the environment).
      process_id: this process's index (else from the environment).
      cluster: let JAX detect the job when none is given.
      timeout_s: bound of every wait, ≥ 1 second.

    Returns:
      True when a job with several processes was joined, False for a single process
      (nothing is done).

    Raises:
      ValueError: a missing or malformed setting, `timeout_s` < 1, or with `cluster` no
        cluster environment detected.
      ConnectionError: the coordinator not reached within `timeout_s`.
    """
    config = process_config(coordinator, num_processes, process_id)
    if config is None and not cluster:
        return False
    if not timeout_s >= 1:
        raise ValueError(f"`timeout_s` must be at least 1 second; got {timeout_s!r}.")
    # At exit every process waits for the others (process 0 may still be writing outputs);
    # a dead peer is caught by the heartbeat before that wait ends.
    timeouts = dict(initialization_timeout=int(timeout_s), heartbeat_timeout_seconds=int(timeout_s),
                    shutdown_timeout_seconds=max(int(timeout_s), 300))
    if config is None:
        try:
            _join(**timeouts)
        except ValueError as err:
            raise ValueError(f"no cluster environment detected ({err}); give the coordinator, "
                             "the number of processes and this process's id instead.") from None
        return jax.process_count() > 1
    address, n, i = config
    if n == 1:
        return False
    _wait_for_coordinator(address, i, n, timeout_s)
    _join(coordinator_address=address, num_processes=n, process_id=i, **timeouts)
    return True


def _join(**kwargs) -> None:
    """`jax.distributed.initialize(**kwargs)`, CPU collectives over gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes a job's outputs."""
    return jax.process_index() == 0


def process_rows(n_rows: int, process_id: int | None = None,
                 num_processes: int | None = None) -> slice:
    """This process's contiguous block of `n_rows` rows: the first n_rows % P processes get
    one row more than the rest.

    Args:
      n_rows: N, the rows of the whole data set.
      process_id: the process (default: this one).
      num_processes: P (default: the current job's).

    Returns:
      The slice of its rows.
    """
    i = jax.process_index() if process_id is None else process_id
    p = jax.process_count() if num_processes is None else num_processes
    base, extra = divmod(int(n_rows), p)
    start = i * base + min(i, extra)
    return slice(start, start + base + (i < extra))


def local_rows(x) -> np.ndarray:
    """This process's rows of x (`process_rows`), copied into memory.

    Args:
      x: (N, ...) all rows; with a memory map (`np.load(path, mmap_mode="r")`) only this
        process's rows are read from disk.

    Returns:
      (n_i, ...) this process's rows.
    """
    return np.array(x[process_rows(np.shape(x)[0])])


INIT_ROWS = 65_536  # rows that a multi-process fit initialises from, at most


def init_rows(x, max_rows: int = INIT_ROWS) -> np.ndarray:
    """The rows a fit over several processes initialises from, the same on every process.

    All rows of the job in process order when there are at most `max_rows` of them, else
    every s-th of them (s = ⌈N / max_rows⌉), so that the initialisation sees every process's
    data and, for N ≤ `max_rows`, equals the single-process one.

    Args:
      x: (n_i, D) this process's own rows.
      max_rows: the most rows returned.

    Returns:
      (M, D) the rows, M ≤ max_rows; with one process, x itself.
    """
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    x = np.asarray(x)
    counts = np.asarray(multihost_utils.process_allgather(np.asarray(x.shape[0]))).reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    stride = -(-int(counts.sum()) // max_rows)
    sizes = [len(range(-int(o) % stride, int(c), stride))
             for o, c in zip(offsets, counts, strict=True)]
    mine = x[-int(offsets[jax.process_index()]) % stride::stride]
    padded = np.zeros((max(sizes),) + x.shape[1:], x.dtype)
    padded[: mine.shape[0]] = mine
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # (P, max size, ...)
    return np.concatenate([g[:n] for g, n in zip(gathered, sizes, strict=True)])


def sum_over_processes(tree):
    """The sum over processes of a pytree of host values.

    Args:
      tree: a pytree of numbers or NumPy arrays, the same shapes on every process.

    Returns:
      The pytree of NumPy sums, each leaf its input's shape; with one process, the values as
      NumPy arrays.
    """
    tree = jax.tree.map(np.asarray, tree)
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda a: np.sum(a, axis=0),
                        multihost_utils.process_allgather(tree))


def to_local(tree):
    """This process's own copy of a pytree of replicated arrays.

    Args:
      tree: a pytree of arrays replicated over the processes.

    Returns:
      With several processes, uncommitted arrays on the default device (what host-side code
      and jitted calls that only this process makes can use, and what `jax.device_put` can
      spread over a mesh again), each leaf its input's shape; with one process, `tree`.
    """
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(jax.numpy.asarray, jax.device_get(tree))


def wait_for_all(name: str) -> None:
    """A barrier: return when every process of the job has reached `name`.

    Args:
      name: the barrier's name, the same on every process.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"`coordinator` must be HOST:PORT with a port in 1..65535; "
                         f"got {address!r}.")
    return host, int(port)


def _as_int(name: str, value, low: int) -> int:
    try:
        v = int(str(value))
    except ValueError:
        raise ValueError(f"`{name}` must be an integer >= {low}; got {value!r}.") from None
    if v < low:
        raise ValueError(f"`{name}` must be an integer >= {low}; got {v}.")
    return v


def _wait_for_coordinator(address: str, process_id: int, n: int, timeout_s: float) -> None:
    """Process 0 checks that it can serve on the coordinator's port; the others that they can
    reach it, retrying until `timeout_s`. `ConnectionError` naming the process otherwise
    (JAX's own timeout ends the process without a Python error)."""
    host, port = _host_port(address)
    who = f"process {process_id} of {n}"
    if process_id == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", port))
            except OSError as err:
                raise ConnectionError(f"{who} cannot serve as the coordinator on port {port}: "
                                      f"{err.strerror or err}.") from None
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(f"{who} cannot reach the coordinator at {address} within "
                                      f"{timeout_s:g} s ({err.strerror or err}); is process 0 "
                                      "running there?") from None
            time.sleep(0.2)
