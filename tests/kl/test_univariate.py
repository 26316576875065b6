"""Guaranteed bounds on KL between 1-D Gaussian mixtures (Nielsen & Sun 2016): they bracket
the KL from adaptive quadrature from both sides, tighten as cuts are added, collapse to the
closed form for single Gaussians; float32, batching, gradients, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp, softmax

from jaxvi import kl
from jaxvi.kl.univariate import mixture_guaranteed_bounds_1d
from jaxvi.mixture import Mixture


def _mix(k, rng, spread=2.0):
    return (rng.normal(size=k), rng.normal(size=(k, 1)) * spread,
            rng.uniform(0.3, 1.6, size=(k, 1, 1)))


def _logpdf(m, x):
    w, loc, sd = softmax(m[0]), m[1][:, 0], m[2][:, 0, 0]
    return logsumexp(np.log(w)[:, None] + stats.norm.logpdf(x[None], loc[:, None],
                                                             sd[:, None]), axis=0)


def _quad_kl(p, q):
    """Composite Simpson on 80,001 points over [−40, 40] (vectorised; the integrand is smooth
    and negligible at the ends): accurate to ~1e-12 here."""
    x = np.linspace(-40, 40, 80_001)
    lp = _logpdf(p, x)
    return integrate.simpson(np.exp(lp) * (lp - _logpdf(q, x)), x=x)


@pytest.mark.parametrize("k, j, seed", [(3, 3, 0), (3, 3, 1), (3, 3, 2), (3, 3, 3)])
def test_bounds_bracket_quadrature_and_tighten(x64, k, j, seed):
    rng = np.random.default_rng(seed)
    p, q = _mix(k, rng), _mix(j, rng)
    ref = _quad_kl(p, q)
    widths = []
    for n in (0, 128):
        b = mixture_guaranteed_bounds_1d(Mixture(*p), Mixture(*q), num_cuts=n)
        assert float(b.lower) <= ref + 1e-10 and ref <= float(b.upper) + 1e-10, (n, b, ref)
        widths.append(float(b.upper - b.lower))
    assert widths[1] < 0.1 * widths[0] and widths[1] < 0.05


def test_mixture_bounds_uses_them_in_one_dimension(x64):
    rng = np.random.default_rng(10)
    for _ in range(3):
        p, q = _mix(3, rng), _mix(3, rng)
        ref = _quad_kl(p, q)
        b = kl.mixture_bounds(Mixture(*p), Mixture(*q))
        g = mixture_guaranteed_bounds_1d(Mixture(*p), Mixture(*q))
        assert float(g.lower) - 1e-12 <= float(b.lower) <= ref + 1e-10
        assert ref - 1e-10 <= float(b.upper) <= float(g.upper) + 1e-12
        assert float(b.upper - b.lower) < 0.2


def test_single_gaussians_are_exact(x64):
    rng = np.random.default_rng(5)
    p, q = _mix(1, rng), _mix(1, rng)
    b = mixture_guaranteed_bounds_1d(Mixture(*p), Mixture(*q), num_cuts=0)
    ref = kl.normal_diag(p[1][0], p[2][0, 0], q[1][0], q[2][0, 0])
    np.testing.assert_allclose(b.lower, ref, rtol=1e-12)
    np.testing.assert_allclose(b.upper, ref, rtol=1e-12)


def test_identical_mixtures_bracket_zero(x64):
    rng = np.random.default_rng(6)
    p = _mix(4, rng)
    b = mixture_guaranteed_bounds_1d(Mixture(*p), Mixture(*p))
    assert float(b.lower) <= 1e-12 <= float(b.upper) + 2e-12


def test_batched_jit_float32(x64):
    rng = np.random.default_rng(7)
    ps = [_mix(3, rng) for _ in range(2)]
    qs = [_mix(2, rng) for _ in range(2)]
    p = Mixture(*(np.stack(a)[:, None] for a in zip(*ps, strict=True)))
    q = Mixture(*(np.stack(a) for a in zip(*qs, strict=True)))
    out = jax.jit(mixture_guaranteed_bounds_1d, static_argnums=2)(p, q, 32)
    one_pair = jax.jit(mixture_guaranteed_bounds_1d, static_argnums=2)
    assert out.lower.shape == out.upper.shape == (2, 2)
    for i, a in enumerate(ps):
        for j, b in enumerate(qs):
            one = one_pair(Mixture(*a), Mixture(*b), 32)
            np.testing.assert_allclose([out.lower[i, j], out.upper[i, j]], list(one), rtol=1e-12)
            ref = _quad_kl(a, b)
            with jax.enable_x64(False):
                b32 = one_pair(
                    Mixture(*(x.astype(np.float32) for x in a)),
                    Mixture(*(x.astype(np.float32) for x in b)), 32)
            assert b32.lower.dtype == jnp.float32
            tol = 1e-5 * (1 + abs(ref))
            assert float(b32.lower) <= ref + tol and ref <= float(b32.upper) + tol


def test_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(8)
    p, q = _mix(2, rng), _mix(2, rng)
    h = 1e-6
    f = jax.jit(lambda a: jnp.stack(mixture_guaranteed_bounds_1d(Mixture(*a), Mixture(*q), 16)))
    jac = jax.jacrev(f)(p)
    for ai, arr in enumerate(p):
        for idx in np.ndindex(arr.shape):
            plus = [np.array(x, copy=True) for x in p]
            minus = [np.array(x, copy=True) for x in p]
            plus[ai][idx] += h
            minus[ai][idx] -= h
            np.testing.assert_allclose(jac[ai][(slice(None), *idx)],
                                       (f(plus) - f(minus)) / (2 * h),
                                       rtol=1e-5, atol=1e-7, err_msg=f"{ai}{idx}")


def test_bad_input_names_the_argument():
    rng = np.random.default_rng(9)
    p2 = Mixture(np.zeros(2), np.zeros((2, 2)), np.broadcast_to(np.eye(2), (2, 2, 2)))
    with pytest.raises(ValueError, match="p.loc"):
        mixture_guaranteed_bounds_1d(p2, p2)
    p = Mixture(*_mix(2, rng))
    with pytest.raises(ValueError, match="num_cuts"):
        mixture_guaranteed_bounds_1d(p, p, num_cuts=-1)
