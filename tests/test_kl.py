"""Closed-form KL divergences of `jaxvi.kl`: against distrax and Monte Carlo in float64,
gradients against finite differences, broadcasting, the all-pairs fast path, jit/vmap, input
validation and `kl_divergence` dispatch."""

import distrax
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from jaxvi import kl

D = 3


def _tril(rng, shape, d=D):
    """Random lower-triangular factors with a positive diagonal. -> (*shape, d, d)."""
    off = np.tril(rng.normal(size=(*shape, d, d)) * 0.4, -1)
    diag = np.exp(0.3 * rng.normal(size=(*shape, d)))
    return off + diag[..., None, :] * np.eye(d)


def _params(rng, shape, d=D):
    """loc, scale_diag, scale_tril, cov for batch `shape`."""
    tril = _tril(rng, shape, d)
    return (rng.normal(size=(*shape, d)), np.exp(0.4 * rng.normal(size=(*shape, d))), tril,
            tril @ np.swapaxes(tril, -1, -2))


# Batch shapes: the all-pairs pattern (fast path) and plain broadcasting (elementwise path).
SHAPES = [((3, 1), (1, 4)), ((2, 3, 1), (2, 1, 4)), ((3, 4), (4,)), ((), (2,))]


def _bcast(a, batch, k):
    return jnp.broadcast_to(a, (*batch, *a.shape[a.ndim - k:]))


@pytest.mark.parametrize("shape_p,shape_q", SHAPES)
def test_closed_forms_match_distrax(x64, shape_p, shape_q):
    rng = np.random.default_rng(0)
    lp, sp, tp, cp = _params(rng, shape_p)
    lq, sq, tq, cq = _params(rng, shape_q)
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
    elementwise_diag = jax.jit(kl._normal_diag_elementwise)
    elementwise_full = jax.jit(kl._mvn_from_tril_elementwise)
    for d in (1, 6):
        lp, sp, tp, cp = (jnp.asarray(a) for a in _params(rng, (2, 5, 1), d))
        lq, sq, tq, cq = (jnp.asarray(a) for a in _params(rng, (2, 1, 6), d))
        lp = lp + 30.0  # far from the origin: the centring in the pairwise kernels matters
        lq = lq + 30.0
        assert kl._all_pairs_layout((2, 5, 1), (2, 1, 6)) == ((2,), 5, 6)
        np.testing.assert_allclose(kl.normal_diag(lp, sp, lq, sq),
                                   elementwise_diag(lp, sp, lq, sq), rtol=1e-11)
        np.testing.assert_allclose(kl.mvn_tril(lp, tp, lq, tq),
                                   elementwise_full(lp, tp, lq, tq), rtol=1e-10)
        np.testing.assert_allclose(
            kl.mvn(lp, cp, lq, cq),
            elementwise_full(lp, jnp.linalg.cholesky(cp), lq, jnp.linalg.cholesky(cq)),
            rtol=1e-10)


def test_all_pairs_layout_detection():
    assert kl._all_pairs_layout((7, 1), (1, 5)) == ((), 7, 5)
    assert kl._all_pairs_layout((7, 1), (5,)) == ((), 7, 5)
    assert kl._all_pairs_layout((7, 5), (1, 5)) is None
    assert kl._all_pairs_layout((1, 1), (1, 5)) is None
    assert kl._all_pairs_layout((2, 7, 1), (3, 1, 5)) is None
    assert kl._all_pairs_layout((7,), (5,)) is None


def test_closed_forms_match_monte_carlo(x64):
    """Each closed form equals a large Monte Carlo estimate (within 5 standard errors)."""
    rng = np.random.default_rng(2)
    lp, sp, tp, _ = _params(rng, (2, 1))
    lq, sq, tq, _ = _params(rng, (1, 3))
    batch = (2, 3)
    keys = jax.random.split(jax.random.key(0), 3)
    n = 20_000

    @jax.jit
    def mc_fn(key, p, q):
        return kl.monte_carlo(key, p, q, n)

    def check(closed, p, q, key):
        mc = mc_fn(key, p, q)
        assert mc.estimate.shape == batch
        assert np.all(np.abs(np.asarray(closed) - mc.estimate) < 5 * mc.stderr + 1e-9)

    check(kl.normal_diag(lp, sp, lq, sq),
          distrax.MultivariateNormalDiag(*(_bcast(jnp.asarray(a), batch, 1) for a in (lp, sp))),
          distrax.MultivariateNormalDiag(*(_bcast(jnp.asarray(a), batch, 1) for a in (lq, sq))),
          keys[0])
    check(kl.mvn_tril(lp, tp, lq, tq),
          distrax.MultivariateNormalTri(_bcast(jnp.asarray(lp), batch, 1),
                                        _bcast(jnp.asarray(tp), batch, 2)),
          distrax.MultivariateNormalTri(_bcast(jnp.asarray(lq), batch, 1),
                                        _bcast(jnp.asarray(tq), batch, 2)),
          keys[1])
    logits_p, logits_q = rng.normal(size=(2, 1, 4)), rng.normal(size=(1, 3, 4))
    check(kl.categorical(logits_p, logits_q),
          distrax.Categorical(logits=_bcast(jnp.asarray(logits_p), batch, 1)),
          distrax.Categorical(logits=_bcast(jnp.asarray(logits_q), batch, 1)), keys[2])


