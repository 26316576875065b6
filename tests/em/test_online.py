"""jaxvi.em.online: stepwise EM reaches the full-batch likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em


def test_fit_minibatch_reaches_full_batch_likelihood(x64, blobs):
    x = blobs(seed=12, n_per=400, d=2, k=3, spread=5.0)
    # From the same rough start (k-means++ on 60 points, a few EM steps), as a user would.
    start = em.fit(x[:60], 3, key=jax.random.key(1), max_iter=3).gmm
    full = em.fit(x, 3, key=jax.random.key(0), init=start, max_iter=200, tol=1e-9)
    rng = np.random.default_rng(0)
    batches = (x[rng.choice(len(x), 100, replace=False)] for _ in range(80))
    res = em.fit_minibatch(batches, 3, key=jax.random.key(0), kappa=0.6, init=start)
    assert int(res.n_iter) == 80 and res.history.shape == (80,)
    ll = float(jnp.mean(em.log_prob(x, res.gmm)))
    assert ll > float(full.log_likelihood) - 0.01
    assert ll > float(jnp.mean(em.log_prob(x, start))) + 0.05  # it did learn
    with pytest.raises(ValueError, match="`kappa`"):
        em.fit_minibatch([x], 3, key=jax.random.key(0), kappa=0.3)
