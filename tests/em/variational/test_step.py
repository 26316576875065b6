"""jaxvi.em.variational: VB-EM iterations against scikit-learn's `BayesianGaussianMixture`
driven by hand from the same responsibilities (every iteration's parameters,
responsibilities and lower bound), the kernels and chunking, the ELBO never decreasing
(hypothesis), the limit of a vanishing prior (EM), float32 against float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.mixture import BayesianGaussianMixture

from jaxvi import em
from jaxvi.em import step as em_step_module
from jaxvi.em import variational as vb
from jaxvi.em.variational import initialize_from_resp, variational_step

COV_TYPES = em.COVARIANCE_TYPES
WEIGHT_TYPES = vb.WEIGHT_PRIOR_TYPES
TIGHT = 1e-8
K = 5


@functools.cache
def jit_step(cov, wt, reg_covar=1e-6):
    """One jitted VB-EM iteration (x, post, prior) -> (post, ELBO), compiled once per worker
    for each shape, dtype and option."""
    return jax.jit(functools.partial(variational_step, covariance_type=cov, weight_type=wt,
                                     reg_covar=reg_covar))


def _sklearn_start(x, resp, cov, wt, **priors):
    b = BayesianGaussianMixture(n_components=resp.shape[1], covariance_type=cov,
                                weight_concentration_prior_type=wt, reg_covar=1e-6, **priors)
    b._check_parameters(x)
    b._initialize(x, resp)
    return b


def _sklearn_step(b, x):
    log_prob_norm, log_resp = b._e_step(x)
    b._m_step(x, log_resp)
    return log_resp, float(np.squeeze(b._compute_lower_bound(log_resp, log_prob_norm)))


def _ours_start(x, resp, cov, wt, reg_covar=1e-6, **priors):
    xj = jnp.asarray(x)
    prior = vb.default_variational_prior(xj, covariance_type=cov, n_components=resp.shape[1],
                                         **priors)
    post = initialize_from_resp(xj, jnp.asarray(resp), prior, covariance_type=cov,
                                weight_type=wt, reg_covar=reg_covar)
    return post, prior


def _precisions_cholesky(post, cov):
    """scikit-learn's `precisions_cholesky_` from the covariances' lower factors L: L⁻ᵀ."""
    if cov in ("full", "tied"):
        return np.swapaxes(np.linalg.inv(np.asarray(post.scale_tril)), -1, -2)
    return 1.0 / np.sqrt(np.asarray(post.covariances))


def _assert_matches(post, b, cov, wt, rel):
    assert rel(np.asarray(post.weight_concentration), np.asarray(b.weight_concentration_)) < TIGHT
    assert rel(post.mean_precision, b.mean_precision_) < TIGHT
    assert rel(post.means, b.means_) < TIGHT
    assert rel(post.degrees_of_freedom, b.degrees_of_freedom_) < TIGHT
    assert rel(post.covariances, b.covariances_) < TIGHT
    assert rel(_precisions_cholesky(post, cov), b.precisions_cholesky_) < TIGHT
    b._set_parameters(b._get_parameters())  # weights_
    assert rel(vb.mixture_weights(post, wt), b.weights_) < TIGHT


def _data(blobs):
    return blobs(seed=3, n_per=40, d=3)  # (120, 3): one shape, so one compile per option


def _resp(seed, n, k=K):
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


GIVEN_COV_PRIOR = {"full": np.array([[2.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 1.0]]),
                   "tied": np.array([[1.0, -0.2, 0.0], [-0.2, 3.0, 0.0], [0.0, 0.0, 0.4]]),
                   "diag": np.array([0.7, 1.9, 1.1]), "spherical": 2.5}


@pytest.mark.parametrize("wt", WEIGHT_TYPES)
@pytest.mark.parametrize("cov", COV_TYPES)
def test_iterations_match_sklearn(x64, cov, wt, blobs, rel):
    """Default priors (5 iterations, the E step's log responsibilities too), then given
    priors (3 iterations): parameters and lower bound equal scikit-learn's."""
    x = _data(blobs)
    step = jit_step(cov, wt)
    resp = _resp(0, len(x))
    b = _sklearn_start(x, resp, cov, wt)
    post, prior = _ours_start(x, resp, cov, wt)
    _assert_matches(post, b, cov, wt, rel)
    for _ in range(5):
        # The E step alone: EM's E step on expected_gmm gives scikit-learn's log_resp.
        log_resp_ours, _ = em.e_step(x, vb.expected_gmm(post, covariance_type=cov,
                                                        weight_type=wt))
        log_resp, bound = _sklearn_step(b, x)
        assert np.max(np.abs(np.asarray(log_resp_ours) - log_resp)) < 1e-7
        post, elbo = step(jnp.asarray(x), post, prior)
        _assert_matches(post, b, cov, wt, rel)
        assert abs(float(elbo) - bound) < TIGHT * abs(bound)
    priors = dict(weight_concentration_prior=2.5, mean_precision_prior=0.3,
                  mean_prior=np.array([1.0, -2.0, 0.5]), degrees_of_freedom_prior=3.5,
                  covariance_prior=GIVEN_COV_PRIOR[cov])
    resp = _resp(1, len(x))
    b = _sklearn_start(x, resp, cov, wt, **priors)
    post, prior = _ours_start(x, resp, cov, wt, **priors)
    for _ in range(3):
        _, bound = _sklearn_step(b, x)
        post, elbo = step(jnp.asarray(x), post, prior)
        _assert_matches(post, b, cov, wt, rel)
        assert abs(float(elbo) - bound) < TIGHT * abs(bound)


def test_chunked_and_precise_kernel_equal_single(x64, blobs, rel, monkeypatch):
    """Chunks and the precise E-step kernel (Stats about each component's mean: the
    entropy's per-component centres) give the same iteration as one fast-kernel batch."""
    x = jnp.asarray(blobs(seed=2, n_per=50, d=3, offset=20.0))
    post, prior = _ours_start(x, _resp(2, x.shape[0], 4), "full", "dirichlet_process")
    cfg = dict(covariance_type="full", weight_type="dirichlet_process")
    ref, ref_elbo = jit_step("full", "dirichlet_process")(x, post, prior)
    runs = [jax.jit(lambda p: variational_step(x, p, prior, chunk_size=17, **cfg))(post)]
    monkeypatch.setattr(em_step_module, "FAST_KERNEL_MAX_ERROR", -1.0)  # always precise
    runs.append(jax.jit(lambda p: variational_step(x, p, prior, **cfg))(post))
    for new, elbo in runs:
        assert rel(new.means, ref.means) < 1e-10
        assert rel(new.covariances, ref.covariances) < 1e-10
        assert abs(float(elbo - ref_elbo)) < 1e-10 * abs(float(ref_elbo))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), cov=st.sampled_from(COV_TYPES),
       wt=st.sampled_from(WEIGHT_TYPES), gamma0=st.floats(1e-3, 10.0),
       beta0=st.floats(1e-3, 10.0), extra_dof=st.floats(0.01, 10.0),
       psi_scale=st.floats(1e-2, 10.0), scale=st.floats(0.1, 100.0))
