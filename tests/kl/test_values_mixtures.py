"""The Gaussian-mixture KL bounds and estimates pinned by VALUE, from both sides: against
closed forms for single Gaussians (K = J = 1), against an independent NumPy/SciPy
implementation of each published formula in D = 3 with K ≠ J, with a zero-weight (very
negative logit) component, against 1-D quadrature of the true KL; the mixture classes'
densities against SciPy and their samplers by per-component moments."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp, softmax
from shared_inputs import mvn_kl_np

from jaxvi import kl
from jaxvi.mixture import Mixture, gaussian_log_prob, moments

RNG = np.random.default_rng(1818)


def _tril(d, rng=RNG, off=0.5):
    return np.tril(rng.normal(size=(d, d)), -1) * off + np.diag(rng.uniform(0.6, 1.6, size=d))


def _mix(k, d, spread=2.0, rng=RNG):
    logits = rng.normal(size=k)
    loc = rng.normal(size=(k, d)) * spread
    tril = np.stack([_tril(d, rng) for _ in range(k)])
    return logits, loc, tril


def _entropy(c):
    return stats.multivariate_normal(np.zeros(len(c)), c).entropy()


def _overlap(m1, c1, m2, c2):  # log ∫ N(x; m1, c1) N(x; m2, c2) dx
    return stats.multivariate_normal(m2, c1 + c2).logpdf(m1)


def _ref_terms(p, q):
    (lp, mp, tp), (lq, mq, tq) = p, q
    cp, cq = tp @ np.swapaxes(tp, -1, -2), tq @ np.swapaxes(tq, -1, -2)
    pi, om = softmax(lp), softmax(lq)
    return pi, om, mp, cp, mq, cq


def ref_variational(p, q):
    pi, om, mp, cp, mq, cq = _ref_terms(p, q)
    out = 0.0
    for a in range(len(pi)):
        num = sum(pi[b] * np.exp(-mvn_kl_np(mp[a], cp[a], mp[b], cp[b])) for b in range(len(pi)))
        den = sum(om[b] * np.exp(-mvn_kl_np(mp[a], cp[a], mq[b], cq[b])) for b in range(len(om)))
        out += pi[a] * np.log(num / den)
    return out


def ref_lower(p, q):
    pi, om, mp, cp, mq, cq = _ref_terms(p, q)
    out = 0.0
    for a in range(len(pi)):
        num = sum(pi[b] * np.exp(-mvn_kl_np(mp[a], cp[a], mp[b], cp[b])) for b in range(len(pi)))
        cross = sum(om[b] * np.exp(_overlap(mp[a], cp[a], mq[b], cq[b])) for b in range(len(om)))
        out += pi[a] * (np.log(num) - _entropy(cp[a]) - np.log(cross))
    return out


def ref_product_upper(p, q):
    pi, om, mp, cp, mq, cq = _ref_terms(p, q)
    out = 0.0
    for a in range(len(pi)):
        self_ = sum(pi[b] * np.exp(_overlap(mp[a], cp[a], mp[b], cp[b])) for b in range(len(pi)))
        den = sum(om[b] * np.exp(-mvn_kl_np(mp[a], cp[a], mq[b], cq[b])) for b in range(len(om)))
        out += pi[a] * (np.log(self_) - np.log(den) + _entropy(cp[a]))
    return out


def ref_matched(p, q):
    pi, om, mp, cp, mq, cq = _ref_terms(p, q)
    k, j = len(pi), len(om)
    best = np.inf
    for perm in itertools.permutations(range(j), k):  # brute-force over matchings
        best = min(best, sum(pi[a] * (np.log(pi[a] / om[perm[a]])
                                      + mvn_kl_np(mp[a], cp[a], mq[perm[a]], cq[perm[a]]))
                             for a in range(k)))
    return best


def ref_variational_upper(p, q, iters):
    """Hershey & Olsen's alternating updates, written out with explicit normalisations."""
    pi, om, mp, cp, mq, cq = _ref_terms(p, q)
    k, j = len(pi), len(om)
    dist = np.array([[mvn_kl_np(mp[a], cp[a], mq[b], cq[b]) for b in range(j)] for a in range(k)])
    phi = np.outer(pi, om)  # any positive start; φ_{ab} is a joint over (a, b)
    for _ in range(iters + 1):
        psi = phi / phi.sum(0, keepdims=True) * om[None, :]  # ψ_{ab}: Σ_a ψ_ab = ω_b
        phi = psi * np.exp(-dist)
        phi = phi / phi.sum(1, keepdims=True) * pi[:, None]  # Σ_b φ_ab = π_a
    psi = phi / phi.sum(0, keepdims=True) * om[None, :]
    return float(np.sum(phi * (np.log(phi / psi) + dist)))


def _gm(params):
    return Mixture(*(jnp.asarray(a) for a in params))


