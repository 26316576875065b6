"""The closed-form KLs and `monte_carlo` pinned by VALUE against NumPy/SciPy derivations:
every layout (elementwise, broadcast batch, the all-pairs fast path), float64 at tight and
float32 at loose tolerances; the Monte Carlo standard error against its definition on the same
draws and against the empirical spread of the estimate over repeated keys."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from shared_inputs import mvn_kl_np

from jaxvi import kl

RNG = np.random.default_rng(18)


def _tril(d, rng=RNG):
    a = np.tril(rng.normal(size=(d, d)), -1) * 0.6
    return a + np.diag(rng.uniform(0.5, 1.8, size=d))


def _ref_diag(m_p, s_p, m_q, s_q):
    return mvn_kl_np(m_p, np.diag(s_p**2), m_q, np.diag(s_q**2))


@pytest.mark.parametrize("layout", ["elementwise", "pairs"])
def test_normal_diag_equals_numpy(x64, layout):
    n, m, d = 3, 4, 5
    mp, mq = RNG.normal(size=(n, d)), RNG.normal(size=(m, d))
    sp, sq = RNG.uniform(0.3, 2.0, (n, d)), RNG.uniform(0.3, 2.0, (m, d))
    want = np.array([[_ref_diag(mp[i], sp[i], mq[j], sq[j]) for j in range(m)]
                     for i in range(n)])
    if layout == "pairs":  # p (N, 1, D) against q (1, M, D): the fused-matmul path
        got = kl.normal_diag(mp[:, None], sp[:, None], mq[None], sq[None])
    else:  # broadcast to full (N, M, D) arrays: the elementwise path
        b = (n, m, d)
        got = kl.normal_diag(*(np.broadcast_to(a, b) for a in
                               (mp[:, None], sp[:, None], mq[None], sq[None])))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    got32 = kl.normal_diag(*(np.float32(a) for a in (mp[:, None], sp[:, None], mq[None],
                                                     sq[None])))
    np.testing.assert_allclose(got32, want, rtol=2e-4, atol=1e-4)


@pytest.mark.parametrize("fn", ["mvn", "mvn_tril"])
@pytest.mark.parametrize("layout", ["elementwise", "pairs"])
def test_mvn_equals_numpy(x64, fn, layout):
    n, m, d = 3, 2, 4
    mp, mq = RNG.normal(size=(n, d)), RNG.normal(size=(m, d))
    lp = np.stack([_tril(d) for _ in range(n)])
    lq = np.stack([_tril(d) for _ in range(m)])
    cp, cq = lp @ np.swapaxes(lp, -1, -2), lq @ np.swapaxes(lq, -1, -2)
    want = np.array([[mvn_kl_np(mp[i], cp[i], mq[j], cq[j]) for j in range(m)]
                     for i in range(n)])
    sp, sq = (cp, cq) if fn == "mvn" else (lp, lq)
    f = getattr(kl, fn)
    if layout == "pairs":
        args = (mp[:, None], sp[:, None], mq[None], sq[None])
    else:
        args = (np.broadcast_to(mp[:, None], (n, m, d)),
                np.broadcast_to(sp[:, None], (n, m, d, d)),
                np.broadcast_to(mq[None], (n, m, d)), np.broadcast_to(sq[None], (n, m, d, d)))
    np.testing.assert_allclose(f(*args), want, rtol=1e-10)
    np.testing.assert_allclose(f(*(np.float32(a) for a in args)), want, rtol=1e-3, atol=1e-3)


def test_mvn_equals_distrax(x64):
    d = 3
    lp, lq = _tril(d), _tril(d)
    mp, mq = RNG.normal(size=d), RNG.normal(size=d)
    p = distrax.MultivariateNormalTri(jnp.asarray(mp), jnp.asarray(lp))
    q = distrax.MultivariateNormalTri(jnp.asarray(mq), jnp.asarray(lq))
    np.testing.assert_allclose(kl.mvn_tril(mp, lp, mq, lq), p.kl_divergence(q), rtol=1e-10)


def test_categorical_equals_numpy_batched(x64):
    """Unnormalised logits with a batch axis longer than the category axis (B=5, K=3)."""
    lp, lq = RNG.normal(size=(5, 3)) * 2 + 4.0, RNG.normal(size=(5, 3)) * 2 - 3.0
    p = np.exp(lp) / np.exp(lp).sum(-1, keepdims=True)
    q = np.exp(lq) / np.exp(lq).sum(-1, keepdims=True)
    want = np.sum(p * np.log(p / q), axis=-1)
    np.testing.assert_allclose(kl.categorical(lp, lq), want, rtol=1e-12)
    np.testing.assert_allclose(kl.categorical(np.float32(lp), np.float32(lq)), want,
                               rtol=1e-4, atol=1e-6)


def test_categorical_zero_probability_category(x64):
    lp = np.array([0.0, -np.inf, 1.0])
    lq = np.array([0.5, 0.2, -1.0])
    p = np.exp(lp) / np.exp(lp).sum()
    q = np.exp(lq) / np.exp(lq).sum()
    want = sum(pi * np.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)
    np.testing.assert_allclose(kl.categorical(lp, lq), want, rtol=1e-12)


def _normals():
    p = distrax.Normal(jnp.array([0.3, -1.0]), jnp.array([1.2, 0.7]))
    q = distrax.Normal(jnp.array([-0.2, 0.5]), jnp.array([0.8, 1.5]))
    return p, q


@pytest.mark.parametrize("num_samples", [2, 7, 400])
def test_monte_carlo_equals_its_definition_on_the_same_draws(x64, num_samples):
    p, q = _normals()
    key = jax.random.key(5)
    est = kl.monte_carlo(key, p, q, num_samples)
    x = np.asarray(p.sample(seed=key, sample_shape=(num_samples,)))
    r = (stats.norm.logpdf(x, np.asarray(p.loc), np.asarray(p.scale))
         - stats.norm.logpdf(x, np.asarray(q.loc), np.asarray(q.scale)))
    np.testing.assert_allclose(est.estimate, r.mean(0), rtol=1e-10)
    np.testing.assert_allclose(est.stderr, r.std(0, ddof=1) / np.sqrt(num_samples), rtol=1e-10)


def test_monte_carlo_stderr_matches_spread_over_keys(x64):
    """Over R independent keys, the estimates' standard deviation is the standard error (to
    within the sampling error of a standard deviation of R values, ~1/√(2R))."""
    p, q = _normals()
    s, r = 64, 400
    keys = jax.random.split(jax.random.key(0), r)
    ests = jax.vmap(lambda k: kl.monte_carlo(k, p, q, s))(keys)
    spread = np.std(np.asarray(ests.estimate), axis=0, ddof=1)
    mean_se = np.mean(np.asarray(ests.stderr), axis=0)
    tol = 4.0 / np.sqrt(2 * r)  # relative sampling error of a standard deviation
    np.testing.assert_allclose(mean_se, spread, rtol=tol)
    # and the estimate is unbiased: the mean over keys is the closed form within its error
    true = kl.normal_diag(p.loc[:, None], p.scale[:, None], q.loc[:, None], q.scale[:, None])
    assert np.all(np.abs(np.mean(ests.estimate, 0) - true) < 4 * spread / np.sqrt(r))
