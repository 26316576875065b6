"""Closed-form divergences between Gaussian mixtures (Cauchy–Schwarz, L2, Jensen–Rényi of
order 2) pinned against numerical quadrature of ∫p², ∫q², ∫pq in 1-D and 2-D
(`scipy.integrate`), against the K = J = 1 closed forms, by their identities, float32 against
float64 and gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import softmax

from jaxvi import kl
from jaxvi.mixture import Mixture


def _tril(d, rng, off=0.5):
    return np.tril(rng.normal(size=(d, d)), -1) * off + np.diag(rng.uniform(0.5, 1.6, size=d))


def _mix(k, d, rng, spread=1.5):
    return (rng.normal(size=k), rng.normal(size=(k, d)) * spread,
            np.stack([_tril(d, rng) for _ in range(k)]))


def _pdf(m):
    w, loc, tril = softmax(m[0]), m[1], m[2]
    cov = tril @ np.swapaxes(tril, -1, -2)
    comps = [stats.multivariate_normal(loc[k], cov[k]) for k in range(len(w))]
    return lambda x: sum(wk * c.pdf(x) for wk, c in zip(w, comps, strict=True))


def _divergences_from(pp, qq, pq, w=0.5):
    mm = w * w * pp + 2 * w * (1 - w) * pq + (1 - w) ** 2 * qq
    return {"cs": -np.log(pq) + 0.5 * np.log(pp * qq), "l2": pp + qq - 2 * pq,
            "jr": -np.log(mm) + w * np.log(pp) + (1 - w) * np.log(qq)}


def _ours(p, q, w=0.5):
    p, q = Mixture(*p), Mixture(*q)
    return {"cs": kl.mixture_cauchy_schwarz(p, q), "l2": kl.mixture_l2_squared(p, q),
            "jr": kl.mixture_jensen_renyi(p, q, w)}


def _check(ours, ref, rtol, atol):
    for name in ("cs", "l2", "jr"):
        np.testing.assert_allclose(ours[name], ref[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("w", [0.5, 0.2])
def test_one_dimensional_quadrature(x64, w):
    rng = np.random.default_rng(11)
    p, q = _mix(3, 1, rng), _mix(2, 1, rng)
    fp, fq = _pdf(p), _pdf(q)
    quad = lambda f: integrate.quad(f, -40, 40, limit=400, epsabs=1e-14, epsrel=1e-12)[0]  # noqa: E731
    ref = _divergences_from(quad(lambda x: fp(x) ** 2), quad(lambda x: fq(x) ** 2),
                            quad(lambda x: fp(x) * fq(x)), w)
    _check(_ours(p, q, w), ref, rtol=1e-9, atol=1e-12)


def test_two_dimensional_quadrature(x64):
    rng = np.random.default_rng(12)
    p, q = _mix(2, 2, rng, spread=1.0), _mix(3, 2, rng, spread=1.0)
    # A grid of 801² points over [−12, 12]²: Simpson on smooth, rapidly decaying integrands.
    t = np.linspace(-12, 12, 801)
    xy = np.stack(np.meshgrid(t, t, indexing="ij"), axis=-1)
    fp, fq = _pdf(p)(xy), _pdf(q)(xy)
    simpson2 = lambda f: integrate.simpson(integrate.simpson(f, x=t), x=t)  # noqa: E731
    ref = _divergences_from(simpson2(fp * fp), simpson2(fq * fq), simpson2(fp * fq))
    _check(_ours(p, q), ref, rtol=1e-8, atol=1e-12)


def test_single_gaussians_closed_forms(x64):
    """K = J = 1: ∫pq = N(μ_p; μ_q, Σ_p + Σ_q), ∫p² = (4π)^(−D/2) |Σ_p|^(−1/2)."""
    rng = np.random.default_rng(13)
    d = 3
    p, q = _mix(1, d, rng), _mix(1, d, rng)
    cp, cq = p[2][0] @ p[2][0].T, q[2][0] @ q[2][0].T
    pq = stats.multivariate_normal(q[1][0], cp + cq).pdf(p[1][0])
    pp = (4 * np.pi) ** (-d / 2) / np.sqrt(np.linalg.det(cp))
    qq = (4 * np.pi) ** (-d / 2) / np.sqrt(np.linalg.det(cq))
    _check(_ours(p, q), _divergences_from(pp, qq, pq), rtol=1e-11, atol=1e-14)


def test_identities(x64):
    rng = np.random.default_rng(14)
    p, q = _mix(4, 3, rng), _mix(2, 3, rng)
    same = _ours(p, p)
    for name in ("cs", "l2", "jr"):
        assert abs(float(same[name])) < 1e-12, name
    a, b = _ours(p, q), _ours(q, p)
    for name in ("cs", "l2", "jr"):  # symmetric (JR at w = ½)
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12)
    assert a["cs"] > 0 and a["l2"] > 0
    # Permuting the components changes nothing.
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(_ours(tuple(x[perm] for x in p), q)["cs"], a["cs"], rtol=1e-12)


def test_jensen_renyi_can_be_negative(x64):
    """N(0, 0.01²) against N(0, 1), from ∫f² = 1/(2σ√π) and ∫pq = 1/√(2π(σ_p² + σ_q²)):
    JR₂ ≈ −0.95. (A clip at zero or a concave-entropy assumption would be wrong here.)"""
    sp, sq = 0.01, 1.0
    p = (np.zeros(1), np.zeros((1, 1)), np.full((1, 1, 1), sp))
    q = (np.zeros(1), np.zeros((1, 1)), np.full((1, 1, 1), sq))
    pp, qq = 1 / (2 * sp * np.sqrt(np.pi)), 1 / (2 * sq * np.sqrt(np.pi))
    pq = 1 / np.sqrt(2 * np.pi * (sp**2 + sq**2))
    ref = _divergences_from(pp, qq, pq)
    assert ref["jr"] < -0.5
    _check(_ours(p, q), ref, rtol=1e-12, atol=1e-14)


def test_batched_jit_vmap(x64):
    rng = np.random.default_rng(15)
    ps = [_mix(2, 2, rng) for _ in range(2)]
    qs = [_mix(3, 2, rng) for _ in range(3)]
    p = Mixture(*(np.stack(a)[:, None] for a in zip(*ps, strict=True)))
    q = Mixture(*(np.stack(a) for a in zip(*qs, strict=True)))
    for fn in (kl.mixture_cauchy_schwarz, kl.mixture_l2_squared, kl.mixture_jensen_renyi):
        out = jax.jit(fn)(p, q)
        assert out.shape == (2, 3)
        ref = np.array([[fn(Mixture(*a), Mixture(*b)) for b in qs] for a in ps])
        np.testing.assert_allclose(out, ref, rtol=1e-12)
        np.testing.assert_allclose(jax.vmap(fn, in_axes=(None, 0))(Mixture(*ps[1]), q), ref[1],
                                   rtol=1e-12)


def test_float32_absolute_error():
    rng = np.random.default_rng(16)
    p, q = _mix(4, 5, rng), _mix(3, 5, rng)
    with jax.enable_x64(True):
        ref = {k: float(v) for k, v in _ours(p, q).items()}
    got = _ours(*(tuple(a.astype(np.float32) for a in m) for m in (p, q)))
    for name in ("cs", "jr"):
        assert got[name].dtype == jnp.float32
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(got["l2"], ref["l2"], rtol=1e-4)


def test_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(17)
    p, q = _mix(2, 2, rng), _mix(2, 2, rng)
    h = 1e-6
    for fn in (kl.mixture_cauchy_schwarz, kl.mixture_l2_squared,
               lambda a, b: kl.mixture_jensen_renyi(a, b, 0.3)):
        f = jax.jit(lambda a, fn=fn: fn(Mixture(*a), Mixture(*q)))
        g = jax.grad(f)(p)
        for ai, arr in enumerate(p):
            for idx in np.ndindex(arr.shape):
                if ai == 2 and idx[-1] > idx[-2]:
                    assert g[ai][idx] == 0.0  # above the diagonal: not read
                    continue
                plus = [np.array(x, copy=True) for x in p]
                minus = [np.array(x, copy=True) for x in p]
                plus[ai][idx] += h
                minus[ai][idx] -= h
                np.testing.assert_allclose(g[ai][idx], (f(plus) - f(minus)) / (2 * h),
                                           rtol=1e-5, atol=1e-8)


def test_l2_float32_high_dimension_underflow_is_refused():
    """Unit covariances in D = 80: ∫p² ≈ (4π)^(−40) ≈ 1e-44, below float32's normal range;
    float64 gives the value, float32 refuses rather than return a flushed zero."""
    d = 80
    p = (np.zeros(2), np.stack([np.zeros(d), 0.5 * np.ones(d)]), np.stack([np.eye(d)] * 2))
    q = (np.zeros(1), np.zeros((1, d)), np.eye(d)[None])
    with jax.enable_x64(True):
        ref = float(kl.mixture_l2_squared(Mixture(*p), Mixture(*q)))
        assert 0 < ref < 1e-40, ref
    p32, q32 = (Mixture(*(a.astype(np.float32) for a in m)) for m in (p, q))
    with pytest.raises(ValueError, match="float64"):
        kl.mixture_l2_squared(p32, q32)
    # Cauchy–Schwarz is scale free and stays accurate in float32.
    with jax.enable_x64(True):
        cs = float(kl.mixture_cauchy_schwarz(Mixture(*p), Mixture(*q)))
    np.testing.assert_allclose(kl.mixture_cauchy_schwarz(p32, q32), cs, rtol=1e-4)


def test_bad_weight_names_the_argument():
    rng = np.random.default_rng(0)
    p, q = Mixture(*_mix(2, 2, rng)), Mixture(*_mix(2, 2, rng))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="weight"):
            kl.mixture_jensen_renyi(p, q, bad)
    with pytest.raises(ValueError, match="p.scale_tril"):
        kl.mixture_cauchy_schwarz(Mixture(p.logits, p.loc, -p.scale_tril), q)
