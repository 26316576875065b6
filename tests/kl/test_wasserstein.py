"""Squared 2-Wasserstein distances: the Gaussian closed form (Bures) and the mixture distance
MW2, pinned against POT (`ot.gaussian`, `ot.gmm.gmm_ot_loss` = `ot.emd2` on Bures costs) in
float64, with the identities they must satisfy, float32 against float64 and gradients against
finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from jaxvi import kl
from jaxvi.mixture import Mixture

ot = pytest.importorskip("ot")
pytest.importorskip("ot.gmm")


def _tril(d, rng, off=0.5):
    return np.tril(rng.normal(size=(d, d)), -1) * off + np.diag(rng.uniform(0.5, 1.6, size=d))


def _mix(k, d, rng, spread=2.0):
    return (rng.normal(size=k), rng.normal(size=(k, d)) * spread,
            np.stack([_tril(d, rng) for _ in range(k)]))


def _cov(t):
    return t @ np.swapaxes(t, -1, -2)


def _pot_mw2(p, q):
    (lp, mp, tp), (lq, mq, tq) = p, q
    return float(ot.gmm.gmm_ot_loss(mp, mq, _cov(tp), _cov(tq), softmax(lp), softmax(lq)))


@pytest.mark.parametrize("d", [1, 3, 6])
def test_w2_gaussians_match_pot(x64, d):
    rng = np.random.default_rng(d)
    for _ in range(4):
        mp, mq = rng.normal(size=d), rng.normal(size=d)
        tp, tq = _tril(d, rng), _tril(d, rng)
        ref = float(ot.gaussian.bures_wasserstein_distance(mp, mq, _cov(tp), _cov(tq))) ** 2
        np.testing.assert_allclose(kl.w2_squared_mvn(mp, _cov(tp), mq, _cov(tq)), ref,
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(kl.w2_squared_mvn_tril(mp, tp, mq, tq), ref, rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(kl.w2_squared_mvn_tril(mq, tq, mp, tp), ref, rtol=1e-10,
                                   atol=1e-12)  # symmetric


def test_w2_diag_batched_is_the_full_formula_on_diagonal_covariances(x64):
    rng = np.random.default_rng(0)
    mp, mq = rng.normal(size=(4, 1, 3)), rng.normal(size=(5, 3))
    sp, sq = rng.uniform(0.3, 2, size=(4, 1, 3)), rng.uniform(0.3, 2, size=(5, 3))
    out = kl.w2_squared_diag(mp, sp, mq, sq)
    assert out.shape == (4, 5)
    full = kl.w2_squared_mvn(mp, jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(sp ** 2),
                             mq, jnp.vectorize(jnp.diag, signature="(d)->(d,d)")(sq ** 2))
    np.testing.assert_allclose(out, full, rtol=1e-10)
    for i in range(4):
        for j in range(5):
            ref = float(ot.gaussian.bures_wasserstein_distance(
                mp[i, 0], mq[j], np.diag(sp[i, 0] ** 2), np.diag(sq[j] ** 2))) ** 2
            np.testing.assert_allclose(out[i, j], ref, rtol=1e-10)


def test_w2_float32_close_covariances_do_not_cancel():
    """L_q = L_p + a 1e-5 perturbation: the trace formula tr Σ_p + tr Σ_q − 2‖L_qᵀL_p‖_* loses
    the Bures term (1.6e-9) to round-off in float32 (measured: 3.8e-6, wrong sign for 1e-4);
    the Procrustes residual keeps it to 0.1 %."""
    rng = np.random.default_rng(3)
    d = 8
    tp = _tril(d, rng)
    tq = tp + 1e-5 * np.tril(rng.normal(size=(d, d)))
    m = np.zeros(d)
    with jax.enable_x64(True):
        ref = float(kl.w2_squared_mvn_tril(m, tp, m, tq))
    got = float(kl.w2_squared_mvn_tril(m.astype(np.float32), tp.astype(np.float32),
                                       m.astype(np.float32), tq.astype(np.float32)))
    assert ref > 0
    assert abs(got - ref) < 0.01 * ref, (got, ref)


def test_w2_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(5)
    d = 3
    mp, mq, tp, tq = rng.normal(size=d), rng.normal(size=d), _tril(d, rng), _tril(d, rng)
    f = jax.jit(lambda a, b: kl.w2_squared_mvn_tril(a, b, mq, tq))
    g_loc, g_tril = jax.grad(f, argnums=(0, 1))(mp, tp)
    h = 1e-6
    for i in range(d):
        e = np.zeros(d)
        e[i] = h
        np.testing.assert_allclose(g_loc[i], (f(mp + e, tp) - f(mp - e, tp)) / (2 * h),
                                   rtol=1e-6, atol=1e-8)
        for j in range(i + 1):
            e2 = np.zeros((d, d))
            e2[i, j] = h
            np.testing.assert_allclose(g_tril[i, j],
                                       (f(mp, tp + e2) - f(mp, tp - e2)) / (2 * h),
                                       rtol=1e-6, atol=1e-8)
    # At p = q (all singular values of L_qᵀL_p repeated when L = I) the gradient is zero, not NaN.
    eye = np.eye(d)
    g = jax.grad(lambda t: kl.w2_squared_mvn_tril(mp, t, mp, eye))(eye)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.mark.parametrize("k, j, d", [(1, 1, 2), (2, 3, 1), (3, 2, 3), (4, 4, 2), (5, 1, 2)])
def test_mixture_w2_matches_pot(x64, k, j, d):
    rng = np.random.default_rng(10 * k + j + d)
    p, q = _mix(k, d, rng), _mix(j, d, rng)
    got = kl.mixture_w2_squared(Mixture(*p), Mixture(*q))
    np.testing.assert_allclose(got, _pot_mw2(p, q), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(kl.mixture_w2_squared(Mixture(*q), Mixture(*p)), got, rtol=1e-9)


def test_mixture_w2_single_gaussians_is_w2_and_zero_on_itself(x64):
    rng = np.random.default_rng(2)
    p, q = _mix(1, 3, rng), _mix(1, 3, rng)
    np.testing.assert_allclose(
        kl.mixture_w2_squared(Mixture(*p), Mixture(*q)),
        kl.w2_squared_mvn_tril(p[1][0], p[2][0], q[1][0], q[2][0]), rtol=1e-12)
    p = _mix(4, 3, rng)
    assert abs(float(kl.mixture_w2_squared(Mixture(*p), Mixture(*p)))) < 1e-12
    # A component of (numerically) zero weight is not transported.
    q = (np.append(p[0], -800.0), np.vstack([p[1], 50 * np.ones((1, 3))]),
         np.concatenate([p[2], p[2][:1]]))
    assert abs(float(kl.mixture_w2_squared(Mixture(*p), Mixture(*q)))) < 1e-12


def test_mixture_w2_batched_jit_vmap(x64):
    rng = np.random.default_rng(4)
    ps = [_mix(3, 2, rng) for _ in range(2)]
    qs = [_mix(2, 2, rng) for _ in range(3)]
    p = Mixture(*(np.stack(a)[:, None] for a in zip(*ps, strict=True)))  # batch (2, 1)
    q = Mixture(*(np.stack(a) for a in zip(*qs, strict=True)))  # batch (3,)
    out = jax.jit(kl.mixture_w2_squared)(p, q)
    assert out.shape == (2, 3)
    ref = np.array([[_pot_mw2(a, b) for b in qs] for a in ps])
    np.testing.assert_allclose(out, ref, rtol=1e-9)
    vm = jax.vmap(kl.mixture_w2_squared, in_axes=(None, 0))(Mixture(*ps[0]), q)
    np.testing.assert_allclose(vm, ref[0], rtol=1e-9)


def test_mixture_w2_gradients_match_finite_differences_of_pot(x64):
    """Plan for the costs, dual potentials for the weights: against central differences of
    POT's exact value."""
    rng = np.random.default_rng(8)
    p, q = _mix(3, 2, rng), _mix(2, 2, rng)
    grads = jax.grad(lambda a: kl.mixture_w2_squared(Mixture(*a), Mixture(*q)))(p)
    grads_q = jax.grad(lambda b: kl.mixture_w2_squared(Mixture(*p), Mixture(*b)))(q)
    h = 1e-6
    for which, params, g in ((0, p, grads), (1, q, grads_q)):
        for ai, arr in enumerate(params):
            for idx in np.ndindex(arr.shape):
                if ai == 2 and idx[-1] > idx[-2]:
                    continue  # above the diagonal: not read
                plus = [np.array(x, copy=True) for x in params]
                minus = [np.array(x, copy=True) for x in params]
                plus[ai][idx] += h
                minus[ai][idx] -= h
                pair_plus = (plus, q) if which == 0 else (p, plus)
                pair_minus = (minus, q) if which == 0 else (p, minus)
                fd = (_pot_mw2(*pair_plus) - _pot_mw2(*pair_minus)) / (2 * h)
                np.testing.assert_allclose(g[ai][idx], fd, rtol=1e-5, atol=1e-7,
                                           err_msg=f"{'pq'[which]}[{ai}]{idx}")


def test_mixture_w2_float32_agrees_with_float64():
    rng = np.random.default_rng(9)
    p, q = _mix(4, 3, rng), _mix(3, 3, rng)
    with jax.enable_x64(True):
        ref = float(kl.mixture_w2_squared(Mixture(*p), Mixture(*q)))
    p32, q32 = (Mixture(*(a.astype(np.float32) for a in m)) for m in (p, q))
    got = kl.mixture_w2_squared(p32, q32)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_bad_input_names_the_argument():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scale_q"):
        kl.w2_squared_diag(np.zeros(2), np.ones(2), np.zeros(2), -np.ones(2))
    with pytest.raises(ValueError, match="cov_p"):
        kl.w2_squared_mvn(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="event size"):
        kl.mixture_w2_squared(Mixture(*_mix(2, 2, rng)), Mixture(*_mix(2, 3, rng)))
    with pytest.raises(ValueError, match="`q`"):
        kl.mixture_w2_squared(Mixture(*_mix(2, 2, rng)), np.zeros(3))
