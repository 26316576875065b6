"""Monte Carlo KL(p ‖ q) = E_p[log p(x) − log q(x)] for anything with `sample` and `log_prob`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["MonteCarloEstimate", "monte_carlo"]


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate of KL(p ‖ q) and its standard error, each of p's batch shape."""

    estimate: jax.Array
    stderr: jax.Array


def monte_carlo(key: jax.Array, p, q, num_samples: int) -> MonteCarloEstimate:
    """Monte Carlo KL(p ‖ q) = E_p[log p(x) − log q(x)] with its standard error.

    The standard error is the sample standard deviation of the log-ratio over √S.

    Args:
      key: PRNG key of the draws from p.
      p: an object with `sample(seed=key, sample_shape=(S,))` and `log_prob(x)` (a distrax or
        TFP distribution, a `jaxvi.mixture.Mixture`), batch shape (...).
      q: the same kind of object, with `log_prob` on p's samples.
      num_samples: S ≥ 2 draws.

    Returns:
      `MonteCarloEstimate` (estimate, stderr), each (...).
    """
    if int(num_samples) < 2:
        raise ValueError(f"`num_samples` must be at least 2; got {num_samples!r}.")
    for name, dist in (("p", p), ("q", q)):
        if not (hasattr(dist, "sample") and hasattr(dist, "log_prob")):
            raise ValueError(f"`{name}` must have `sample` and `log_prob` methods; "
                             f"got {type(dist).__name__}.")
    x = p.sample(seed=key, sample_shape=(int(num_samples),))
    log_ratio = p.log_prob(x) - q.log_prob(x)
    estimate = jnp.mean(log_ratio, axis=0)
    stderr = jnp.std(log_ratio, axis=0, ddof=1) / jnp.sqrt(float(num_samples))
    return MonteCarloEstimate(estimate, stderr)
