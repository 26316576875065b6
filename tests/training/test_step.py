"""`jaxvi.training.step`: the finiteness check the loop's guard runs on device."""

import jax
import jax.numpy as jnp

from jaxvi.training.step import all_finite


def test_all_finite():
    ok = {"a": jnp.ones(3), "n": jnp.arange(3), "b": (jnp.zeros((2, 2)),)}
    assert bool(jax.jit(all_finite)(ok))
    assert not bool(all_finite({**ok, "c": jnp.array([1.0, jnp.inf])}))
    assert not bool(all_finite({**ok, "c": jnp.array(jnp.nan)}))
    assert bool(all_finite({}))
