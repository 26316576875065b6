"""Issue 12, items 6: the public KL functions validate their arguments and float32 never fails or
misleads where float64 works: numerically singular covariances are refused, subnormal scales
computed right (or refused with a clear error), far-offset all-pairs KLs stay accurate under
jit. References are float64 (NumPy/SciPy, or jaxvi inside `jax.enable_x64(True)` on the very
same float32-rounded inputs); float32 results are compared at a loose tolerance.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import hilbert

from jaxvi import _linalg, kl
from jaxvi import objectives as O


def _kl_mvn_np(mp, cp, mq, cq):
    """KL(N(mp, cp) ‖ N(mq, cq)) in float64 NumPy (reference)."""
    mp, cp, mq, cq = (np.asarray(a, np.float64) for a in (mp, cp, mq, cq))
    d = mp.shape[-1]
    iq = np.linalg.inv(cq)
    diff = mq - mp
    return 0.5 * (np.trace(iq @ cp) + diff @ iq @ diff - d
                  + np.linalg.slogdet(cq)[1] - np.linalg.slogdet(cp)[1])


def _collinear_cov():
    r = np.random.default_rng(0)
    a = r.normal(size=(100, 1))
    x = np.hstack([a, a + 1e-4 * r.normal(size=(100, 1)), r.normal(size=(100, 1))])
    return np.cov(x.T)


# --------------------------------------------------------------------------------------------
# Item 6: kl.mvn on covariances float32 cannot factor
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["cov_p", "cov_q"])
@pytest.mark.parametrize("cov", [hilbert(8), _collinear_cov()], ids=["hilbert8", "collinear"])
def test_mvn_refuses_float32_numerically_singular_covariance(which, cov):
    d = cov.shape[0]
    c32 = cov.astype(np.float32)
    z, eye = np.zeros(d, np.float32), np.eye(d, dtype=np.float32)
    args = (z, c32, z, eye) if which == "cov_p" else (z, eye, z, c32)
    with pytest.raises(ValueError, match=rf"`{which}` is numerically singular in float32.*float64"):
        kl.mvn(*args)
    with jax.enable_x64(True):  # float64 works, and gives the right value
        got = float(kl.mvn(*(a.astype(np.float64) for a in args)))
    np.testing.assert_allclose(got, _kl_mvn_np(*args), rtol=1e-6)


def test_mixture_constructors_refuse_float32_singular_covariance():
    c32 = hilbert(8).astype(np.float32)[None]
    with pytest.raises(ValueError, match="`cov` is numerically singular in float32"):
        kl.GaussianMixture.from_covariance(np.zeros(1), np.zeros((1, 8)), c32)
    with pytest.raises(ValueError, match="`cov` is numerically singular in float32"):
        O.gaussian_mixture_target(np.ones(1), np.zeros((1, 8)), c32)


@settings(max_examples=12, deadline=None)
@given(log_cond=st.floats(0.0, 9.0), d=st.sampled_from([3, 8]), seed=st.integers(0, 2**16))
def test_float32_mvn_never_nan_nor_far_from_float64(log_cond, d, seed):
    """Over condition numbers 1 to 1e9: float32 either refuses clearly or agrees with float64
    on the same (float32-rounded) inputs. Never NaN, never a silently wrong value."""
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.normal(size=(d, d)))
    cov_q = ((q * np.logspace(0, -log_cond, d)) @ q.T).astype(np.float32)
    a = r.normal(size=(d, d))
    cov_p = (a @ a.T / d + np.eye(d)).astype(np.float32)
    mp, mq = r.normal(size=d).astype(np.float32), r.normal(size=d).astype(np.float32)
    with jax.enable_x64(True):
        ref = float(kl.mvn(mp.astype(float), cov_p.astype(float), mq.astype(float),
                           cov_q.astype(float)))
    try:
        got = float(kl.mvn(mp, cov_p, mq, cov_q))
    except ValueError as e:
        assert "numerically singular in float32" in str(e)
        assert log_cond > 4  # well-conditioned matrices are never refused
        return
    assert abs(got - ref) <= 2e-2 * max(abs(ref), 1.0), (got, ref)


def test_mvn_moderately_conditioned_float32_still_accepted():
    r = np.random.default_rng(1)
    q, _ = np.linalg.qr(r.normal(size=(6, 6)))
    cov = ((q * np.logspace(0, -3, 6)) @ q.T).astype(np.float32)  # cond 1e3
    m = r.normal(size=6).astype(np.float32)
    got = float(kl.mvn(m, np.eye(6, dtype=np.float32), np.zeros(6, np.float32), cov))
    np.testing.assert_allclose(got, _kl_mvn_np(m, np.eye(6), np.zeros(6), cov), rtol=1e-3)


# --------------------------------------------------------------------------------------------
# Item 6: subnormal scales
# --------------------------------------------------------------------------------------------


def _kl_diag_np(mp, sp, mq, sq):
    mp, sp, mq, sq = (np.asarray(a, np.float64) for a in (mp, sp, mq, sq))
    return 0.5 * np.sum((sp / sq) ** 2 - 1 - 2 * (np.log(sp) - np.log(sq))
                        + ((mp - mq) / sq) ** 2, axis=-1)


def test_normal_diag_subnormal_scale_p_is_exact():
    sp = np.full(3, 1e-40, np.float32)  # subnormal in float32
    ref = _kl_diag_np(np.zeros(3), sp, np.zeros(3), np.ones(3))  # 274.81
    np.testing.assert_allclose(ref, 274.8102, rtol=1e-6)
    got = kl.normal_diag(np.zeros(3, np.float32), sp, np.zeros(3, np.float32),
                         np.ones(3, np.float32))
    np.testing.assert_allclose(float(got), ref, rtol=1e-6)
    # The all-pairs layout too: p (2, 1, 3) against q (1, 4, 3).
    mq = np.random.default_rng(0).normal(size=(1, 4, 3)).astype(np.float32)
    got = kl.normal_diag(np.zeros((2, 1, 3), np.float32), np.broadcast_to(sp, (2, 1, 3)), mq,
                         np.ones((1, 4, 3), np.float32))
    np.testing.assert_allclose(
        got, _kl_diag_np(np.zeros((2, 1, 3)), np.full((2, 1, 3), sp[0]), mq, np.ones(3)),
        rtol=1e-6)


def test_normal_diag_subnormal_float64(x64):
    sp = np.array([1e-310, 2.0])
    got = float(kl.normal_diag(np.zeros(2), sp, np.zeros(2), np.ones(2)))
    np.testing.assert_allclose(got, _kl_diag_np(np.zeros(2), sp, np.zeros(2), np.ones(2)),
                               rtol=1e-12)


def test_mvn_tril_subnormal_scale_p_is_exact():
    lp = np.diag(np.array([1e-40, 0.5, 2.0], np.float32))
    lq = np.eye(3, dtype=np.float32)
    z = np.zeros(3, np.float32)
    ref = _kl_diag_np(z, np.diag(lp), z, np.ones(3))
    np.testing.assert_allclose(float(kl.mvn_tril(z, lp, z, lq)), ref, rtol=1e-6)
    pairs = kl.mvn_tril(np.zeros((2, 1, 3), np.float32), np.broadcast_to(lp, (2, 1, 3, 3)),
                        np.zeros((1, 3, 3), np.float32), np.broadcast_to(lq, (1, 3, 3, 3)))
    np.testing.assert_allclose(pairs, np.full((2, 3), ref), rtol=1e-6)


def test_subnormal_scale_q_is_refused_with_a_clear_error():
    z, one = np.zeros(3, np.float32), np.ones(3, np.float32)
    tiny = np.full(3, 1e-40, np.float32)
    with pytest.raises(ValueError, match=r"`scale_q` must be at least the smallest normal float32"):
        kl.normal_diag(z, one, z, tiny)
    with pytest.raises(ValueError, match=r"`scale_tril_q` must be at least the smallest normal"):
        kl.mvn_tril(z, np.eye(3, dtype=np.float32), z, np.diag(tiny))
    with pytest.raises(ValueError, match=r"`cov_q` is too small for float32"):
        kl.mvn(z, np.eye(3, dtype=np.float32), z, np.diag(tiny))


def test_log_positive_matches_float64_log():
    x = np.array([1e-45, 1e-40, 1.1e-38, 1.2e-38, 1e-30, 1.0, 3e38], np.float32)
    np.testing.assert_allclose(_linalg.log_positive(jnp.asarray(x)), np.log(x.astype(np.float64)),
                               rtol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(_linalg.log_positive(a)))(jnp.asarray(x))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[4:6], 1.0 / x[4:6], rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Item 6: all-pairs full covariance with a shared offset, under jit
# --------------------------------------------------------------------------------------------


def _offset_pairs(n=6, m=5, d=4, offset=1e5, seed=0):
    r = np.random.default_rng(seed)
    lp = (r.normal(size=(n, 1, d)) + offset).astype(np.float32)
    lq = (r.normal(size=(1, m, d)) + offset).astype(np.float32)
    a = r.normal(size=(n, 1, d, d))
    b = r.normal(size=(1, m, d, d))
    cp = (a @ np.swapaxes(a, -1, -2) / d + np.eye(d)).astype(np.float32)
    cq = (b @ np.swapaxes(b, -1, -2) / d + np.eye(d)).astype(np.float32)
    return lp, cp, lq, cq


@pytest.mark.parametrize("shape", [(6, 5, 4), (3, 7, 3), (50, 8, 8)])
def test_all_pairs_mvn_with_a_large_shared_offset_under_jit(shape):
    args = _offset_pairs(*shape)
    with jax.enable_x64(True):
        ref = np.asarray(kl.mvn(*(a.astype(np.float64) for a in args)))
    for fn in (kl.mvn, jax.jit(kl.mvn)):
        got = np.asarray(fn(*args))
        np.testing.assert_allclose(got, ref, rtol=1e-5)  # was 0.5 % under jit


def test_pairwise_sq_mahalanobis_full_translation_invariant_under_jit():
    lp, _, lq, cq = _offset_pairs()
    x, mean, prec = lp[:, 0], lq[0], np.linalg.inv(cq[0]).astype(np.float32)
    diff = x[:, None].astype(np.float64) - mean[None].astype(np.float64)
    ref = np.einsum("nki,kij,nkj->nk", diff, prec.astype(np.float64), diff)
    for fn in (_linalg.pairwise_sq_mahalanobis_full, jax.jit(_linalg.pairwise_sq_mahalanobis_full)):
        np.testing.assert_allclose(fn(x, mean, prec), ref, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Item 5: kl.categorical, the ELBO functions, wake-sleep
# --------------------------------------------------------------------------------------------


def test_categorical_with_no_category_is_refused():
    with pytest.raises(ValueError, match="`logits_p` must have at least one category"):
        kl.categorical(np.zeros((2, 0)), np.zeros((2, 0)))


def test_gaussian_mixture_log_prob_checks_event_size():
    mix = kl.GaussianMixture(np.zeros(2), np.zeros((2, 3)), np.broadcast_to(np.eye(3), (2, 3, 3)))
    np.testing.assert_allclose(mix.log_prob(np.zeros(3)), -1.5 * math.log(2 * math.pi),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="`x` and `loc`"):
        mix.log_prob(np.zeros(2))
