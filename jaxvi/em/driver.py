"""The one on-device fit driver that EM (`jaxvi.em.fit`), missing-value EM
(`jaxvi.em.missing_fit`) and VB-EM (`jaxvi.em.variational_fit`) share, as scikit-learn's
`BaseMixture.fit_predict` carries one loop for several models.

A variant supplies a `Model` (how its data are laid out, its initial parameters from keys,
its restarts loop); the driver holds what they share: the options as arrays (`options`),
the start from keys or from a warm start, on one device or with the rows split over a mesh
(`run`), the coordinate-ascent loop (`ascent_loop`), the choice of the best restart
(`best_restart`; both in `jaxvi.em.ascent`, re-exported here) and the finite check after the
fit (`raise_if_not_finite`).

Compile once: on one device, the loop of a fit whose rows fit one chunk runs on rows padded to
a bucketed row count (`bucket_rows`: 256, 384, 512, 768, ... rows, up to `BUCKET_MAX_ROWS`)
with zero-weight rows, which change nothing (every sum of the loop is weighted by the row
weights), so a new N in the same bucket reuses the loop's compiled program; tol and reg_covar
are traced, and a variant may trace max_iter too (`iteration_limits`). The initialisation is
never padded: its random draws (a k-means++ seeding, a permutation of the rows, ...) depend on
N and on whether the fit is weighted, so it runs on exactly the fit's rows (`initial_params`,
a small program compiled per N), as the mesh fit's does, and a padded fit starts where the
unpadded and the mesh fits start."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, _validate
from jaxvi.em.ascent import (  # noqa: F401  (re-exported: their former home, the variants' import)
    ascent_loop,
    best_restart,
    finite_along,
)
from jaxvi.em.step import identity


class Config(NamedTuple):
    """A fit's static configuration (hashable; one compiled program per value): K, the
    covariance type, the initialisation's name, at most `max_iter` iterations, the chunk
    layout (n_chunks, rows) of the data, and VB's weight prior type."""

    k: int | None = None
    covariance_type: str | None = None
    init: str | None = None
    max_iter: int = 100
    n_chunks: int | None = None
    rows: int | None = None
    weight_type: str | None = None


class Model(NamedTuple):
    """What a variant of the on-device fit supplies (module-level functions: static).

    - layout(x, weights, config) -> data: x as the loop reads it (e.g. chunks and row weights),
      traced;
    - initial(x, keys, weights, opts, config) -> params: one initial parameter set per key of
      keys (B,), batched along axis 0, traced; it reads only config's k, covariance_type,
      init and weight_type (`initial_params`);
    - restarts(data, params0s, opts, config, combine) -> result: the loop from each batched
      initial parameter set and the best restart's result (`combine` maps local to global
      statistics, e.g. a `psum` over a mesh axis);
    - params(result) -> the fitted parameters the finite check reads;
    - failure: the message of the ValueError when they are not finite.
    """

    layout: Callable
    initial: Callable
    restarts: Callable
    params: Callable
    failure: str


def batched(params):
    """One parameter set as a batch of one restart (axis 0).

    Args:
      params: a pytree, one parameter set.

    Returns:
      The pytree with a leading axis of size 1 on every leaf.
    """
    return jax.tree_util.tree_map(lambda a: a[None], params)


def options(dtype, *, tol, reg_covar, **more) -> dict:
    """The traced options every loop reads, as arrays of the data's dtype.

    Args:
      dtype: the data's float dtype.
      tol: the convergence tolerance.
      reg_covar: added to the covariances' diagonal.
      **more: the variant's further options (a prior, the fixed-parameter mask).

    Returns:
      A dict of tol and reg_covar as NumPy scalars of `dtype`, and `more` as given.
    """
    # NumPy scalars: the same arguments of the compiled loop as jnp's, without a conversion
    # program of their own
    dtype = np.dtype(dtype)
    return dict(tol=np.asarray(tol, dtype), reg_covar=np.asarray(reg_covar, dtype), **more)


def start_keys(key: jax.Array, init, inits: tuple[str, ...], n_init) -> jax.Array:
    """The keys of the restarts of an initialisation named `init`.

    Args:
      key: PRNG key.
      init: the initialisation's name, one of `inits`.
      inits: the names allowed.
      n_init: the number of restarts, ≥ 1.

    Returns:
      (n_init,) keys.

    Raises:
      ValueError: `init` not in `inits`, or `n_init` not a positive integer.
    """
    _validate.check_choice("init", init, inits)
    _validate.check_int("n_init", n_init, 1)
    return jax.random.split(key, int(n_init))


BUCKET_MAX_ROWS = 1 << 16
_MIN_BUCKET = 256
_MIN_HISTORY = 128


def bucket_rows(n: int) -> int:
    """The padded row count of a fit of n rows (at most 50% padding).

    Args:
      n: N, the fit's rows.

    Returns:
      The smallest of 256 and of 2^j, 1.5 * 2^j (384, 512, 768, 1024, ...) that is ≥ n.
    """
    if n <= _MIN_BUCKET:
        return _MIN_BUCKET
    p = 1 << (n - 1).bit_length()
    return 3 * p // 4 if 3 * p // 4 >= n else p


