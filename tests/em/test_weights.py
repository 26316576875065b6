"""Sample weights in jaxvi.em: the weighted E-step statistics against NumPy, and integer
weights (zeros included) against the same data with rows repeated (or dropped) for `fit`,
`fit_minibatch` and `fit_variational`; bad weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from jaxvi import em
from jaxvi.em import variational

# Weights 0..3 whose sum equals the number of rows, so that the weighted data and the data
# with rows repeated have the same shape (one compiled fit serves both).
_PATTERN = np.array([0, 2, 1, 1, 3, 0, 0, 1])


def _weights(n, seed):
    return np.random.default_rng(seed).permutation(np.tile(_PATTERN, n // len(_PATTERN)))


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def data():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        centres = np.array([[0.0, 0.0], [4.0, 1.0], [-2.0, 4.0]])
        x = np.concatenate([rng.normal(size=(24, 2)) * (0.5 + 0.3 * i) + c
                            for i, c in enumerate(centres)])
        x = rng.permutation(x)
        w = _weights(len(x), 0).astype(float)
        return x, w, np.repeat(x, w.astype(int), axis=0)


def test_weighted_e_step_stats_match_numpy(x64, data, init_params):
    x, w, _ = data
    gmm, _ = init_params(x, 3, "full")
    shift = jnp.asarray([0.3, -0.2])
    step = jax.jit(em.e_step_stats, static_argnames="chunk_size")
    stats, sum_ll = step(x, gmm, shift, sample_weight=w, chunk_size=16)  # padded, 5 chunks
    joint = np.stack([np.log(gmm.weights[k]) + multivariate_normal(
        np.asarray(gmm.means[k]), np.asarray(gmm.covariances[k])).logpdf(x) for k in range(3)],
        axis=1)
    lse = np.logaddexp.reduce(joint, axis=1)
    r = np.exp(joint - lse[:, None]) * w[:, None]
    xc = x - np.asarray(shift)
    want = (w.sum(), r.sum(0), r.T @ xc, np.einsum("nk,ni,nj->kij", r, xc, xc))
    for got, ref in zip(stats, want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert float(sum_ll) == pytest.approx(float(w @ lse), rel=1e-12)


def test_integer_weights_equal_repeated_rows_in_fit(x64, data, init_params):
    x, w, x_rep = data
    gmm0, _ = init_params(x, 3, "full")
    kw = dict(key=jax.random.key(0), init=gmm0, max_iter=6, tol=0.0)
    weighted = em.fit(x, 3, sample_weight=w, **kw)
    repeated = em.fit(x_rep, 3, sample_weight=np.ones(len(x_rep)), **kw)
    assert _max_diff(weighted.gmm, repeated.gmm) < 1e-10
    np.testing.assert_allclose(weighted.history, repeated.history, rtol=0, atol=1e-10)
    # The weighted mean log-likelihood: that of the repeated rows.
    assert float(repeated.history[0]) == pytest.approx(
        float(jnp.mean(em.log_prob(x_rep, gmm0))), rel=1e-12)
    assert not np.allclose(weighted.history,
                           em.fit(x, 3, sample_weight=np.ones(len(x)), **kw).history, atol=1e-3)


def test_integer_weights_equal_repeated_rows_in_fit_minibatch(x64, data, init_params):
    x, _, _ = data
    gmm0, _ = init_params(x, 3, "full")
    batches = np.split(x[:64], 4)
    ws = [_weights(len(b), s).astype(float) for s, b in enumerate(batches)]
    reps = [np.repeat(b, wb.astype(int), axis=0) for b, wb in zip(batches, ws, strict=True)]
    kw = dict(key=jax.random.key(0), init=gmm0)
    weighted = em.fit_minibatch(batches, 3, sample_weight=ws, **kw)
    repeated = em.fit_minibatch(reps, 3, sample_weight=[np.ones(len(r)) for r in reps], **kw)
    assert _max_diff(weighted.gmm, repeated.gmm) < 1e-10
    np.testing.assert_allclose(weighted.history, repeated.history, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="sample_weight"):
        em.fit_minibatch(batches, 3, sample_weight=ws[:2], **kw)


def test_integer_weights_equal_repeated_rows_in_fit_variational(x64, data):
    x, w, x_rep = data
    centres = x_rep[[0, 20, 40]]
    resp = jax.nn.one_hot(np.argmin(((x_rep[:, None] - centres) ** 2).sum(-1), 1), 3)
    prior = variational.checked_prior(jnp.asarray(x_rep), "full", 3)
    post0 = variational.initialize_from_resp(
        jnp.asarray(x_rep), resp, prior, covariance_type="full",
        weight_type="dirichlet_process", reg_covar=1e-6)
    kw = dict(key=jax.random.key(0), init=post0, max_iter=5, tol=0.0)
    weighted = em.fit_variational(x, 3, sample_weight=w, **kw)
    repeated = em.fit_variational(x_rep, 3, sample_weight=np.ones(len(x_rep)), **kw)
    assert _max_diff(weighted.posterior, repeated.posterior) < 1e-10
    np.testing.assert_allclose(weighted.history, repeated.history, rtol=1e-12)


def test_bad_sample_weight_raises(data):
    x, w, _ = data
    bad = {"negative": -w, "non-finite": np.where(w > 2, np.inf, w),
           "wrong length": w[:-1], "all zero": 0 * w, "2-d": w[:, None],
           "too few positive": np.eye(len(w))[0]}
    for sw in bad.values():
        for fit in (em.fit, em.fit_variational):
            with pytest.raises(ValueError, match="sample_weight"):
                fit(x, 3, key=jax.random.key(0), sample_weight=sw)
        with pytest.raises(ValueError, match="sample_weight"):
            em.fit_minibatch([x], 3, key=jax.random.key(0), sample_weight=[sw])
    with pytest.raises(ValueError, match="sample_weight` must sum to more than 1"):
        em.fit_variational(x, 3, key=jax.random.key(0), sample_weight=w * 0.5 / w.sum())
