"""The one on-device fit driver that EM (`jaxvi.em.fit`), missing-value EM
(`jaxvi.em.missing_fit`) and VB-EM (`jaxvi.em.variational_fit`) share, as scikit-learn's
`BaseMixture.fit_predict` carries one loop for several models.

A variant supplies a `Model` (how its data are laid out, its initial parameters from keys,
its restarts loop); the driver holds what they share: the options as arrays (`options`),
the start from keys or from a warm start, on one device or with the rows split over a mesh
(`run`), the coordinate-ascent loop (`ascent_loop`), the choice of the best restart
(`best_restart`) and the finite check after the fit (`raise_if_not_finite`).

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
    """One parameter set as a batch of one restart (axis 0)."""
    return jax.tree_util.tree_map(lambda a: a[None], params)


def options(dtype, *, tol, reg_covar, **more) -> dict:
    """The traced options every loop reads, as arrays of the data's dtype (tol, reg_covar),
    with the variant's further ones (`more`: a prior, the fixed-parameter mask)."""
    # NumPy scalars: the same arguments of the compiled loop as jnp's, without a conversion
    # program of their own
    dtype = np.dtype(dtype)
    return dict(tol=np.asarray(tol, dtype), reg_covar=np.asarray(reg_covar, dtype), **more)


def start_keys(key: jax.Array, init, inits: tuple[str, ...], n_init) -> jax.Array:
    """The keys (n_init,) of the restarts of an initialisation named `init` (one of `inits`)."""
    _validate.check_choice("init", init, inits)
    _validate.check_int("n_init", n_init, 1)
    return jax.random.split(key, int(n_init))


BUCKET_MAX_ROWS = 1 << 16
_MIN_BUCKET = 256
_MIN_HISTORY = 128


def bucket_rows(n: int) -> int:
    """The padded row count of a fit of n rows: the smallest of 256 and of 2^j, 1.5 * 2^j
    (384, 512, 768, 1024, ...) that is ≥ n (at most 50% padding)."""
    if n <= _MIN_BUCKET:
        return _MIN_BUCKET
    p = 1 << (n - 1).bit_length()
    return 3 * p // 4 if 3 * p // 4 >= n else p


def iteration_limits(max_iter: int) -> tuple[int, jax.Array]:
    """(the static length of a loop's history: max_iter rounded up to a power of two ≥ 128,
    or 0 for 0; max_iter as a traced int32 limit), so that fits differing only in max_iter
    share one compiled program (`ascent_loop`'s `limit`)."""
    length = 0 if max_iter == 0 else max(_MIN_HISTORY, 1 << (int(max_iter) - 1).bit_length())
    return length, np.asarray(max_iter, np.int32)


def ascent_loop(update: Callable, params0, max_iter: int, tol, dtype, limit=None):
    """Iterate `update` on device (`lax.while_loop`) from params0, a pytree of B restarts
    batched along axis 0, until every restart's objective changed by less than `tol` or
    `max_iter` steps ran (`limit` steps, when given: a traced int ≤ max_iter, which then
    only sizes the history). update(params) -> (new params, objective (B,) after the step).

    The restarts step together, each frozen once converged (what `vmap` of one loop would do);
    batching them by hand keeps any `lax.cond` inside `update` a real branch, which under
    `vmap` would run both sides.

    Returns (params, objective (B,), n_iter (B,) int32, converged (B,) bool,
    history (B, max_iter): the objective after each step, NaN after a restart stopped);
    for max_iter = 0, params0 with objective −∞.
    """
    b = jax.tree_util.tree_leaves(params0)[0].shape[0]
    history = jnp.full((b, max_iter), jnp.nan, dtype)
    state = (params0, jnp.full((b,), -jnp.inf, dtype), jnp.zeros((b,), jnp.int32),
             jnp.zeros((b,), bool), history, jnp.zeros((), jnp.int32))
    if max_iter == 0:
        return state[:5]

    def cond(state):
        _, _, _, done, _, step = state
        return (step < (max_iter if limit is None else limit)) & ~jnp.all(done)

    def body(state):
        params, obj, it, done, history, step = state
        new, new_obj = update(params)
        active = ~done

        def keep(n, o):
            return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

        params = jax.tree_util.tree_map(keep, new, params)
        history = history.at[:, step].set(jnp.where(active, new_obj, history[:, step]))
        done = done | (active & (jnp.abs(new_obj - obj) < tol))
        return params, keep(new_obj, obj), it + active, done, history, step + 1

    return jax.lax.while_loop(cond, body, state)[:5]


