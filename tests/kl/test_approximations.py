"""The unscented-transform approximation and the stratified Monte Carlo estimate of KL between
Gaussian mixtures: exact where they must be (K = J = 1 closed form), against an independent
NumPy/SciPy implementation, 1-D quadrature of the true KL, a 100k-draw ancestral Monte Carlo
reference within 4 standard errors, and a calibration check of the standard error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp, softmax

from jaxvi import kl
from jaxvi.kl import approximations
from jaxvi.mixture import Mixture


def _tril(d, rng, off=0.5):
    return np.tril(rng.normal(size=(d, d)), -1) * off + np.diag(rng.uniform(0.5, 1.6, size=d))


def _mix(k, d, rng, spread=1.5):
    return (rng.normal(size=k), rng.normal(size=(k, d)) * spread,
            np.stack([_tril(d, rng) for _ in range(k)]))


def _logpdf_np(m, x):
    w, loc, tril = softmax(m[0]), m[1], m[2]
    comps = [np.log(w[k]) + stats.multivariate_normal(loc[k], tril[k] @ tril[k].T).logpdf(x)
             for k in range(len(w))]
    return logsumexp(np.stack(comps), axis=0)


def ref_unscented(p, q):
    """Goldberger et al.'s formula, written out with loops: sigma points μ_a ± √(D) l_i for
    the columns l_i of the Cholesky factor of Σ_a."""
    w, loc, tril = softmax(p[0]), p[1], p[2]
    d = loc.shape[1]
    total = 0.0
    for a in range(len(w)):
        chol = np.linalg.cholesky(tril[a] @ tril[a].T)
        pts = [loc[a] + s * np.sqrt(d) * chol[:, i] for i in range(d) for s in (1, -1)]
        vals = [_logpdf_np(p, x) - _logpdf_np(q, x) for x in pts]
        total += w[a] * np.mean(vals)
    return total


def test_unscented_single_gaussians_is_the_closed_form(x64):
    rng = np.random.default_rng(21)
    for d in (1, 2, 5):
        p, q = _mix(1, d, rng), _mix(1, d, rng)
        np.testing.assert_allclose(
            kl.mixture_unscented(Mixture(*p), Mixture(*q)),
            kl.mvn_tril(p[1][0], p[2][0], q[1][0], q[2][0]), rtol=1e-11)


@pytest.mark.parametrize("k, j, d", [(3, 2, 3), (2, 4, 1)])
def test_unscented_matches_reference(x64, k, j, d):
    rng = np.random.default_rng(k * j + d)
    p, q = _mix(k, d, rng), _mix(j, d, rng)
    np.testing.assert_allclose(kl.mixture_unscented(Mixture(*p), Mixture(*q)),
                               ref_unscented(p, q), rtol=1e-10)
    assert abs(float(kl.mixture_unscented(Mixture(*p), Mixture(*p)))) < 1e-12


def _quad_kl_1d(p, q):
    f = lambda x: np.exp(_logpdf_np(p, x)) * (_logpdf_np(p, x) - _logpdf_np(q, x))  # noqa: E731
    return integrate.quad(f, -30, 30, limit=400, epsabs=1e-12)[0]


def test_stratified_within_4_se_of_quadrature_and_closed_form(x64):
    rng = np.random.default_rng(22)
    p, q = _mix(3, 1, rng), _mix(2, 1, rng)
    est = kl.mixture_stratified_monte_carlo(jax.random.key(0), Mixture(*p), Mixture(*q), 4000)
    ref = _quad_kl_1d(p, q)
    assert abs(float(est.estimate) - ref) < 4 * float(est.stderr), (est, ref)
    assert float(est.stderr) < 0.02 * abs(ref)
    p1, q1 = _mix(1, 3, rng), _mix(1, 3, rng)
    est = kl.mixture_stratified_monte_carlo(jax.random.key(1), Mixture(*p1), Mixture(*q1), 4000)
    ref = float(kl.mvn_tril(p1[1][0], p1[2][0], q1[1][0], q1[2][0]))
    assert abs(float(est.estimate) - ref) < 4 * float(est.stderr), (est, ref)


def test_stratified_agrees_with_100k_ancestral_draws(x64):
    rng = np.random.default_rng(23)
    p, q = Mixture(*_mix(4, 3, rng)), Mixture(*_mix(3, 3, rng))
    ref = kl.mixture_monte_carlo(jax.random.key(1), p, q, 100_000)
    est = kl.mixture_stratified_monte_carlo(jax.random.key(2), p, q, 5_000)
    se = np.hypot(float(ref.stderr), float(est.stderr))
    assert abs(float(est.estimate) - float(ref.estimate)) < 4 * se
    # The stratified standard error per draw is no larger than the ancestral one.
    assert float(est.stderr) * np.sqrt(4 * 5_000) <= float(ref.stderr) * np.sqrt(100_000) * 1.05


def test_stratified_standard_error_is_calibrated(x64):
    """Over 400 independent estimates with 20 draws per component, the spread of the estimates
    matches the reported standard error (ratio within ±15 %, about 4 sampling s.d.)."""
    rng = np.random.default_rng(24)
    p, q = Mixture(*_mix(3, 2, rng)), Mixture(*_mix(2, 2, rng))
    keys = jax.random.split(jax.random.key(3), 400)
    est = jax.vmap(lambda k: kl.mixture_stratified_monte_carlo(k, p, q, 20))(keys)
    ratio = float(np.std(est.estimate, ddof=1) / np.sqrt(np.mean(np.square(est.stderr))))
    assert 0.85 < ratio < 1.15, ratio


def test_batched_and_jit(x64):
    rng = np.random.default_rng(25)
    ps = [_mix(2, 2, rng) for _ in range(2)]
    qs = [_mix(3, 2, rng) for _ in range(3)]
    p = Mixture(*(np.stack(a)[:, None] for a in zip(*ps, strict=True)))
    q = Mixture(*(np.stack(a) for a in zip(*qs, strict=True)))
    out = jax.jit(kl.mixture_unscented)(p, q)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[ref_unscented(a, b) for b in qs] for a in ps], rtol=1e-10)
    mc = jax.jit(kl.mixture_stratified_monte_carlo, static_argnums=3)(jax.random.key(0), p, q, 8)
    assert mc.estimate.shape == mc.stderr.shape == (2, 3)


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(26)
    p, q = _mix(4, 4, rng), _mix(3, 4, rng)
    eps = rng.normal(size=(4, 64, 4))  # the same draws in both dtypes (keys draw differently)
    with jax.enable_x64(True):
        ref_u = float(kl.mixture_unscented(Mixture(*p), Mixture(*q)))
        ref_mc = approximations._stratified_impl(Mixture(*p), Mixture(*q), eps)
    p32, q32 = (Mixture(*(a.astype(np.float32) for a in m)) for m in (p, q))
    got = kl.mixture_unscented(p32, q32)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref_u, rtol=1e-5, atol=1e-5)
    mc = approximations._stratified_impl(p32, q32, eps.astype(np.float32))
    np.testing.assert_allclose(mc, ref_mc, rtol=1e-5, atol=1e-5)
    assert kl.mixture_stratified_monte_carlo(jax.random.key(0), p32, q32, 4).estimate.dtype \
        == jnp.float32


def test_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(27)
    p, q = _mix(2, 2, rng), _mix(2, 2, rng)
    key = jax.random.key(4)
    h = 1e-6
    fns = (lambda a: kl.mixture_unscented(Mixture(*a), Mixture(*q)),
           lambda a: kl.mixture_stratified_monte_carlo(key, Mixture(*a), Mixture(*q),
                                                       16).estimate)
    for f in map(jax.jit, fns):
        g = jax.grad(f)(p)
        for ai, arr in enumerate(p):
            for idx in np.ndindex(arr.shape):
                if ai == 2 and idx[-1] > idx[-2]:
                    continue
                plus = [np.array(x, copy=True) for x in p]
                minus = [np.array(x, copy=True) for x in p]
                plus[ai][idx] += h
                minus[ai][idx] -= h
                np.testing.assert_allclose(g[ai][idx], (f(plus) - f(minus)) / (2 * h),
                                           rtol=1e-5, atol=1e-8)


def test_bad_input_names_the_argument():
    rng = np.random.default_rng(0)
    p, q = Mixture(*_mix(2, 2, rng)), Mixture(*_mix(2, 2, rng))
    with pytest.raises(ValueError, match="samples_per_component"):
        kl.mixture_stratified_monte_carlo(jax.random.key(0), p, q, 1)
    with pytest.raises(ValueError, match="q.loc"):
        kl.mixture_unscented(p, Mixture(q.logits, np.full_like(q.loc, np.nan), q.scale_tril))
