"""Closed-form KL divergences (`jaxvi.kl.gaussian`): against distrax in float64, gradients
against finite differences, broadcasting, the all-pairs fast path, jit/vmap, input validation;
float32 never fails or misleads where float64 works (numerically singular covariances refused,
subnormal scales computed right or refused with a clear error, far-offset all-pairs KLs
accurate under jit). References are float64 (NumPy/SciPy, or jaxvi inside
`jax.enable_x64(True)` on the very same float32-rounded inputs); float32 results are compared
at a loose tolerance."""

import distrax
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy.linalg import hilbert
from shared_inputs import mvn_kl_np, random_gaussian_params

from jaxvi import _linalg, kl
from jaxvi.kl import _layout, gaussian

D = 3


SHAPES = [((3, 1), (1, 4)), ((2, 3, 1), (2, 1, 4)), ((3, 4), (4,)), ((), (2,))]


def _bcast(a, batch, k):
    return jnp.broadcast_to(a, (*batch, *a.shape[a.ndim - k:]))


@pytest.mark.parametrize("shape_p,shape_q", SHAPES)
def test_closed_forms_match_distrax(x64, shape_p, shape_q):
    rng = np.random.default_rng(0)
    lp, sp, tp, cp = random_gaussian_params(rng, shape_p)
    lq, sq, tq, cq = random_gaussian_params(rng, shape_q)
    batch = np.broadcast_shapes(shape_p, shape_q)

    logits_p, logits_q = 2 * rng.normal(size=(*shape_p, 5)), 2 * rng.normal(size=(*shape_q, 5))

    @jax.jit
    def reference(lp, sp, tp, cp, lq, sq, tq, cq, logits_p, logits_q):
        def pair(cls, a, b, c, d, ks):
            return cls(_bcast(a, batch, 1), _bcast(b, batch, ks)).kl_divergence(
                cls(_bcast(c, batch, 1), _bcast(d, batch, ks)))

        return (pair(distrax.MultivariateNormalDiag, lp, sp, lq, sq, 1),
                pair(distrax.MultivariateNormalTri, lp, tp, lq, tq, 2),
                pair(distrax.MultivariateNormalFullCovariance, lp, cp, lq, cq, 2),
                distrax.Categorical(logits=_bcast(logits_p, batch, 1)).kl_divergence(
                    distrax.Categorical(logits=_bcast(logits_q, batch, 1))))

    want = reference(lp, sp, tp, cp, lq, sq, tq, cq, logits_p, logits_q)
    got = (kl.normal_diag(lp, sp, lq, sq), kl.mvn_tril(lp, tp, lq, tq), kl.mvn(lp, cp, lq, cq),
           kl.categorical(logits_p, logits_q))
    for g, w in zip(got, want, strict=True):
        assert g.shape == batch and g.dtype == jnp.float64
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_fast_path_equals_elementwise(x64):
    """The factored all-pairs path agrees with the per-pair formula to float64 round-off."""
    rng = np.random.default_rng(1)
    elementwise_diag = jax.jit(gaussian._normal_diag_elementwise)
    elementwise_full = jax.jit(gaussian._mvn_from_tril_elementwise)
    for d in (1, 6):
        lp, sp, tp, cp = (jnp.asarray(a) for a in random_gaussian_params(rng, (2, 5, 1), d))
        lq, sq, tq, cq = (jnp.asarray(a) for a in random_gaussian_params(rng, (2, 1, 6), d))
        lp = lp + 30.0  # far from the origin: the centring in the pairwise kernels matters
        lq = lq + 30.0
        assert _layout.all_pairs_layout((2, 5, 1), (2, 1, 6)) == ((2,), 5, 6)
        np.testing.assert_allclose(kl.normal_diag(lp, sp, lq, sq),
                                   elementwise_diag(lp, sp, lq, sq), rtol=1e-11)
        np.testing.assert_allclose(kl.mvn_tril(lp, tp, lq, tq),
                                   elementwise_full(lp, tp, lq, tq), rtol=1e-10)
        np.testing.assert_allclose(
            kl.mvn(lp, cp, lq, cq),
            elementwise_full(lp, jnp.linalg.cholesky(cp), lq, jnp.linalg.cholesky(cq)),
            rtol=1e-10)