def test_single_gaussians_have_closed_form_bounds(x64):
    """K = J = 1: matched, variational and its upper bound equal KL(f ‖ g); the lower bound is
    −H(f) − log ∫ f g and the product bound KL + D(1 − log 2)/2, both exactly."""
    d = 3
    p, q = _mix(1, d), _mix(1, d)
    mp, mq = p[1][0], q[1][0]
    cp, cq = p[2][0] @ p[2][0].T, q[2][0] @ q[2][0].T
    exact = mvn_kl_np(mp, cp, mq, cq)
    gp, gq = _gm(p), _gm(q)
    for fn in (kl.mixture_variational, kl.mixture_matched_upper_bound,
               kl.mixture_variational_upper_bound):
        np.testing.assert_allclose(fn(gp, gq), exact, rtol=1e-10)
    np.testing.assert_allclose(kl.mixture_lower_bound(gp, gq),
                               -_entropy(cp) - _overlap(mp, cp, mq, cq), rtol=1e-10)
    np.testing.assert_allclose(kl.mixture_product_upper_bound(gp, gq),
                               exact + 0.5 * d * (1 - np.log(2.0)), rtol=1e-10)
    b = kl.mixture_bounds(gp, gq)
    np.testing.assert_allclose(b.upper, exact, rtol=1e-10)
    np.testing.assert_allclose(b.variational, exact, rtol=1e-10)
    np.testing.assert_allclose(b.lower, max(0.0, -_entropy(cp) - _overlap(mp, cp, mq, cq)),
                               rtol=1e-10, atol=1e-12)


def _with_zero_weight_component(params, d):
    """params plus one component of logit −1e4 (weight exp(−1e4) = 0 in float64)."""
    extra = (np.array([-1e4]), RNG.normal(size=(1, d)), _tril(d)[None])
    return tuple(np.concatenate([a, b]) for a, b in zip(params, extra, strict=True))


@pytest.mark.parametrize("zero_weight", [False, True])
def test_bounds_equal_reference_formulas_d3(x64, zero_weight):
    """D = 3, K = 2 against J = 3; with `zero_weight` both mixtures get an extra component of
    zero weight, which must change nothing (the references are computed without it)."""
    d, k, j = 3, 2, 3
    p, q = _mix(k, d, spread=1.0), _mix(j, d, spread=1.0)
    if zero_weight:
        gp, gq = _gm(_with_zero_weight_component(p, d)), _gm(_with_zero_weight_component(q, d))
    else:
        gp, gq = _gm(p), _gm(q)
    np.testing.assert_allclose(kl.mixture_variational(gp, gq), ref_variational(p, q), rtol=1e-9)
    np.testing.assert_allclose(kl.mixture_lower_bound(gp, gq), ref_lower(p, q), rtol=1e-9)
    np.testing.assert_allclose(kl.mixture_product_upper_bound(gp, gq), ref_product_upper(p, q),
                               rtol=1e-9)
    np.testing.assert_allclose(kl.mixture_matched_upper_bound(gp, gq), ref_matched(p, q),
                               rtol=1e-9)
    for iters in (0, 25):
        np.testing.assert_allclose(kl.mixture_variational_upper_bound(gp, gq, num_iters=iters),
                                   ref_variational_upper(p, q, iters), rtol=1e-9)
    b = kl.mixture_bounds(gp, gq)
    uppers = [ref_product_upper(p, q), ref_variational_upper(p, q, 20), ref_matched(p, q)]
    lower = max(0.0, ref_lower(p, q))
    np.testing.assert_allclose(b.upper, max(min(uppers), lower), rtol=1e-9)
    np.testing.assert_allclose(b.lower, lower, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.variational, np.clip(ref_variational(p, q), lower,
                                                      max(min(uppers), lower)), rtol=1e-9)
    # the Monte Carlo estimate lies between the bounds within 4 standard errors
    mc = kl.mixture_monte_carlo(jax.random.key(2), gp, gq, 10_000)
    assert b.lower - 4 * mc.stderr <= mc.estimate <= b.upper + 4 * mc.stderr


