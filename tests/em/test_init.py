"""jaxvi.em.init: k-means++ seeding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

from jaxvi import em


def test_kmeans_plusplus_init(x64, blobs):
    x = blobs(seed=8, k=3, spread=20.0)
    centres = em.kmeans_plusplus(jax.random.key(0), jnp.asarray(x), 3)
    # Centres are data points, one in each well-separated blob.
    assert all(np.any(np.all(np.asarray(x) == c, axis=1)) for c in np.asarray(centres))
    res = em.fit(x, 3, key=jax.random.key(0), max_iter=50)
    sk = SkGMM(3, random_state=0).fit(x)
    assert bool(res.converged)
    assert float(res.log_likelihood) == pytest.approx(sk.lower_bound_, rel=1e-4)
