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


def _inertia(x, centres, w=None):
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
    return float(d2.sum() if w is None else (w * d2).sum())


def test_kmeans_init_is_a_converged_kmeans(x64):
    """init="kmeans" (scikit-learn's "kmeans"): Lloyd to convergence from the best of its
    greedy k-means++ seedings; it reaches scikit-learn's KMeans inertia (best of 10) on iris,
    one more Lloyd step does not move it, and zero-weight rows change nothing."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_iris

    from jaxvi.em import init as em_init

    x = load_iris().data
    sk = KMeans(3, n_init=10, random_state=0).fit(x)
    for seed in range(3):
        c = np.asarray(em_init.kmeans(jax.random.key(seed), jnp.asarray(x), 3))
        assert _inertia(x, c) == pytest.approx(sk.inertia_, rel=1e-6)
        step = np.asarray(em_init._lloyd_step(jnp.asarray(x), jnp.asarray(c),
                                              jnp.ones(len(x))))
        assert np.abs(step - c).max() < 1e-6
    padded = np.concatenate([x, np.full((50, 4), 100.0)])
    w = np.r_[np.ones(len(x)), np.zeros(50)]
    c = np.asarray(em_init.kmeans(jax.random.key(0), jnp.asarray(padded), 3, jnp.asarray(w)))
    assert _inertia(x, c) == pytest.approx(sk.inertia_, rel=1e-6)
    gmm = em.initialize(jax.random.key(0), x, 3, init="kmeans")
    assert np.allclose(np.sort(np.asarray(gmm.weights)), np.sort(np.bincount(sk.labels_) / 150))
