"""`jaxvi.objectives`' losses pinned by VALUE: each estimator against its definition computed
with SciPy on the same draws, the reverse KL against the closed-form Gaussian KL and, for the
mixture family's stratified weighted draws, against an independent NumPy Monte Carlo
reference (asymmetric weights, so a weight paired with the wrong component shows); the full-
covariance family's sampler by its covariance; `jaxvi.mixture.moments` by the law of total
covariance."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from scipy.special import logsumexp, softmax
from shared_inputs import mvn_kl_np

from jaxvi import vi as O
from jaxvi.mixture import Mixture, moments

D = 2
L_Q = np.array([[1.0, 0.0], [1.5, 0.5]])  # L Lᵀ and Lᵀ L differ a lot
LOC_Q = np.array([0.5, -1.0])
P_LOC = np.array([[0.0, 1.0]])
P_COV = np.array([[[2.0, 0.6], [0.6, 1.0]]])


def _full_params():
    raw = np.tril(L_Q, -1) + np.diag(np.log(np.expm1(np.diag(L_Q))))
    return O.GaussianParams(jnp.asarray(LOC_Q), jnp.asarray(raw))


def _target():
    return Mixture.from_covariance(jnp.zeros(1), jnp.asarray(P_LOC), jnp.asarray(P_COV))


def _log_q(x):
    return stats.multivariate_normal(LOC_Q, L_Q @ L_Q.T).logpdf(x)


def _log_p(x):
    return stats.multivariate_normal(P_LOC[0], P_COV[0]).logpdf(x)


def test_reverse_kl_equals_definition_and_closed_form(x64):
    fam, params, n = O.FullCovGaussian(D), _full_params(), 4000
    key = jax.random.key(0)
    loss = O.reverse_kl_loss(params, _target(), family=fam, key=key, num_samples=n)
    x = np.asarray(fam.sample(params, key=key, n=n))
    r = _log_q(x) - _log_p(x)
    np.testing.assert_allclose(loss, r.mean(), rtol=1e-9)
    exact = mvn_kl_np(LOC_Q, L_Q @ L_Q.T, P_LOC[0], P_COV[0])
    assert abs(float(loss) - exact) < 5 * r.std(ddof=1) / np.sqrt(n)


def test_full_family_samples_have_its_covariance(x64):
    fam, params, n = O.FullCovGaussian(D), _full_params(), 20_000
    x = np.asarray(fam.sample(params, key=jax.random.key(1), n=n))
    c = L_Q @ L_Q.T
    np.testing.assert_array_less(np.abs(x.mean(0) - LOC_Q), 5 * np.sqrt(np.diag(c) / n))
    se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x, rowvar=False) - c), 5 * se)
    np.testing.assert_allclose(fam.moments(params)[1], c, rtol=1e-12)


def test_forward_kl_target_samples_and_snis_equal_their_definitions(x64):
    fam, params, n = O.FullCovGaussian(D), _full_params(), 500
    key = jax.random.key(2)
    target = _target()
    loss = O.forward_kl_loss(params, target, family=fam, key=key, num_samples=n,
                             estimator="target-samples")
    x = np.asarray(target.sample(seed=key, sample_shape=(n,)))
    np.testing.assert_allclose(loss, np.mean(_log_p(x) - _log_q(x)), rtol=1e-9)
    snis = O.forward_kl_loss(params, target, family=fam, key=key, num_samples=n,
                             estimator="snis")
    x = np.asarray(fam.sample(params, key=key, n=n))  # SNIS from q itself, held fixed
    lp, lq = _log_p(x), _log_q(x)
    log_w = lp - lq
    wbar = softmax(log_w)
    log_z = logsumexp(log_w) - np.log(n)
    np.testing.assert_allclose(snis, np.sum(wbar * (lp - log_z - lq)), rtol=1e-9)


def test_mixture_family_reverse_kl_equals_numpy_monte_carlo(x64):
    """q = 0.8 N(m0, ·) + 0.2 N(m1, ·), far apart; target N(0, 4I). The reference draws its own
    samples with NumPy (100k) and evaluates log q and log p with SciPy."""
    fam = O.GaussianMixtureFamily(D, 2)
    w = np.array([0.8, 0.2])
    loc = np.array([[8.0, 0.0], [-3.0, 2.0]])
    params = fam.init(loc=jnp.asarray(loc), scale=0.7)._replace(logits=jnp.asarray(np.log(w)))
    target = Mixture.from_covariance(jnp.zeros(1), jnp.zeros((1, D)), 4.0 * jnp.eye(D)[None])
    loss = O.reverse_kl_loss(params, target, family=fam, key=jax.random.key(3),
                             num_samples=4000)
    rng = np.random.default_rng(0)
    m = 100_000
    comp = rng.choice(2, size=m, p=w)
    x = loc[comp] + 0.7 * rng.normal(size=(m, D))
    log_q = logsumexp(np.stack([stats.multivariate_normal(loc[k], 0.49 * np.eye(D)).logpdf(x)
                                for k in range(2)], -1) + np.log(w), axis=-1)
    r = log_q - stats.multivariate_normal(np.zeros(D), 4.0 * np.eye(D)).logpdf(x)
    ref, se_ref = r.mean(), r.std() / np.sqrt(m)
    # the stratified estimate's error: per-component spread over 4000 draws each
    se_loss = np.sqrt(sum((w[k] ** 2) * r[comp == k].var() / 4000 for k in range(2)))
    assert abs(float(loss) - ref) < 5 * (se_ref + se_loss)


def test_mixture_moments_and_snis_surrogate_equal_numpy(x64):
    rng = np.random.default_rng(5)
    w = softmax(rng.normal(size=3))
    loc = rng.normal(size=(3, D)) * 2
    a = rng.normal(size=(3, D, D))
    cov = a @ np.swapaxes(a, -1, -2) + np.eye(D)
    mean = w @ loc
    want = sum(wk * (ck + np.outer(mk - mean, mk - mean)) for wk, mk, ck in
               zip(w, loc, cov, strict=True))
    got_mean, got_cov = moments(jnp.asarray(w), jnp.asarray(loc), jnp.asarray(cov))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(got_cov, want, rtol=1e-11)
    log_q, log_w = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))  # batched (B, S)
    np.testing.assert_allclose(O.snis_forward_kl_surrogate(log_q, log_w),
                               -np.sum(softmax(log_w, -1) * log_q, -1), rtol=1e-12)
