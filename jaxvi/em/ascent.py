"""The on-device coordinate-ascent loop that every variant of the fit driver
(`jaxvi.em.driver`, which re-exports these names) runs, and the choice of the best restart:
`ascent_loop` iterates a variant's update on B restarts batched along axis 0, `best_restart`
keeps the one with the highest finite objective, and `finite_along` is the finite check they
share."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def ascent_loop(update: Callable, params0, max_iter: int, tol, dtype, limit=None):
    """Iterate `update` on device (`lax.while_loop`) from B restarts batched along axis 0.

    It stops once every restart's objective changed by less than `tol`, or after max_iter
    steps. The restarts step together, each frozen once converged (what `vmap` of one loop
    would do);
    batching them by hand keeps any `lax.cond` inside `update` a real branch, which under
    `vmap` would run both sides.

    Args:
      update: update(params) -> (new params, objective (B,) after the step).
      params0: a pytree of B restarts batched along axis 0.
      max_iter: at most this many steps (static; sizes the history).
      tol: convergence threshold on the change of the objective.
      dtype: the objective's dtype.
      limit: None, or a traced int ≤ max_iter: the steps to run (max_iter then only sizes
        the history).

    Returns:
      (params, objective, n_iter, converged, history): params batched as params0, objective
      (B,), n_iter (B,) int32, converged (B,) bool, history (B, max_iter) the objective after
      each step (NaN after a restart stopped); for max_iter = 0, params0 with objective −∞.
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
    """Whether every leaf of `tree` is finite, per index of its leading axes.

    Args:
      tree: a pytree of arrays sharing n_batch leading axes.
      n_batch: the number of leading axes kept.

    Returns:
      A bool array of the n_batch leading axes' shape (() for 0).
    """
    return functools.reduce(
        jnp.logical_and,
        [jnp.all(jnp.isfinite(a), axis=tuple(range(n_batch, a.ndim)))
         for a in jax.tree_util.tree_leaves(tree)],
    )


def best_restart(result, params, objective):
    """The restart with the highest objective whose params are finite.

    A NaN fit never wins; ties go to the first, and objectives within round-off of the
    highest (a relative 1e-9, or 64 ulps in float32) tie: restarts that reach the same optimum
    with the components in another order differ only in their last bits, which depend on how
    the program sums (padded rows, a mesh's psum), and the choice must not.

    Args:
      result: a pytree batched along axis 0 (B restarts).
      params: the restarts' fitted parameters (B, ...), checked for finiteness.
      objective: (B,) the restarts' objectives.

    Returns:
      `result` at the best index along axis 0 of every leaf.
    """
    ok = finite_along(params, 1) & ~jnp.isnan(objective)
    obj = jnp.where(ok, objective, -jnp.inf)
    top = jnp.max(obj)
    rtol = max(1e-9, 64 * float(jnp.finfo(obj.dtype).eps))
    floor = jnp.where(jnp.isfinite(top), top - rtol * jnp.maximum(jnp.abs(top), 1.0), top)
    best = jnp.argmax(ok & (obj >= floor))
    return jax.tree_util.tree_map(lambda a: a[best], result)