def test_all_pairs_layout_detection():
    assert _layout.all_pairs_layout((7, 1), (1, 5)) == ((), 7, 5)
    assert _layout.all_pairs_layout((7, 1), (5,)) == ((), 7, 5)
    assert _layout.all_pairs_layout((7, 5), (1, 5)) is None
    assert _layout.all_pairs_layout((1, 1), (1, 5)) is None
    assert _layout.all_pairs_layout((2, 7, 1), (3, 1, 5)) is None
    assert _layout.all_pairs_layout((7,), (5,)) is None


@pytest.mark.parametrize("pairs", [False, True])
def test_gradients_match_finite_differences(x64, pairs):
    rng = np.random.default_rng(3)
    shape_p, shape_q = ((2, 1), (1, 2)) if pairs else ((2,), (2,))
    lp, sp, tp, cp = (jnp.asarray(a) for a in random_gaussian_params(rng, shape_p))
    lq, sq, tq, cq = (jnp.asarray(a) for a in random_gaussian_params(rng, shape_q))
    tol = {"atol": 1e-5, "rtol": 1e-5, "order": 1, "modes": ("rev",)}
    check_grads(jax.jit(lambda *a: jnp.sum(kl.normal_diag(*a))), (lp, sp, lq, sq), **tol)
    check_grads(jax.jit(lambda *a: jnp.sum(kl.mvn_tril(*a))), (lp, tp, lq, tq), **tol)
    # Perturb covariances only along symmetric directions (the function symmetrises anyway).
    check_grads(jax.jit(lambda lp, cp, lq, cq: jnp.sum(
        kl.mvn(lp, _linalg.symmetrize(cp), lq, _linalg.symmetrize(cq)))),
                (lp, cp, lq, cq), eps=1e-5, **tol)
    logits_p, logits_q = jnp.asarray(rng.normal(size=(*shape_p, 4))), jnp.asarray(
        rng.normal(size=(*shape_q, 4)))
    check_grads(jax.jit(lambda *a: jnp.sum(kl.categorical(*a))), (logits_p, logits_q), **tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gradient_finite_and_zero_at_p_equals_q(x64, dtype):
    rng = np.random.default_rng(4)
    loc, scale, tril, cov = (jnp.asarray(a, dtype) for a in random_gaussian_params(rng, (3,)))
    logits = jnp.asarray(rng.normal(size=(3, 5)), dtype)
    cases = [
        (kl.normal_diag, (loc, scale, loc, scale)),
        (kl.mvn_tril, (loc, tril, loc, tril)),
        (kl.mvn, (loc, cov, loc, cov)),
        (kl.categorical, (logits, logits)),
    ]
    for fn, args in cases:
        value = fn(*args)
        grads = jax.grad(lambda *a, fn=fn: jnp.sum(fn(*a)), argnums=(0, 1, 2, 3)[: len(args)])(
            *args)
        np.testing.assert_allclose(value, 0.0, atol=1e-5 if dtype == jnp.float32 else 1e-12)
        for g in grads:
            assert g.dtype == dtype
            assert np.all(np.isfinite(g)), fn.__name__
            np.testing.assert_allclose(g, 0.0, atol=1e-4 if dtype == jnp.float32 else 1e-10)


@pytest.mark.parametrize("shape_p,shape_q", [((2,), (2,)), ((3, 1), (1, 2))])
def test_zero_gradient_above_diagonal_of_scale_tril(x64, shape_p, shape_q):
    rng = np.random.default_rng(5)
    lp, _, tp, _ = random_gaussian_params(rng, shape_p)
    lq, _, tq, _ = random_gaussian_params(rng, shape_q)
    # Garbage above the diagonal must be ignored, and get exactly zero gradient.
    tp_dirty = tp + np.triu(rng.normal(size=tp.shape), 1)
    tq_dirty = tq + np.triu(rng.normal(size=tq.shape), 1)
    np.testing.assert_allclose(kl.mvn_tril(lp, tp_dirty, lq, tq_dirty), kl.mvn_tril(lp, tp, lq, tq),
                               rtol=1e-12)
    g_p, g_q = jax.grad(lambda a, b: jnp.sum(kl.mvn_tril(lp, a, lq, b)), argnums=(0, 1))(
        jnp.asarray(tp_dirty), jnp.asarray(tq_dirty))
    upper = np.triu(np.ones((D, D), bool), 1)
    assert np.all(np.asarray(g_p)[..., upper] == 0.0)
    assert np.all(np.asarray(g_q)[..., upper] == 0.0)
    assert np.any(np.asarray(g_p)[..., ~upper] != 0.0)


def test_jit_vmap_and_float32(x64):
    rng = np.random.default_rng(6)
    lp, sp, tp, cp = random_gaussian_params(rng, (4,))
    lq, sq, tq, cq = random_gaussian_params(rng, (4,))
    for fn, args in [(kl.normal_diag, (lp, sp, lq, sq)), (kl.mvn_tril, (lp, tp, lq, tq)),
                     (kl.mvn, (lp, cp, lq, cq))]:
        eager = fn(*args)
        np.testing.assert_allclose(jax.jit(fn)(*args), eager, rtol=1e-12)
        np.testing.assert_allclose(jax.vmap(fn)(*args), eager, rtol=1e-12)
        f32 = fn(*(np.asarray(a, np.float32) for a in args))
        assert f32.dtype == jnp.float32
        np.testing.assert_allclose(f32, eager, rtol=2e-4, atol=1e-5)
        # the all-pairs fast path in float32 too
        pairs32 = fn(*(np.asarray(a, np.float32)[:, None] if i < 2 else
                       np.asarray(a, np.float32)[None] for i, a in enumerate(args)))
        pairs64 = fn(*(np.asarray(a)[:, None] if i < 2 else np.asarray(a)[None]
                       for i, a in enumerate(args)))
        assert pairs32.shape == (4, 4)
        np.testing.assert_allclose(pairs32, pairs64, rtol=1e-3, atol=1e-4)


def test_categorical_stability(x64):
    # Very negative logits in float32: no overflow, matches float64.
    lp32 = jnp.array([0.0, -1e4, -1e30, 2.0], jnp.float32)
    lq32 = jnp.array([-1e4, 0.0, 1.0, -5.0], jnp.float32)
    v32 = kl.categorical(lp32, lq32)
    g32 = jax.grad(kl.categorical, argnums=(0, 1))(lp32, lq32)
    assert np.isfinite(v32) and all(np.all(np.isfinite(g)) for g in g32)
    p = jax.nn.softmax(jnp.asarray(lp32, jnp.float64))
    logq = jax.nn.log_softmax(jnp.asarray(lq32, jnp.float64))
    want = float(jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - logq), 0.0)))
    np.testing.assert_allclose(v32, want, rtol=1e-5)
    # Zero-probability categories of p (logit −inf): exactly the KL on p's support.
    lp = jnp.array([-jnp.inf, 0.3, -jnp.inf, 1.0])
    lq = jnp.array([5.0, 0.1, -2.0, 0.4])
    v = kl.categorical(lp, lq)
    g_p, g_q = jax.grad(kl.categorical, argnums=(0, 1))(lp, lq)
    p_s = jax.nn.softmax(jnp.array([0.3, 1.0]))
    q_all = jax.nn.softmax(lq)
    np.testing.assert_allclose(v, jnp.sum(p_s * jnp.log(p_s / q_all[jnp.array([1, 3])])),
                               rtol=1e-12)
    assert np.all(np.isfinite(g_p)) and np.all(np.isfinite(g_q))
    assert g_p[0] == 0.0 and g_p[2] == 0.0
    # q = 0 where p > 0: +inf, not NaN.
    assert kl.categorical(jnp.array([0.0, 0.0]), jnp.array([0.0, -jnp.inf])) == jnp.inf


