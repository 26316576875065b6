"""Helpers shared by the tests of `jaxvi.em`, as fixtures (the tests run in importlib mode,
so they cannot import each other): `blobs` data, `init_params` (a GMM and the same parameters
for scikit-learn), `rel` (max relative difference)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em


def _blobs(seed=0, n_per=60, d=3, k=3, spread=4.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = spread * rng.normal(size=(k, d))
    x = np.concatenate([rng.normal(size=(n_per, d)) * (0.5 + i / k) + centres[i]
                        for i in range(k)])
    return rng.permutation(x) + offset


def _init_params(x, k, cov, seed=1):
    """Initial (GMM, scikit-learn precisions_init) pair from the same parameters."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    w = rng.dirichlet(np.full(k, 5.0))
    m = x[rng.choice(len(x), k, replace=False)] + 0.1
    if cov == "full":
        a = rng.normal(size=(k, d, d))
        c = a @ np.swapaxes(a, -1, -2) / d + np.eye(d)
        p = np.linalg.inv(c)
    elif cov == "tied":
        a = rng.normal(size=(d, d))
        c = a @ a.T / d + np.eye(d)
        p = np.linalg.inv(c)
    elif cov == "diag":
        c = rng.uniform(0.5, 2.0, size=(k, d))
        p = 1.0 / c
    else:
        c = rng.uniform(0.5, 2.0, size=(k,))
        p = 1.0 / c
    return em.GMM(jnp.asarray(w), jnp.asarray(m), jnp.asarray(c), cov), (w, m, p)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.fixture(scope="session")
def blobs():
    return _blobs


@pytest.fixture(scope="session")
def init_params():
    return _init_params


@pytest.fixture(scope="session")
def rel():
    return _rel
