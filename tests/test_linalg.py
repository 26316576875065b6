"""`jaxvi._linalg`: every public function against an independent float64 NumPy/SciPy reference
(the pairwise kernels against a plain einsum, with translation invariance and a large common
offset in float32); the floored Cholesky on singular matrices; subnormal logs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import solve_triangular
from scipy.stats import norm

from jaxvi import _linalg


def _spd(rng, shape, d):
    a = rng.normal(size=(*shape, d, d))
    return a @ np.swapaxes(a, -1, -2) / d + 0.5 * np.eye(d)


def _tril(rng, shape, d):
    off = np.tril(rng.normal(size=(*shape, d, d)) * 0.4, -1)
    return off + np.exp(0.3 * rng.normal(size=(*shape, d)))[..., None, :] * np.eye(d)


def test_log_2pi():
    assert _linalg.LOG_2PI == pytest.approx(np.log(2 * np.pi), rel=1e-15)


# --------------------------------------------------------------------------------------------
# Factors, solves, determinants
# --------------------------------------------------------------------------------------------


def test_symmetrize_and_tril_only(x64):
    a = np.random.default_rng(0).normal(size=(2, 4, 4))
    np.testing.assert_array_equal(_linalg.symmetrize(a), 0.5 * (a + np.swapaxes(a, -1, -2)))
    np.testing.assert_array_equal(_linalg.tril_only(a), np.tril(a))


def test_cholesky_with_and_without_jitter(x64):
    rng = np.random.default_rng(1)
    cov = _spd(rng, (3,), 4)
    skew = np.triu(rng.normal(size=(4, 4)), 1) * 1e-3
    asym = cov + skew - np.swapaxes(skew, -1, -2)  # its symmetric part is cov
    np.testing.assert_allclose(_linalg.cholesky(asym), np.linalg.cholesky(cov), rtol=1e-12)
    np.testing.assert_allclose(_linalg.cholesky(cov, jitter=0.25),
                               np.linalg.cholesky(cov + 0.25 * np.eye(4)), rtol=1e-12)


def test_triangular_solves_inverse_logdet_precision(x64):
    rng = np.random.default_rng(2)
    l = _tril(rng, (2, 1), 4)  # batch (2, 1) against b's (3,): broadcast to (2, 3)
    b = rng.normal(size=(3, 4, 5))
    got = _linalg.solve_tril(l, b)
    assert got.shape == (2, 3, 4, 5)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(got[i, j], solve_triangular(l[i, 0], b[j], lower=True),
                                       rtol=1e-12, atol=1e-14)
    v = rng.normal(size=(2, 1, 4))
    np.testing.assert_allclose(_linalg.solve_tril(l, v[..., None])[..., 0],
                               np.linalg.solve(l, v[..., None])[..., 0], rtol=1e-12, atol=1e-14)
    inv = np.asarray(_linalg.tril_inverse(l))
    np.testing.assert_allclose(inv, np.linalg.inv(l), rtol=1e-12, atol=1e-14)
    assert np.all(np.triu(inv, 1) == 0.0)
    cov = l @ np.swapaxes(l, -1, -2)
    np.testing.assert_allclose(_linalg.logdet_tril(l), np.linalg.slogdet(cov)[1], rtol=1e-12)
    # |diag| is used: a factor with negative diagonal entries has the same determinant.
    np.testing.assert_allclose(_linalg.logdet_tril(-l), np.linalg.slogdet(cov)[1], rtol=1e-12)
    np.testing.assert_allclose(_linalg.precision_from_tril(l), np.linalg.inv(cov), rtol=1e-10,
                               atol=1e-12)


# --------------------------------------------------------------------------------------------
# Pairwise kernels
# --------------------------------------------------------------------------------------------


def _maha_diag_ref(x, mean, inv_var, x_var=None):
    x, mean, inv_var = (np.asarray(a, np.float64) for a in (x, mean, inv_var))
    diff = x[:, None, :] - mean[None, :, :]
    out = np.einsum("nkd,kd->nk", diff * diff, inv_var)
    if x_var is not None:
        out = out + np.einsum("nd,kd->nk", np.asarray(x_var, np.float64), inv_var)
    return out


def _maha_full_ref(x, mean, prec):
    x, mean, prec = (np.asarray(a, np.float64) for a in (x, mean, prec))
    diff = x[:, None, :] - mean[None, :, :]
    return np.einsum("nki,kij,nkj->nk", diff, prec, diff)


@pytest.mark.parametrize("with_var", [False, True])
def test_pairwise_sq_mahalanobis_diag_against_einsum(x64, with_var):
    rng = np.random.default_rng(3)
    x, mean = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
    inv_var = np.exp(rng.normal(size=(4, 5)))
    x_var = np.exp(rng.normal(size=(7, 5))) if with_var else None
    want = _maha_diag_ref(x, mean, inv_var, x_var)
    for fn in (_linalg.pairwise_sq_mahalanobis_diag,
               jax.jit(_linalg.pairwise_sq_mahalanobis_diag)):
        np.testing.assert_allclose(fn(x, mean, inv_var, x_var), want, rtol=1e-12)
    # Translation invariance: moving x and the means together changes nothing.
    shifted = _linalg.pairwise_sq_mahalanobis_diag(x + 3.7, mean + 3.7, inv_var, x_var)
    np.testing.assert_allclose(shifted, want, rtol=1e-11)


def test_pairwise_sq_mahalanobis_full_against_einsum(x64):
    rng = np.random.default_rng(4)
    x, mean = rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    prec = np.linalg.inv(_spd(rng, (5,), 3))
    want = _maha_full_ref(x, mean, prec)
    for fn in (_linalg.pairwise_sq_mahalanobis_full,
               jax.jit(_linalg.pairwise_sq_mahalanobis_full)):
        np.testing.assert_allclose(fn(x, mean, prec), want, rtol=1e-11)
    shifted = _linalg.pairwise_sq_mahalanobis_full(x - 2.5, mean - 2.5, prec)
    np.testing.assert_allclose(shifted, want, rtol=1e-10)


def test_pairwise_sq_mahalanobis_diag_large_common_offset_float32():
    """Data and means 1e5 from the origin in float32: the centring keeps the expansion from
    cancelling (the reference is float64 on the same float32-rounded inputs)."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(20, 4)) + 1e5).astype(np.float32)
    mean = (rng.normal(size=(6, 4)) + 1e5).astype(np.float32)
    inv_var = np.exp(rng.normal(size=(6, 4))).astype(np.float32)
    x_var = np.exp(rng.normal(size=(20, 4))).astype(np.float32)
    for fn in (_linalg.pairwise_sq_mahalanobis_diag,
               jax.jit(_linalg.pairwise_sq_mahalanobis_diag)):
        np.testing.assert_allclose(fn(x, mean, inv_var), _maha_diag_ref(x, mean, inv_var),
                                   rtol=1e-4)
        np.testing.assert_allclose(fn(x, mean, inv_var, x_var),
                                   _maha_diag_ref(x, mean, inv_var, x_var), rtol=1e-4)