_probs = hnp.arrays(np.float64, 4, elements=st.floats(0.0, 1.0)).filter(lambda a: a.sum() > 1e-3)


@settings(max_examples=25, deadline=None)
@given(p1=_probs, p2=_probs, q1=_probs, q2=_probs, lam=st.floats(0.0, 1.0))
def test_categorical_joint_convexity_and_nonnegativity(p1, p2, q1, q2, lam):
    with jax.enable_x64(True):
        q1, q2 = q1 + 1e-3, q2 + 1e-3  # q > 0 everywhere so every KL is finite
        p1, p2, q1, q2 = (a / a.sum() for a in (p1, p2, q1, q2))

        def kl_probs(p, q):
            with np.errstate(divide="ignore"):
                return float(kl.categorical(np.log(p), np.log(q)))

        mixed = kl_probs(lam * p1 + (1 - lam) * p2, lam * q1 + (1 - lam) * q2)
        sides = lam * kl_probs(p1, q1) + (1 - lam) * kl_probs(p2, q2)
        assert mixed <= sides + 1e-10
        assert kl_probs(p1, q1) >= -1e-12
        assert abs(kl_probs(p1, p1)) < 1e-12


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_normal_diag_broadcasting_property(data):
    """Any broadcastable pair of batch shapes gives the broadcast shape and the per-pair value."""
    with jax.enable_x64(True):
        shape_p = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
        shape_q = data.draw(hnp.broadcastable_shapes(shape_p, min_dims=0, max_dims=3, max_side=3))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        lp, sp, _, _ = random_gaussian_params(rng, shape_p, 2)
        lq, sq, _, _ = random_gaussian_params(rng, shape_q, 2)
        got = kl.normal_diag(lp, sp, lq, sq)
        batch = np.broadcast_shapes(shape_p, shape_q)
        assert got.shape == batch
        want = gaussian._normal_diag_elementwise(*(np.broadcast_to(a, (*batch, 2))
                                             for a in (lp, sp, lq, sq)))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_bad_input_raises_naming_the_argument():
    rng = np.random.default_rng(7)
    loc, scale, tril, cov = random_gaussian_params(rng, (2,))
    bad_loc = loc.copy()
    bad_loc[0, 1] = np.nan
    cases = [
        (kl.normal_diag, (loc, scale, loc[:, :2], scale[:, :2]), "loc_q"),
        (kl.normal_diag, (loc, -scale, loc, scale), "scale_p"),
        (kl.normal_diag, (loc, scale, loc, 0 * scale), "scale_q"),
        (kl.normal_diag, (bad_loc, scale, loc, scale), "loc_p"),
        (kl.normal_diag, (loc, scale, np.ones((3, D)), scale), "loc_q"),  # batch (2,) vs (3,)
        (kl.mvn, (loc, cov, loc, -cov), "cov_q"),
        (kl.mvn, (loc, cov[:, :2, :2], loc, cov), "cov_p"),
        (kl.mvn, (loc, cov, loc, cov + np.triu(np.ones((D, D)), 1)), "cov_q"),  # not symmetric
        (kl.mvn, (loc, cov * np.nan, loc, cov), "cov_p"),
        (kl.mvn_tril, (loc, -tril, loc, tril), "scale_tril_p"),
        (kl.mvn_tril, (loc, tril, loc, tril[..., 0]), "scale_tril_q"),
        (kl.mvn_tril, (loc[..., None][..., 0], tril, np.ones(4), tril), "loc_q"),
        (kl.categorical, (np.array([0.0, np.nan]), np.zeros(2)), "logits_p"),
        (kl.categorical, (np.zeros(2), np.zeros(3)), "logits_q"),
        (kl.categorical, (np.zeros(2), np.array([-np.inf, -np.inf])), "logits_q"),
    ]
    for fn, args, name in cases:
        with pytest.raises(ValueError, match=f"`{name}`"):
            fn(*args)