def test_lower_bound_never_decreases(seed, cov, wt, gamma0, beta0, extra_dof, psi_scale, scale):
    """Over data, priors and random starting responsibilities, 12 iterations never lower
    the ELBO (each is a coordinate ascent step)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(120, 3)) * scale + scale * rng.normal(size=3)
        x[:60] += 3 * scale
        d = x.shape[1]
        psi = {"full": np.eye(d), "tied": np.eye(d), "diag": np.ones(d),
               "spherical": 1.0}[cov]
        priors = dict(weight_concentration_prior=gamma0, mean_precision_prior=beta0,
                      degrees_of_freedom_prior=d - 1 + extra_dof,
                      covariance_prior=psi * psi_scale * scale**2)
        post, prior = _ours_start(x, _resp(seed, len(x)), cov, wt, **priors)
        step = jit_step(cov, wt)
        elbos = []
        for _ in range(12):
            post, elbo = step(jnp.asarray(x), post, prior)
            elbos.append(float(elbo))
        elbos = np.array(elbos)
        assert np.all(np.isfinite(elbos))
        assert np.all(np.diff(elbos) >= -1e-9 * np.abs(elbos[1:])), elbos


def _em_gap(x, resp, cov, n_iter=30):
    """Max |VB − EM| over weights, means and covariances after n_iter iterations from the
    same responsibilities, VB under a vanishing prior (the covariance (ν_k W_k)⁻¹ rescaled
    by ν_k / n_k, the ML covariance it tends to)."""
    tiny = 1e-9
    x = jnp.asarray(x)
    d = x.shape[1]
    priors = dict(weight_concentration_prior=tiny, mean_precision_prior=tiny,
                  degrees_of_freedom_prior=d - 1 + tiny,
                  covariance_prior={"full": np.eye(d), "diag": np.ones(d)}[cov] * tiny)
    post, prior = _ours_start(x, resp, cov, "dirichlet_distribution", reg_covar=0.0,
                              **priors)
    step = jit_step(cov, "dirichlet_distribution", 0.0)
    gmm = em.m_step(x, jnp.asarray(resp), covariance_type=cov, reg_covar=0.0)
    em_step = jax.jit(lambda g: em.em_step(x, g, reg_covar=0.0)[0])
    for _ in range(n_iter):
        post, _ = step(x, post, prior)
        gmm = em_step(gmm)
    w = vb.mixture_weights(post, "dirichlet_distribution")
    nk = w * len(x)
    scale = (post.degrees_of_freedom / nk).reshape((-1,) + (1,) * (post.covariances.ndim - 1))
    return max(float(jnp.max(jnp.abs(w - gmm.weights))),
               float(jnp.max(jnp.abs(post.means - gmm.means))),
               float(jnp.max(jnp.abs(post.covariances * scale - gmm.covariances))))


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_vanishing_prior_tends_to_em(x64, cov, blobs):
    """With the prior's strength → 0, VB-EM's fit differs from EM's only by the O(1/n_k)
    of E[ln π_k], E[ln|Λ_k|] and D/β_k: the gap shrinks ~10x from N = 300 to N = 3000."""
    gaps = []
    for n_per in (100, 1000):
        x = blobs(seed=6, n_per=n_per, d=2, spread=6.0)
        gaps.append(_em_gap(x, _resp(6, len(x), 3), cov))
    assert gaps[1] < 3e-3, gaps
    assert gaps[1] < gaps[0] / 4, gaps


def _three_blobs(n_per=100):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    return np.concatenate([rng.normal(size=(n_per, 2)) * 0.5 + c for c in centres])


def _run_steps(x, resp, cov, n_iter):
    """n_iter jitted VB-EM steps under the DP prior from resp -> (posterior, ELBO)."""
    post, prior = _ours_start(x, resp, cov, "dirichlet_process")
    step = jit_step(cov, "dirichlet_process")
    for _ in range(n_iter):
        post, elbo = step(jnp.asarray(x), post, prior)
    return post, elbo


@pytest.mark.parametrize("cov", ["full", "spherical"])
def test_float32_gives_the_float64_answer(cov):
    """From the same responsibilities (each point to the nearest of 10 data points), 40
    float32 iterations end where float64 ones do."""
    x = _three_blobs()
    centres = x[np.random.default_rng(3).choice(len(x), 10, replace=False)]
    resp = np.eye(10)[np.argmin(((x[:, None] - centres) ** 2).sum(-1), axis=1)]
    post32, elbo32 = _run_steps(x.astype(np.float32), resp.astype(np.float32), cov, 40)
    with jax.enable_x64(True):
        post64, elbo64 = _run_steps(x, resp, cov, 40)
        w64 = np.asarray(vb.mixture_weights(post64, "dirichlet_process"))
        m64, lb64 = np.asarray(post64.means), float(elbo64)
    assert elbo32.dtype == jnp.float32
    assert abs(float(elbo32) - lb64) < 1e-4 * abs(lb64)
    w32 = np.asarray(vb.mixture_weights(post32, "dirichlet_process"))
    big = w64 > 0.05
    assert big.sum() == 3 and np.array_equal(w32 > 0.05, big)
    assert np.max(np.abs(w32 - w64)) < 1e-4
    assert np.max(np.abs(np.asarray(post32.means)[big] - m64[big])) < 1e-3
