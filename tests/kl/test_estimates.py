"""`jaxvi.kl.monte_carlo`: each closed form equals a large Monte Carlo estimate within a few
standard errors (distrax distributions, batched), and bad input raises naming the argument."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared_inputs import random_gaussian_params

from jaxvi import kl

D = 3


def _bcast(a, batch, k):
    return jnp.broadcast_to(a, (*batch, *a.shape[a.ndim - k:]))


def test_closed_forms_match_monte_carlo(x64):
    """Each closed form equals a large Monte Carlo estimate (within 5 standard errors)."""
    rng = np.random.default_rng(2)
    lp, sp, tp, _ = random_gaussian_params(rng, (2, 1))
    lq, sq, tq, _ = random_gaussian_params(rng, (1, 3))
    batch = (2, 3)
    keys = jax.random.split(jax.random.key(0), 3)
    n = 20_000

    @jax.jit
    def mc_fn(key, p, q):
        return kl.monte_carlo(key, p, q, n)

    def check(closed, p, q, key):
        mc = mc_fn(key, p, q)
        assert mc.estimate.shape == batch
        assert np.all(np.abs(np.asarray(closed) - mc.estimate) < 5 * mc.stderr + 1e-9)

    check(kl.normal_diag(lp, sp, lq, sq),
          distrax.MultivariateNormalDiag(*(_bcast(jnp.asarray(a), batch, 1) for a in (lp, sp))),
          distrax.MultivariateNormalDiag(*(_bcast(jnp.asarray(a), batch, 1) for a in (lq, sq))),
          keys[0])
    check(kl.mvn_tril(lp, tp, lq, tq),
          distrax.MultivariateNormalTri(_bcast(jnp.asarray(lp), batch, 1),
                                        _bcast(jnp.asarray(tp), batch, 2)),
          distrax.MultivariateNormalTri(_bcast(jnp.asarray(lq), batch, 1),
                                        _bcast(jnp.asarray(tq), batch, 2)),
          keys[1])
    logits_p, logits_q = rng.normal(size=(2, 1, 4)), rng.normal(size=(1, 3, 4))
    check(kl.categorical(logits_p, logits_q),
          distrax.Categorical(logits=_bcast(jnp.asarray(logits_p), batch, 1)),
          distrax.Categorical(logits=_bcast(jnp.asarray(logits_q), batch, 1)), keys[2])


def test_monte_carlo_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="num_samples"):
        kl.monte_carlo(jax.random.key(0), distrax.Normal(0.0, 1.0), distrax.Normal(0.0, 1.0), 1)
    with pytest.raises(ValueError, match="`q`"):
        kl.monte_carlo(jax.random.key(0), distrax.Normal(0.0, 1.0), object(), 10)