def iteration_limits(max_iter: int) -> tuple[int, jax.Array]:
    """A loop's static history length and its traced iteration limit.

    So that fits differing only in max_iter share one compiled program (`ascent_loop`'s
    `limit`).

    Args:
      max_iter: the fit's iteration limit, ≥ 0.

    Returns:
      (length, limit): the static length of the history, max_iter rounded up to a power of
      two ≥ 128 (0 for 0), and max_iter as a traced int32 () limit.
    """
    length = 0 if max_iter == 0 else max(_MIN_HISTORY, 1 << (int(max_iter) - 1).bit_length())
    return length, np.asarray(max_iter, np.int32)


def trimmed(result, max_iter: int):
    """`result` with its history (length from `iteration_limits`) cut to max_iter entries: on
    the host when concrete on one device (no program per max_iter), else on the device.

    Args:
      result: a fit's result with a history (..., L), L ≥ max_iter.
      max_iter: the fit's iteration limit.

    Returns:
      The result with history (..., max_iter).
    """
    history, max_iter = result.history, int(max_iter)
    if _validate.is_concrete(history) and len(history.sharding.device_set) == 1:
        cut = np.asarray(history)[..., :max_iter]
        return result._replace(history=jax.device_put(cut, history.sharding))
    return result._replace(history=history[..., :max_iter])


@functools.partial(jax.jit, static_argnames=("model", "config"))
def fit_from_keys(model: Model, config: Config, x, keys, weights, opts):
    """The fit from the initial parameters of each key of keys (B,) (compiled once per
    model, config and shapes)."""
    data = model.layout(x, weights, config)
    params0s = model.initial(x, keys, weights, opts, config)
    return model.restarts(data, params0s, opts, config, identity)


@functools.partial(jax.jit, static_argnames=("model", "config"))
def fit_from_params(model: Model, config: Config, x, params, weights, opts):
    """The fit from one given (warm-start) parameter set."""
    return model.restarts(model.layout(x, weights, config), batched(params), opts, config,
                          identity)


@functools.partial(jax.jit, static_argnames=("model", "config"))
def fit_from_starts(model: Model, config: Config, x, params0s, weights, opts):
    """The fit from the batched initial parameter sets params0s (B restarts along axis 0)."""
    return model.restarts(model.layout(x, weights, config), params0s, opts, config, identity)


@functools.partial(jax.jit, static_argnames=("model", "config"))
def _initial_params(model: Model, config: Config, x, keys, weights, opts):
    return model.initial(x, keys, weights, opts, config)


def initial_params(model: Model, config: Config, x, keys, weights, opts):
    """The initial parameters of each key, drawn from exactly the rows x (unpadded: `run`).

    A program of its own, shared by every fit with the same initialisation settings (only
    config's k, covariance_type, init and weight_type reach it) and shapes.

    Args:
      model: the variant (`Model`).
      config: the fit's `Config`.
      x: (N, D) data.
      keys: (B,) PRNG keys.
      weights: (N,) row weights, or None.
      opts: the traced options (`options`).

    Returns:
      The initial parameter sets, batched along axis 0 (B, ...).
    """
    config = Config(k=config.k, covariance_type=config.covariance_type, init=config.init,
                    weight_type=config.weight_type)
    return _initial_params(model, config, x, keys, weights, opts)


def job_rows(x, weights):
    """The rows (and their weights) the initialisation of a fit over a mesh reads.

    The same on every process (`jaxvi.processes.init_rows`).

    Args:
      x: (N, D) this process's rows.
      weights: (N,) their weights, or None.

    Returns:
      (rows, weights): JAX arrays of the job's initialisation rows, weights None for None.
    """
    from jaxvi.processes import init_rows

    return (jnp.asarray(init_rows(x)),
            None if weights is None else jnp.asarray(init_rows(weights)))


@functools.lru_cache(maxsize=16)
def _sharded_fn(model: Model, config: Config, mesh):
    """The jitted `shard_map` of a model's restarts loop for one mesh: its statistics
    `psum`-ed over "data" before every M step (compiled once per shapes)."""
    from jaxvi import distributed

    def local(xb, mask, params0s, opts):
        return model.restarts((xb, mask), params0s, opts, config, distributed.psum_data)

    return jax.jit(distributed.shard_map_data(local, mesh, 2, 2))


def _fit_sharded(model, config, x, weights, params0s, opts, mesh, chunk_size):
    """The restarts loop from the batched params0s with the rows of x split over the mesh's
    "data" axis (several processes: process 0's params0s are used everywhere)."""
    from jaxvi import distributed
    from jaxvi.em.stats import chunk_layout

    distributed.check_mesh(mesh)
    params0s = distributed.same_on_every_process(params0s)
    xb, mask = distributed.shard_chunks(
        x, mesh, lambda n: chunk_layout(n, x.shape[1], config.covariance_type, chunk_size),
        weights=weights)
    return _sharded_fn(model, config, mesh)(xb, mask, params0s, opts)