def _offset_pairs(n=6, m=5, d=4, offset=1e5, seed=0):
    r = np.random.default_rng(seed)
    lp = (r.normal(size=(n, 1, d)) + offset).astype(np.float32)
    lq = (r.normal(size=(1, m, d)) + offset).astype(np.float32)
    b = r.normal(size=(1, m, d, d))
    cq = (b @ np.swapaxes(b, -1, -2) / d + np.eye(d)).astype(np.float32)
    return lp, lq, cq


def test_pairwise_sq_mahalanobis_full_translation_invariant_under_jit():
    lp, lq, cq = _offset_pairs()
    x, mean, prec = lp[:, 0], lq[0], np.linalg.inv(cq[0]).astype(np.float32)
    diff = x[:, None].astype(np.float64) - mean[None].astype(np.float64)
    ref = np.einsum("nki,kij,nkj->nk", diff, prec.astype(np.float64), diff)
    for fn in (_linalg.pairwise_sq_mahalanobis_full, jax.jit(_linalg.pairwise_sq_mahalanobis_full)):
        np.testing.assert_allclose(fn(x, mean, prec), ref, rtol=1e-5)


def test_diag_normal_log_probs_against_scipy(x64):
    rng = np.random.default_rng(6)
    x, mean = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    scale = np.exp(0.5 * rng.normal(size=(4, 3)))
    want = norm.logpdf(x[:, None, :], mean[None], scale[None]).sum(-1)
    np.testing.assert_allclose(_linalg.diag_normal_log_prob_pairwise(x, mean, scale), want,
                               rtol=1e-12)
    np.testing.assert_allclose(_linalg.diag_normal_log_prob(x[:, None, :], mean, scale), want,
                               rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Packed symmetric matrices
# --------------------------------------------------------------------------------------------


def test_sym_outer_features_and_packed_quadratic_form(x64):
    rng = np.random.default_rng(7)
    d = 4
    x = rng.normal(size=(6, d))
    rows, cols = np.triu_indices(d)
    np.testing.assert_allclose(_linalg.sym_outer_features(x),
                               (x[:, :, None] * x[:, None, :])[:, rows, cols], rtol=1e-15)
    a = _spd(rng, (3,), d)
    quad = np.asarray(_linalg.sym_outer_features(x)) @ np.asarray(_linalg.pack_sym(a, 2.0)).T
    np.testing.assert_allclose(quad, np.einsum("ni,kij,nj->nk", x, a, x), rtol=1e-12)


def test_pack_unpack_round_trip(x64):
    rng = np.random.default_rng(8)
    d = 5
    a = _linalg.symmetrize(rng.normal(size=(2, 3, d, d)))
    packed = _linalg.pack_sym(a)
    assert packed.shape == (2, 3, d * (d + 1) // 2)
    rows, cols = np.triu_indices(d)
    np.testing.assert_array_equal(packed, np.asarray(a)[..., rows, cols])
    np.testing.assert_array_equal(_linalg.unpack_sym(packed, d), a)
    p = rng.normal(size=(4, d * (d + 1) // 2))
    np.testing.assert_array_equal(_linalg.pack_sym(_linalg.unpack_sym(p, d)), p)
    doubled = np.asarray(_linalg.pack_sym(a, 2.0))
    diag = rows == cols
    np.testing.assert_array_equal(doubled[..., diag], np.asarray(packed)[..., diag])
    np.testing.assert_array_equal(doubled[..., ~diag], 2.0 * np.asarray(packed)[..., ~diag])


# --------------------------------------------------------------------------------------------
# Floored Cholesky, resolution floor
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cholesky_floored_repairs_a_singular_matrix_only(dtype):
    with jax.enable_x64(dtype == np.float64):
        rng = np.random.default_rng(9)
        d, floor = 4, 1e-2
        v = rng.normal(size=(d, 1))
        singular = v @ v.T  # rank 1: three zero eigenvalues
        fine = _spd(rng, (), d)
        cov = np.stack([singular, fine]).astype(dtype)
        l, rep, repaired = (np.asarray(a) for a in _linalg.cholesky_floored(jnp.asarray(cov),
                                                                            floor))
        np.testing.assert_array_equal(repaired, [True, False])
        assert np.all(np.isfinite(l)) and np.all(np.triu(l, 1) == 0)
        assert np.all(np.diagonal(l, axis1=-2, axis2=-1) > 0)
        # The matrices L stands for: LLᵀ; the repaired one is V max(λ, floor) Vᵀ.
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(l @ np.swapaxes(l, -1, -2), rep, rtol=tol, atol=tol)
        w, vec = np.linalg.eigh(singular.astype(dtype).astype(np.float64))
        want = (vec * np.maximum(w, floor)) @ vec.T
        np.testing.assert_allclose(rep[0], want, rtol=10 * tol, atol=10 * tol * np.max(w))
        assert np.min(np.linalg.eigvalsh(rep[0].astype(np.float64))) >= floor * (1 - 1e-3)
        # Already fine: the plain Cholesky factor, and the matrix itself, untouched.
        np.testing.assert_array_equal(rep[1], np.asarray(_linalg.symmetrize(cov[1])))
        np.testing.assert_allclose(l[1], np.linalg.cholesky(cov[1].astype(np.float64)),
                                   rtol=tol, atol=tol)


def test_cholesky_floored_clip_sets_the_repaired_eigenvalue_floor(x64):
    v = np.array([[1.0], [2.0], [0.5]])
    cov = (v @ v.T)[None]
    _, rep, repaired = _linalg.cholesky_floored(jnp.asarray(cov), 1e-4, clip=0.1)
    assert bool(repaired[0])
    eig = np.linalg.eigvalsh(np.asarray(rep[0]))
    np.testing.assert_allclose(eig[:2], 0.1, rtol=1e-10)
    np.testing.assert_allclose(eig[2], np.sum(v * v), rtol=1e-10)


def test_resolution_floor(x64):
    cov = np.stack([np.diag([1.0, 4.0, 2.0]), np.diag([0.5, 0.1, 0.2])])
    np.testing.assert_allclose(_linalg.resolution_floor(cov),
                               3 * np.finfo(np.float64).eps * np.array([4.0, 0.5]), rtol=1e-15)
    c32 = cov.astype(np.float32)
    np.testing.assert_allclose(_linalg.resolution_floor(c32),
                               3 * np.finfo(np.float32).eps * np.array([4.0, 0.5]), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Scalar helpers
# --------------------------------------------------------------------------------------------


def test_log_positive_matches_float64_log():
    x = np.array([1e-45, 1e-40, 1.1e-38, 1.2e-38, 1e-30, 1.0, 3e38], np.float32)
    np.testing.assert_allclose(_linalg.log_positive(jnp.asarray(x)), np.log(x.astype(np.float64)),
                               rtol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(_linalg.log_positive(a)))(jnp.asarray(x))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[4:6], 1.0 / x[4:6], rtol=1e-6)


def test_log_positive_float64_subnormal(x64):
    x = np.array([5e-324, 1e-310, 2.2e-308, 1.0, 1e300])
    np.testing.assert_allclose(_linalg.log_positive(jnp.asarray(x)), np.log(x), rtol=1e-14)


def test_inverse_softplus_against_log_expm1():
    y = np.array([1e-8, 1e-3, 0.5, 1.0, 5.0, 30.0, 300.0])
    want = np.log(np.expm1(y))
    got = _linalg.inverse_softplus(y)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13)
    y32 = y.astype(np.float32)
    assert _linalg.inverse_softplus(y32).dtype == np.float32
    assert isinstance(_linalg.inverse_softplus(0.5), float)
    np.testing.assert_allclose(_linalg.inverse_softplus(0.5), math.log(math.expm1(0.5)),
                               rtol=1e-15)
    with jax.enable_x64(True):
        got = _linalg.inverse_softplus(jnp.asarray(y))
        assert isinstance(got, jax.Array)
        np.testing.assert_allclose(got, want, rtol=1e-13)
        np.testing.assert_allclose(jax.nn.softplus(got), y, rtol=1e-13)
    # Large y: log(expm1(y)) overflows in float64 above ~709; softplus⁻¹(y) → y.
    assert _linalg.inverse_softplus(np.float64(1000.0)) == 1000.0


def test_single_threaded_lapack_limits_and_restores_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if jax.default_backend() != "cpu":
        pytest.skip("a no-op off CPU")

    def blas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]

    before = blas_threads()
    with _linalg.single_threaded_lapack():
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before
