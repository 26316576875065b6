"""Gaussian-mixture KL (`jaxvi.kl.mixtures`): the bounds bracket Monte Carlo, exactness for
single Gaussians, joint convexity (hypothesis), batching, jit/vmap/grad, validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from shared_inputs import random_mixture

from jaxvi import kl
from jaxvi.mixture import Mixture


@functools.partial(jax.jit, static_argnames="num_samples")
def _mc(key, p, q, num_samples=20_000):
    return kl.monte_carlo(key, p, q, num_samples)


def _all_estimates(p, q):
    return {
        "matched": kl.mixture_matched_upper_bound(p, q),
        "variational_upper": kl.mixture_variational_upper_bound(p, q),
        "product_upper": kl.mixture_product_upper_bound(p, q),
        "lower": kl.mixture_lower_bound(p, q),
        "variational": kl.mixture_variational(p, q),
    }


def test_single_gaussians_are_exact(x64):
    rng = np.random.default_rng(0)
    p, q = random_mixture(rng, 1, d=3), random_mixture(rng, 1, d=3)
    exact = kl.mvn_tril(p.loc[0], p.scale_tril[0], q.loc[0], q.scale_tril[0])
    est = _all_estimates(p, q)
    for name in ("matched", "variational_upper", "variational"):
        np.testing.assert_allclose(est[name], exact, rtol=1e-10, err_msg=name)
    assert est["lower"] <= exact + 1e-10 and est["product_upper"] >= exact - 1e-10
    b = kl.mixture_bounds(p, q)
    np.testing.assert_allclose((b.upper, b.variational), (exact, exact), rtol=1e-10)


def test_identical_mixtures_give_zero(x64):
    p = random_mixture(np.random.default_rng(1), 3)
    est = _all_estimates(p, p)
    for name in ("matched", "variational_upper", "variational"):
        np.testing.assert_allclose(est[name], 0.0, atol=1e-10, err_msg=name)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31), sizes=st.sampled_from([(2, 2), (2, 3)]),
       shift=st.floats(0.0, 3.0))
def test_bounds_bracket_monte_carlo(seed, sizes, shift):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        p, q = random_mixture(rng, sizes[0]), random_mixture(rng, sizes[1], shift=shift)
        mc = _mc(jax.random.key(seed), p, q)
        slack = 5 * float(mc.stderr) + 1e-9
        est = _all_estimates(p, q)
        for name in ("matched", "variational_upper", "product_upper"):
            assert float(est[name]) >= float(mc.estimate) - slack, name
        assert float(est["lower"]) <= float(mc.estimate) + slack
        b = kl.mixture_bounds(p, q)
        assert b.lower - slack <= mc.estimate <= b.upper + slack
        assert b.lower <= b.variational <= b.upper
        assert b.upper <= min(float(est["matched"]), float(est["variational_upper"])) + 1e-12
        listed = kl.mixture_bound_list(p, q)
        lowers = [float(v) for _, kind, v in listed if kind == "lower"]
        uppers = [float(v) for _, kind, v in listed if kind == "upper"]
        assert [kind for _, kind, _ in listed] == ["lower"] * len(lowers) + ["upper"] * len(uppers)
        assert lowers == sorted(lowers, reverse=True) and uppers == sorted(uppers)
        assert all(v <= mc.estimate + slack for v in lowers)
        assert all(v >= mc.estimate - slack for v in uppers)
        np.testing.assert_allclose(max(lowers), b.lower, rtol=1e-12)
        np.testing.assert_allclose(min(uppers), b.upper, rtol=1e-12)


def _blend(a: Mixture, b: Mixture, lam: float) -> Mixture:
    """λ a + (1 − λ) b as one mixture (components concatenated)."""
    logits = jnp.concatenate([jnp.log(lam) + jax.nn.log_softmax(a.logits),
                              jnp.log1p(-lam) + jax.nn.log_softmax(b.logits)])
    return Mixture(logits, jnp.concatenate([a.loc, b.loc]),
                   jnp.concatenate([a.scale_tril, b.scale_tril]))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), lam=st.floats(0.05, 0.95))
def test_joint_convexity_through_bounds(seed, lam):
    """KL(λp1+(1−λ)p2 ‖ λq1+(1−λ)q2) ≤ λKL(p1‖q1) + (1−λ)KL(p2‖q2), checked as
    lower(blend) ≤ λ upper1 + (1−λ) upper2; the matched bound satisfies it exactly because the
    block-diagonal matching is feasible for the blend."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        p1, p2, q1, q2 = (random_mixture(rng, 2) for _ in range(4))
        p, q = _blend(p1, p2, lam), _blend(q1, q2, lam)
        m1, m2 = kl.mixture_matched_upper_bound(p1, q1), kl.mixture_matched_upper_bound(p2, q2)
        assert kl.mixture_matched_upper_bound(p, q) <= lam * m1 + (1 - lam) * m2 + 1e-9
        u1, u2 = kl.mixture_bounds(p1, q1).upper, kl.mixture_bounds(p2, q2).upper
        assert kl.mixture_bounds(p, q).lower <= lam * u1 + (1 - lam) * u2 + 1e-9