def finite_along(tree, n_batch: int) -> jax.Array:
    """Whether every leaf of `tree` is finite, per index of its n_batch leading axes."""
    return functools.reduce(
        jnp.logical_and,
        [jnp.all(jnp.isfinite(a), axis=tuple(range(n_batch, a.ndim)))
         for a in jax.tree_util.tree_leaves(tree)],
    )


def best_restart(result, params, objective):
    """The restart (index along axis 0 of every leaf of `result`) with the highest objective
    (B,) whose params are finite: a NaN fit never wins; ties go to the first, and objectives
    within round-off of the highest (a relative 1e-9, or 64 ulps in float32) tie: restarts
    that reach the same optimum with the components in another order differ only in their
    last bits, which depend on how the program sums (padded rows, a mesh's psum), and the
    choice must not."""
    ok = finite_along(params, 1) & ~jnp.isnan(objective)
    obj = jnp.where(ok, objective, -jnp.inf)
    top = jnp.max(obj)
    rtol = max(1e-9, 64 * float(jnp.finfo(obj.dtype).eps))
    floor = jnp.where(jnp.isfinite(top), top - rtol * jnp.maximum(jnp.abs(top), 1.0), top)
    best = jnp.argmax(ok & (obj >= floor))
    return jax.tree_util.tree_map(lambda a: a[best], result)


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
    """The initial parameters of each key of keys (B,), batched along axis 0, drawn from
    exactly the rows x: (N, D) with weights (N,) or None (unpadded: `run`), as a program of
    its own, shared by every fit with the same initialisation settings (only config's k,
    covariance_type, init and weight_type reach it) and shapes."""
    config = Config(k=config.k, covariance_type=config.covariance_type, init=config.init,
                    weight_type=config.weight_type)
    return _initial_params(model, config, x, keys, weights, opts)


def job_rows(x, weights):
    """The rows (and their weights) the initialisation of a fit over a mesh reads, the same
    on every process (`jaxvi.processes.init_rows`)."""
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
    """Whether a one-device fit of x: (N, D) runs its loop on bucketed rows (`padded`): a
    chunk layout of one chunk of N ≤ `BUCKET_MAX_ROWS` rows."""
    return config.n_chunks == 1 and config.rows == x.shape[0] <= BUCKET_MAX_ROWS


def padded(x, weights, config: Config):
    """(x, weights, config) of a single-chunk fit of N ≤ `BUCKET_MAX_ROWS` rows padded to
    `bucket_rows(N)` rows: zero rows of weight 0 after x: (N, D), weights (N,) (1 when None);
    unchanged otherwise (several chunks, or no chunk layout). Concrete arrays are padded on
    the host (no compilation per N)."""
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
    """A checked variant's fit: from `keys` (B,) (restarts) or from one `params` (a warm
    start), on one device or with the rows of x split over `mesh` (then `model.layout` must
    be the chunk layout: the mesh splits x into chunks itself), followed by the finite
    check. Returns the model's result. On one device, the loop of a chunk-layout fit of one
    chunk runs on rows padded to a bucketed row count (`padded`), from initial parameters
    drawn from the unpadded rows (`initial_params`: the same as the mesh fit's)."""
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
    """The guard after a fit: `result`, or a ValueError (`model.failure`) when its
    (concrete) fitted parameters are not finite."""
    params = model.params(result)
    if _validate.is_concrete(*jax.tree_util.tree_leaves(result)) and not bool(
            all_finite(params)):
        raise ValueError(model.failure)
    return result


def lapack_scoped(fn):
    """Run `fn` with single-threaded LAPACK on CPU (`_linalg.single_threaded_lapack`) and
    wait for its result inside that scope."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _linalg.single_threaded_lapack():
            return jax.block_until_ready(fn(*args, **kwargs))

    return wrapper
