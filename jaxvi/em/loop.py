"""The on-device coordinate-ascent loop that EM (`fit`) and VB-EM (`fit_variational`) share:
restarts batched along axis 0, each frozen once converged, and the choice of the best one."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def ascent_loop(update: Callable, params0, max_iter: int, tol, dtype):
    """Iterate `update` on device (`lax.while_loop`) from params0, a pytree of B restarts
    batched along axis 0, until every restart's objective changed by less than `tol` or
    `max_iter` steps ran. update(params) -> (new params, objective (B,) after the step).

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
        return (step < max_iter) & ~jnp.all(done)

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
    (B,) whose params are finite: a NaN fit never wins; ties go to the first."""
    ok = finite_along(params, 1) & ~jnp.isnan(objective)
    best = jnp.argmax(jnp.where(ok, objective, -jnp.inf))
    return jax.tree_util.tree_map(lambda a: a[best], result)
