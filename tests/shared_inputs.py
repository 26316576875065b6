"""Shared test inputs: random Gaussian parameters and mixtures, and a fixed 2-D mixture target
with its float64 reference moments, and the Gaussian KL in float64 NumPy. (On `sys.path`
through pytest's `pythonpath` setting.)"""

import jax.numpy as jnp
import numpy as np

from jaxvi.mixture import Mixture

D = 3


def random_tril(rng, shape, d=D):
    """Random lower-triangular factors with a positive diagonal. -> (*shape, d, d)."""
    off = np.tril(rng.normal(size=(*shape, d, d)) * 0.4, -1)
    diag = np.exp(0.3 * rng.normal(size=(*shape, d)))
    return off + diag[..., None, :] * np.eye(d)


def random_gaussian_params(rng, shape, d=D):
    """loc, scale_diag, scale_tril, cov for batch `shape`."""
    tril = random_tril(rng, shape, d)
    return (rng.normal(size=(*shape, d)), np.exp(0.4 * rng.normal(size=(*shape, d))), tril,
            tril @ np.swapaxes(tril, -1, -2))


def random_mixture(rng, k, d=2, batch=(), spread=2.0, shift=0.0):
    off = np.tril(rng.normal(size=(*batch, k, d, d)) * 0.3, -1)
    diag = np.exp(0.3 * rng.normal(size=(*batch, k, d)))
    return Mixture(
        jnp.asarray(rng.normal(size=(*batch, k))),
        jnp.asarray(spread * rng.normal(size=(*batch, k, d)) + shift),
        jnp.asarray(off + diag[..., None, :] * np.eye(d)),
    )


# A 2-D mixture with unequal weights and well separated modes.
W = np.array([0.5, 0.3, 0.2])
LOC = np.array([[-3.0, -2.0], [3.0, 0.0], [-1.0, 3.5]])
COV = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.8]], [[0.6, -0.2], [-0.2, 0.4]]])


def mixture_moments_f64(w, loc, cov):
    """Reference mixture moments: E[x] and E[x xᵀ] − E[x]E[x]ᵀ in float64 numpy."""
    mean = np.sum(w[:, None] * loc, 0)
    second = np.sum(w[:, None, None] * (cov + loc[:, :, None] * loc[:, None, :]), 0)
    return mean, second - np.outer(mean, mean)


def mvn_kl_np(m_p, c_p, m_q, c_q):
    """KL(N(m_p, c_p) ‖ N(m_q, c_q)) = ½(tr(Σq⁻¹Σp) + (μq − μp)ᵀΣq⁻¹(μq − μp) − D
    + log|Σq|/|Σp|), straight from float64 NumPy (the reference). m: (D,), c: (D, D)."""
    m_p, c_p, m_q, c_q = (np.asarray(a, np.float64) for a in (m_p, c_p, m_q, c_q))
    d = m_p.shape[-1]
    inv = np.linalg.inv(c_q)
    diff = m_q - m_p
    return 0.5 * (np.trace(inv @ c_p) + diff @ inv @ diff - d
                  + np.linalg.slogdet(c_q)[1] - np.linalg.slogdet(c_p)[1])


# A two-component 3-D mixture with correlated covariances, 300 points of it, and the same
# points with 30 % of their entries removed at random (missing values: tests/em/test_missing*,
# tests/test_sklearn_missing.py).
MISSING_W = np.array([0.4, 0.6])
MISSING_LOC = np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]])
MISSING_COV = np.array([[[1.0, 0.8, 0.3], [0.8, 1.5, 0.5], [0.3, 0.5, 0.8]],
                        [[1.2, -0.6, 0.0], [-0.6, 1.0, 0.4], [0.0, 0.4, 0.7]]])


def missing_data(n=300, frac=0.3, seed=0):
    """(complete x (n, 3), x with `frac` of its entries NaN at random, no row all NaN, the
    initial GMM's (weights, means, covariances) both fits start from) in float64."""
    rng = np.random.default_rng(seed)
    z = rng.choice(2, size=n, p=MISSING_W)
    chol = np.linalg.cholesky(MISSING_COV)
    x = MISSING_LOC[z] + np.einsum("nij,nj->ni", chol[z], rng.normal(size=(n, 3)))
    holes = rng.random(x.shape) < frac
    holes[holes.all(axis=1), 0] = False
    init = (np.array([0.5, 0.5]), MISSING_LOC + rng.normal(size=(2, 3)),
            np.stack([np.eye(3)] * 2))
    return x, np.where(holes, np.nan, x), init


def three_blobs(n_per: int, seed: int = 0) -> np.ndarray:
    """3 Gaussian blobs in 3-D of `n_per` points each (scales 0.6, 1.0, 1.4), shuffled.
    -> (3 n_per, 3)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 1.0, -2.0], [-3.0, 4.0, 2.0]])
    x = np.concatenate([rng.normal(size=(n_per, 3)) * (0.6 + 0.4 * i) + c
                        for i, c in enumerate(centres)])
    return rng.permutation(x)


def four_blobs(seed: int = 0) -> np.ndarray:
    """4 well-separated unit blobs in 3-D of 700, 900, 1000 and 1150 points: with K = 12 and
    a small weight concentration, VB-EM prunes the components the data do not need until
    their expected-value weights underflow to 0. -> (3750, 3)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    return np.concatenate([rng.normal(size=(n, 3)) + c
                           for n, c in zip((700, 900, 1000, 1150), centres, strict=True)])