def test_bounds_float32_match_float64_reference():
    p, q = _mix(2, 3, spread=1.0), _mix(3, 3, spread=1.0)
    gp = Mixture(*(jnp.asarray(a, jnp.float32) for a in p))
    gq = Mixture(*(jnp.asarray(a, jnp.float32) for a in q))
    np.testing.assert_allclose(kl.mixture_lower_bound(gp, gq), ref_lower(p, q), rtol=2e-3,
                               atol=2e-3)
    np.testing.assert_allclose(kl.mixture_product_upper_bound(gp, gq), ref_product_upper(p, q),
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(kl.mixture_variational(gp, gq), ref_variational(p, q),
                               rtol=2e-3, atol=2e-3)


def test_bounds_bracket_quadrature_in_one_dimension(x64):
    """D = 1: the true KL by quadrature lies in [lower, upper], and the Monte Carlo estimate
    agrees with it within 4 standard errors."""
    p = (np.array([0.3, -0.4]), np.array([[-1.5], [1.0]]), np.array([[[0.6]], [[0.9]]]))
    q = (np.array([0.0, 0.5, -1.0]), np.array([[-1.0], [0.5], [2.0]]),
         np.array([[[1.1]], [[0.7]], [[1.3]]]))

    def dens(m, x):
        w = softmax(m[0])
        return sum(wk * stats.norm.pdf(x, mk[0], sk[0, 0]) for wk, mk, sk in
                   zip(w, m[1], m[2], strict=True))

    grid = np.linspace(-15.0, 15.0, 60_001)  # trapezoid rule: error far below 1e-6 here
    fp, fq = dens(p, grid), dens(q, grid)
    true = integrate.trapezoid(fp * np.log(fp / fq), grid)
    gp, gq = _gm(p), _gm(q)
    b = kl.mixture_bounds(gp, gq)
    assert float(b.lower) <= true <= float(b.upper)
    for fn in (kl.mixture_lower_bound,):
        assert float(fn(gp, gq)) <= true
    for fn in (kl.mixture_product_upper_bound, kl.mixture_matched_upper_bound,
               kl.mixture_variational_upper_bound):
        assert float(fn(gp, gq)) >= true
    mc = kl.mixture_monte_carlo(jax.random.key(0), gp, gq, 40_000)
    assert abs(float(mc.estimate) - true) < 4 * float(mc.stderr)


def _scipy_mixture_logpdf(params, x):
    logits, loc, tril = params
    comp = np.stack([stats.multivariate_normal(m, t @ t.T).logpdf(x)
                     for m, t in zip(loc, tril, strict=True)], -1)
    return comp, logsumexp(comp + np.log(softmax(logits)), axis=-1)


def test_densities_equal_scipy(x64):
    params = _mix(3, 3)
    x = RNG.normal(size=(7, 3)) * 2
    comp, want = _scipy_mixture_logpdf(params, x)
    np.testing.assert_allclose(Mixture(*params).log_prob(x), want, rtol=1e-11)
    m = Mixture(*(jnp.asarray(a) for a in params))
    np.testing.assert_allclose(m.log_prob(x), want, rtol=1e-11)
    np.testing.assert_allclose(gaussian_log_prob(x, params[1], params[2]), comp, rtol=1e-11)
    np.testing.assert_allclose(m.component_log_prob(x), comp + np.log(softmax(params[0])),
                               rtol=1e-11)


def test_moments_equal_law_of_total_covariance(x64):
    logits, loc, tril = _mix(3, 2)
    w = softmax(logits)
    cov = tril @ np.swapaxes(tril, -1, -2)
    mean = w @ loc
    want = sum(wk * (ck + np.outer(mk, mk)) for wk, mk, ck in zip(w, loc, cov, strict=True))
    want = want - np.outer(mean, mean)
    got_mean, got_cov = moments(jnp.asarray(w), jnp.asarray(loc), jnp.asarray(cov))
    np.testing.assert_allclose(got_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(got_cov, want, rtol=1e-11)
    m_mean, m_cov = Mixture(*(jnp.asarray(a) for a in (logits, loc, tril))).moments()
    np.testing.assert_allclose(m_cov, want, rtol=1e-11)
    np.testing.assert_allclose(m_mean, mean, rtol=1e-12)


def test_sampler_per_component_moments(x64):
    """Two far-apart components with non-symmetric factors (LLᵀ ≠ LᵀL): each draw is labelled
    by its nearest mean; weights, means and covariances within 5 standard errors."""
    n = 20_000
    logits = np.log(np.array([0.3, 0.7]))
    loc = np.array([[-20.0, 0.0, 5.0], [20.0, 3.0, -5.0]])
    tril = np.stack([np.array([[1.0, 0, 0], [0.9, 0.5, 0], [-0.4, 0.8, 0.3]]),
                     np.array([[0.4, 0, 0], [-0.7, 1.2, 0], [0.2, 0.3, 0.9]])])
    x = np.asarray(Mixture(*(jnp.asarray(a) for a in (logits, loc, tril))).sample(
        seed=jax.random.key(3), sample_shape=(n,)))
    lab = (x[:, 0] > 0).astype(int)
    frac = lab.mean()
    assert abs(frac - 0.7) < 5 * np.sqrt(0.21 / n)
    for k in range(2):
        xs = x[lab == k]
        nk = len(xs)
        cov = tril[k] @ tril[k].T
        se_mean = np.sqrt(np.diag(cov) / nk)
        np.testing.assert_array_less(np.abs(xs.mean(0) - loc[k]), 5 * se_mean)
        se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / nk)
        np.testing.assert_array_less(np.abs(np.cov(xs, rowvar=False) - cov), 5 * se_cov)