def test_variational_upper_bound_decreases_with_iterations(x64):
    rng = np.random.default_rng(3)
    p, q = random_mixture(rng, 3), random_mixture(rng, 4, shift=1.0)
    values = [float(kl.mixture_variational_upper_bound(p, q, num_iters=n)) for n in (0, 1, 5, 50)]
    assert all(b <= a + 1e-10 for a, b in zip(values, values[1:], strict=False))


def test_batched_jit_vmap_and_grad(x64):
    rng = np.random.default_rng(4)
    p = random_mixture(rng, 2, batch=(3, 1))
    q = random_mixture(rng, 3, batch=(1, 2))
    for fn in (kl.mixture_matched_upper_bound, kl.mixture_variational,
               kl.mixture_variational_upper_bound, kl.mixture_lower_bound):
        batched = fn(p, q)
        assert batched.shape == (3, 2)
        single = fn(jax.tree.map(lambda a: a[1, 0], p), jax.tree.map(lambda a: a[0, 1], q))
        np.testing.assert_allclose(batched[1, 1], single, rtol=1e-10)
    np.testing.assert_allclose(jax.jit(kl.mixture_matched_upper_bound)(p, q),
                               kl.mixture_matched_upper_bound(p, q), rtol=1e-10)
    q_row = jax.tree.map(lambda a: a[0], q)  # batch (2,)
    p_col = jax.tree.map(lambda a: a[:, 0], p)  # batch (3,)
    vm = jax.vmap(kl.mixture_matched_upper_bound, in_axes=(0, None))(p_col, q_row)
    np.testing.assert_allclose(vm, kl.mixture_matched_upper_bound(p, q), rtol=1e-10)
    # Gradients: finite, and the variational approximation against finite differences.
    p1, q1 = random_mixture(rng, 2), random_mixture(rng, 2)
    for fn in (kl.mixture_matched_upper_bound, kl.mixture_lower_bound):
        g = jax.grad(lambda loc, fn=fn: fn(p1._replace(loc=loc), q1))(p1.loc)
        assert np.all(np.isfinite(g))
    check_grads(
        jax.jit(lambda loc: kl.mixture_variational(p1._replace(loc=loc), q1)),
        (p1.loc,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_float32(x64):
    rng = np.random.default_rng(5)
    p, q = random_mixture(rng, 2), random_mixture(rng, 3)
    p32, q32 = (jax.tree.map(lambda a: a.astype(jnp.float32), m) for m in (p, q))
    for fn in (kl.mixture_matched_upper_bound, kl.mixture_variational):
        v32 = fn(p32, q32)
        assert v32.dtype == jnp.float32
        np.testing.assert_allclose(v32, fn(p, q), rtol=1e-4, atol=1e-4)


def test_bad_mixtures_raise():
    rng = np.random.default_rng(7)
    p, q = random_mixture(rng, 3), random_mixture(rng, 2)
    with pytest.raises(ValueError, match="`p`"):
        kl.mixture_matched_upper_bound(p, q)  # K = 3 > J = 2
    with pytest.raises(ValueError, match="q.loc"):
        kl.mixture_variational(q, random_mixture(rng, 2, d=3))
    with pytest.raises(ValueError, match="p.logits"):
        kl.mixture_variational(p._replace(logits=p.logits[:2]), q)
    with pytest.raises(ValueError, match="p.scale_tril"):
        kl.mixture_variational(p._replace(scale_tril=-p.scale_tril), q)
    with pytest.raises(ValueError, match="q.loc"):
        kl.mixture_lower_bound(p, q._replace(loc=q.loc.at[0, 0].set(jnp.nan)))
    with pytest.raises(ValueError, match="`p` must be a jaxvi.mixture.Mixture"):
        kl.mixture_variational((p.logits, p.loc, p.scale_tril), q)