def is_bucketed(x, config: Config) -> bool:
    """Whether a one-device fit of x runs its loop on bucketed rows (`padded`).

    Args:
      x: (N, D) data.
      config: the fit's `Config`.

    Returns:
      True for a chunk layout of one chunk of N ≤ `BUCKET_MAX_ROWS` rows.
    """
    return config.n_chunks == 1 and config.rows == x.shape[0] <= BUCKET_MAX_ROWS


def padded(x, weights, config: Config):
    """A single-chunk fit of N ≤ `BUCKET_MAX_ROWS` rows padded to `bucket_rows(N)` rows.

    Zero rows of weight 0 after x; unchanged otherwise (several chunks, or no chunk layout).
    Concrete arrays are padded on the host (no compilation per N).

    Args:
      x: (N, D) data.
      weights: (N,) row weights, or None (1).
      config: the fit's `Config`.

    Returns:
      (x, weights, config): (N', D), (N',) and `config` with rows = N' when padded.
    """
    if not is_bucketed(x, config):
        return x, weights, config
    n = x.shape[0]
    size = bucket_rows(n)
    xp = np if _validate.is_concrete(x, weights) else jnp
    w = xp.ones((n,), x.dtype) if weights is None else weights
    x = xp.concatenate([x, xp.zeros((size - n, x.shape[1]), x.dtype)])
    w = xp.concatenate([w, xp.zeros((size - n,), x.dtype)])
    x, w = jax.device_put((x, w))  # no program per shape, unlike jnp.asarray on jax ≥ 0.10
    return x, w, config._replace(rows=size)


def run(model: Model, config: Config, x, weights, opts, *, keys=None, params=None,
        mesh=None, chunk_size: int | None = None) -> Any:
    """A checked variant's fit, followed by the finite check.

    From `keys` (restarts) or from one `params` (a warm start), on one device or with the
    rows of x split over `mesh`. On one device, the loop of a chunk-layout fit of one chunk
    runs on rows padded to a bucketed row count (`padded`), from initial parameters drawn from
    the unpadded rows (`initial_params`: the same as the mesh fit's).

    Args:
      model: the variant (`Model`).
      config: the fit's `Config`.
      x: (N, D) data, as `model.layout` reads it.
      weights: (N,) row weights, or None.
      opts: the traced options (`options`).
      keys: (B,) PRNG keys of the restarts, or None.
      params: one initial parameter set (warm start), or None.
      mesh: None, or a mesh with a "data" axis (then `model.layout` must be the chunk
        layout: the mesh splits x into chunks itself).
      chunk_size: rows per chunk with `mesh`.

    Returns:
      The model's result.

    Raises:
      ValueError: the fitted parameters are not finite (`model.failure`).
    """
    if mesh is None:
        if not is_bucketed(x, config):
            result = (fit_from_keys(model, config, x, keys, weights, opts) if params is None
                      else fit_from_params(model, config, x, params, weights, opts))
            return raise_if_not_finite(model, result)
        params0s = (batched(params) if params is not None
                    else initial_params(model, config, x, keys, weights, opts))
        xp, wp, cp = padded(x, weights, config)
        # the loop never reads config.init: warm and cold starts share its program
        return raise_if_not_finite(
            model, fit_from_starts(model, cp._replace(init=None), xp, params0s, wp, opts))
    if params is not None:
        params0s = batched(params)
    else:
        x0, w0 = job_rows(x, weights)
        params0s = initial_params(model, config, x0, keys, w0, opts)
    return raise_if_not_finite(
        model, _fit_sharded(model, config, x, weights, params0s, opts, mesh, chunk_size))


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf of `tree` is finite: one small program per tree
    structure and shapes (eagerly, each leaf's isfinite and all would be programs of their
    own)."""
    return finite_along(tree, 0)


def raise_if_not_finite(model: Model, result):
    """The guard after a fit.

    Args:
      model: the variant (`Model`): its `params` and `failure`.
      result: the fit's result.

    Returns:
      `result` itself.

    Raises:
      ValueError: its (concrete) fitted parameters are not finite (`model.failure`).
    """
    params = model.params(result)
    if _validate.is_concrete(*jax.tree_util.tree_leaves(result)) and not bool(
            all_finite(params)):
        raise ValueError(model.failure)
    return result


def lapack_scoped(fn):
    """Run `fn` with single-threaded LAPACK on CPU and wait for its result inside that scope.

    The scope is `_linalg.single_threaded_lapack`.

    Args:
      fn: the function to wrap.

    Returns:
      The wrapped function (`functools.wraps`), which blocks until its result is ready.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _linalg.single_threaded_lapack():
            return jax.block_until_ready(fn(*args, **kwargs))

    return wrapper