@pytest.mark.parametrize("pairs", [False, True])
def test_gradients_match_finite_differences(x64, pairs):
    rng = np.random.default_rng(3)
    shape_p, shape_q = ((2, 1), (1, 2)) if pairs else ((2,), (2,))
    lp, sp, tp, cp = (jnp.asarray(a) for a in _params(rng, shape_p))
    lq, sq, tq, cq = (jnp.asarray(a) for a in _params(rng, shape_q))
    tol = {"atol": 1e-5, "rtol": 1e-5, "order": 1, "modes": ("rev",)}
    check_grads(jax.jit(lambda *a: jnp.sum(kl.normal_diag(*a))), (lp, sp, lq, sq), **tol)
    check_grads(jax.jit(lambda *a: jnp.sum(kl.mvn_tril(*a))), (lp, tp, lq, tq), **tol)
    # Perturb covariances only along symmetric directions (the function symmetrises anyway).
    check_grads(jax.jit(lambda lp, cp, lq, cq: jnp.sum(
        kl.mvn(lp, kl._linalg.symmetrize(cp), lq, kl._linalg.symmetrize(cq)))),
                (lp, cp, lq, cq), eps=1e-5, **tol)
    logits_p, logits_q = jnp.asarray(rng.normal(size=(*shape_p, 4))), jnp.asarray(
        rng.normal(size=(*shape_q, 4)))
    check_grads(jax.jit(lambda *a: jnp.sum(kl.categorical(*a))), (logits_p, logits_q), **tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gradient_finite_and_zero_at_p_equals_q(x64, dtype):
    rng = np.random.default_rng(4)
    loc, scale, tril, cov = (jnp.asarray(a, dtype) for a in _params(rng, (3,)))
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
    lp, _, tp, _ = _params(rng, shape_p)
    lq, _, tq, _ = _params(rng, shape_q)
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
    lp, sp, tp, cp = _params(rng, (4,))
    lq, sq, tq, cq = _params(rng, (4,))
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
        lp, sp, _, _ = _params(rng, shape_p, 2)
        lq, sq, _, _ = _params(rng, shape_q, 2)
        got = kl.normal_diag(lp, sp, lq, sq)
        batch = np.broadcast_shapes(shape_p, shape_q)
        assert got.shape == batch
        want = kl._normal_diag_elementwise(*(np.broadcast_to(a, (*batch, 2))
                                             for a in (lp, sp, lq, sq)))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_bad_input_raises_naming_the_argument():
    rng = np.random.default_rng(7)
    loc, scale, tril, cov = _params(rng, (2,))
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
    with pytest.raises(ValueError, match="num_samples"):
        kl.monte_carlo(jax.random.key(0), distrax.Normal(0.0, 1.0), distrax.Normal(0.0, 1.0), 1)
    with pytest.raises(ValueError, match="`q`"):
        kl.monte_carlo(jax.random.key(0), distrax.Normal(0.0, 1.0), object(), 10)


def test_no_value_checks_under_jit():
    """Under jit the checks are skipped (no concretisation error); shapes still checked."""
    loc, scale = jnp.zeros((2, 3)), jnp.ones((2, 3))
    assert jax.jit(kl.normal_diag)(loc, scale, loc, scale).shape == (2,)
    with pytest.raises(ValueError, match="loc_q"):
        jax.jit(kl.normal_diag)(loc, scale, loc[:, :2], scale[:, :2])


def test_kl_divergence_dispatch(x64):
    rng = np.random.default_rng(8)
    lp, sp, tp, cp = (jnp.asarray(a) for a in _params(rng, (2,)))
    lq, sq, tq, cq = (jnp.asarray(a) for a in _params(rng, (2,)))
    diag_p, diag_q = distrax.MultivariateNormalDiag(lp, sp), distrax.MultivariateNormalDiag(lq, sq)
    tri_p, tri_q = distrax.MultivariateNormalTri(lp, tp), distrax.MultivariateNormalTri(lq, tq)
    full_p = distrax.MultivariateNormalFullCovariance(lp, cp)
    full_q = distrax.MultivariateNormalFullCovariance(lq, cq)
    for p, q in [(diag_p, diag_q), (tri_p, tri_q), (full_p, full_q), (diag_p, tri_q),
                 (full_p, diag_q), (tri_p, full_q)]:
        np.testing.assert_allclose(kl.kl_divergence(p, q), p.kl_divergence(q), rtol=1e-10)
    normal_p, normal_q = distrax.Normal(lp, sp), distrax.Normal(lq, sq)
    np.testing.assert_allclose(kl.kl_divergence(normal_p, normal_q),
                               normal_p.kl_divergence(normal_q), rtol=1e-10)
    cat_p, cat_q = distrax.Categorical(logits=lp), distrax.Categorical(logits=lq)
    np.testing.assert_allclose(kl.kl_divergence(cat_p, cat_q), cat_p.kl_divergence(cat_q),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="`p` and `q`"):
        kl.kl_divergence(normal_p, cat_q)
    with pytest.raises(ValueError, match="method"):
        kl.kl_divergence(diag_p, diag_q, method="nope")