def test_no_value_checks_under_jit():
    """Under jit the checks are skipped (no concretisation error); shapes still checked."""
    loc, scale = jnp.zeros((2, 3)), jnp.ones((2, 3))
    assert jax.jit(kl.normal_diag)(loc, scale, loc, scale).shape == (2,)
    with pytest.raises(ValueError, match="loc_q"):
        jax.jit(kl.normal_diag)(loc, scale, loc[:, :2], scale[:, :2])


def test_categorical_with_no_category_is_refused():
    with pytest.raises(ValueError, match="`logits_p` must have at least one category"):
        kl.categorical(np.zeros((2, 0)), np.zeros((2, 0)))


# --------------------------------------------------------------------------------------------
# mvn on covariances that float32 cannot factor
# --------------------------------------------------------------------------------------------


def _collinear_cov():
    r = np.random.default_rng(0)
    a = r.normal(size=(100, 1))
    x = np.hstack([a, a + 1e-4 * r.normal(size=(100, 1)), r.normal(size=(100, 1))])
    return np.cov(x.T)


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
    np.testing.assert_allclose(got, mvn_kl_np(*args), rtol=1e-6)


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
        try:
            ref = float(kl.mvn(mp.astype(float), cov_p.astype(float), mq.astype(float),
                               cov_q.astype(float)))
        except ValueError as e:  # rounding to float32 left cov_q not positive definite
            assert "`cov_q` must be positive definite" in str(e)
            ref = None
    if ref is None:  # then float32 refuses it too, naming it
        with pytest.raises(ValueError, match="`cov_q`"):
            kl.mvn(mp, cov_p, mq, cov_q)
        return
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
    np.testing.assert_allclose(got, mvn_kl_np(m, np.eye(6), np.zeros(6), cov), rtol=1e-3)


# --------------------------------------------------------------------------------------------
# Subnormal scales
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


# --------------------------------------------------------------------------------------------
# All-pairs full covariance with a shared offset, under jit
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
        np.testing.assert_allclose(got, ref, rtol=1e-5)
