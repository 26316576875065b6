"""jaxvi.em.variational / variational_fit: VB-EM against scikit-learn's
`BayesianGaussianMixture` driven by hand from the same responsibilities (every iteration's
parameters, responsibilities and lower bound), the kernels and chunking, the loop, the ELBO
never decreasing, unneeded components switched off, float32 against float64, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture

from jaxvi import em
from jaxvi.em import init as em_init
from jaxvi.em import step as em_step_module
from jaxvi.em import variational as vb
from jaxvi.em.variational_fit import (
    fit_variational,
    initialize_from_resp,
    variational_step,
)

COV_TYPES = em.COVARIANCE_TYPES
WEIGHT_TYPES = vb.WEIGHT_PRIOR_TYPES
TIGHT = 1e-8


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


def _ours_start(x, resp, cov, wt, **priors):
    xj = jnp.asarray(x)
    prior = vb.default_prior(xj, covariance_type=cov, n_components=resp.shape[1], **priors)
    post = initialize_from_resp(xj, jnp.asarray(resp), prior, covariance_type=cov,
                                weight_type=wt, reg_covar=1e-6)
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


def _resp(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n)


@pytest.mark.parametrize("wt", WEIGHT_TYPES)
@pytest.mark.parametrize("cov", COV_TYPES)
def test_iterations_match_sklearn(x64, cov, wt, blobs, rel):
    x = blobs(seed=3, n_per=40, d=3)
    rng = np.random.default_rng(0)
    resp = _resp(rng, len(x), 5)
    b = _sklearn_start(x, resp, cov, wt)
    post, prior = _ours_start(x, resp, cov, wt)
    _assert_matches(post, b, cov, wt, rel)
    for _ in range(6):
        # The E step alone: EM's E step on expected_gmm gives scikit-learn's log_resp.
        log_resp_ours, _ = em.e_step(x, vb.expected_gmm(post, covariance_type=cov,
                                                        weight_type=wt))
        log_resp, bound = _sklearn_step(b, x)
        assert np.max(np.abs(np.asarray(log_resp_ours) - log_resp)) < 1e-7
        post, elbo = variational_step(jnp.asarray(x), post, prior, covariance_type=cov,
                                      weight_type=wt)
        _assert_matches(post, b, cov, wt, rel)
        assert abs(float(elbo) - bound) < TIGHT * abs(bound)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_given_priors_match_sklearn(x64, cov, blobs, rel):
    x = blobs(seed=5, n_per=30, d=2)
    rng = np.random.default_rng(1)
    psi = {"full": np.array([[2.0, 0.3], [0.3, 0.5]]), "tied": np.array([[1.0, -0.2],
                                                                        [-0.2, 3.0]]),
           "diag": np.array([0.7, 1.9]), "spherical": 2.5}[cov]
    priors = dict(weight_concentration_prior=2.5, mean_precision_prior=0.3,
                  mean_prior=np.array([1.0, -2.0]), degrees_of_freedom_prior=3.5,
                  covariance_prior=psi)
    resp = _resp(rng, len(x), 4)
    for wt in WEIGHT_TYPES:
        b = _sklearn_start(x, resp, cov, wt, **priors)
        post, prior = _ours_start(x, resp, cov, wt, **priors)
        for _ in range(3):
            _, bound = _sklearn_step(b, x)
            post, elbo = variational_step(jnp.asarray(x), post, prior, covariance_type=cov,
                                          weight_type=wt)
        _assert_matches(post, b, cov, wt, rel)
        assert abs(float(elbo) - bound) < TIGHT * abs(bound)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_chunked_jitted_and_precise_kernel_equal_single(x64, cov, blobs, rel, monkeypatch):
    """Chunks, jit and the precise E-step kernel (Stats about each component's mean: the
    entropy's per-component centres) give the same iteration."""
    x = jnp.asarray(blobs(seed=2, n_per=50, d=3, offset=20.0))
    rng = np.random.default_rng(2)
    post, prior = _ours_start(x, _resp(rng, x.shape[0], 4), cov, "dirichlet_process")
    cfg = dict(covariance_type=cov, weight_type="dirichlet_process")
    ref, ref_elbo = variational_step(x, post, prior, **cfg)
    runs = [variational_step(x, post, prior, chunk_size=17, **cfg),
            jax.jit(lambda p: variational_step(x, p, prior, **cfg))(post)]
    monkeypatch.setattr(em_step_module, "FAST_KERNEL_MAX_ERROR", -1.0)  # always precise
    runs.append(variational_step(x, post, prior, **cfg))
    for new, elbo in runs:
        assert rel(new.means, ref.means) < 1e-10
        assert rel(new.covariances, ref.covariances) < 1e-10
        assert abs(float(elbo - ref_elbo)) < 1e-10 * abs(float(ref_elbo))


@pytest.mark.parametrize("wt", WEIGHT_TYPES)
@pytest.mark.parametrize("cov", COV_TYPES)
def test_fit_equals_steps_and_never_decreases(x64, cov, wt, blobs, rel):
    x = jnp.asarray(blobs(seed=7, n_per=40, d=2))
    key = jax.random.key(4)
    kw = dict(covariance_type=cov, weight_concentration_prior_type=wt, reg_covar=0.0)
    result = fit_variational(x, 6, key=key, max_iter=25, tol=0.0, init="random", **kw)
    assert int(result.n_iter) == 25 and not bool(result.converged)
    history = np.asarray(result.history)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    assert history[-1] > history[0] + 1e-3  # it moved
    # The loop is the step: n_init = 1 runs from keys = split(key, 1).
    resp = em_init._init_resp(jax.random.split(key, 1)[0], x, 6, "random")
    prior = vb.default_prior(x, covariance_type=cov, n_components=6)
    post = initialize_from_resp(x, resp, prior, covariance_type=cov, weight_type=wt,
                                reg_covar=0.0)
    step = jax.jit(lambda p: variational_step(x, p, prior, covariance_type=cov, weight_type=wt,
                                              reg_covar=0.0))
    elbos = []
    for _ in range(25):
        post, elbo = step(post)
        elbos.append(float(elbo))
    assert rel(history, np.array(elbos)) < 1e-10
    assert rel(result.posterior.means, post.means) < 1e-8
    assert float(result.lower_bound) == history[-1]


@pytest.mark.parametrize("cov", ["full", "spherical"])
def test_warm_start_continues_the_fit(x64, cov, blobs, rel):
    x = jnp.asarray(blobs(seed=8, n_per=40, d=2))
    kw = dict(key=jax.random.key(2), covariance_type=cov, tol=0.0, init="random",
              weight_concentration_prior_type="dirichlet_distribution")
    whole = fit_variational(x, 4, max_iter=12, **kw)
    half = fit_variational(x, 4, max_iter=5, **kw)
    rest = fit_variational(x, 4, max_iter=7, **dict(kw, init=half.posterior))
    assert rel(rest.history, whole.history[5:]) < 1e-10
    assert rel(rest.posterior.covariances, whole.posterior.covariances) < 1e-9
    bad = half.posterior._replace(means=half.posterior.means[:3])
    with pytest.raises(ValueError, match="`init.means`"):
        fit_variational(x, 4, max_iter=2, **dict(kw, init=bad))


def _three_blobs(dtype=np.float64):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    return np.concatenate([rng.normal(size=(200, 2)) * 0.5 + c for c in centres]).astype(dtype)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_dirichlet_process_switches_off_unneeded_components(x64, cov):
    x = _three_blobs()
    result = fit_variational(x, 10, key=jax.random.key(0), covariance_type=cov,
                             max_iter=300, tol=1e-8)
    w = np.sort(np.asarray(vb.mixture_weights(result.posterior, "dirichlet_process")))[::-1]
    assert bool(result.converged)
    assert np.all(np.abs(w[:3] - 1 / 3) < 0.02), w
    assert np.all(w[3:] < 0.005), w


def _run_steps(x, resp, cov, n_iter):
    """n_iter jitted VB-EM steps under the DP prior from resp -> (posterior, ELBO)."""
    post, prior = _ours_start(x, resp, cov, "dirichlet_process")
    step = jax.jit(lambda p: variational_step(jnp.asarray(x), p, prior, covariance_type=cov,
                                              weight_type="dirichlet_process"))
    for _ in range(n_iter):
        post, elbo = step(post)
    return post, elbo


@pytest.mark.parametrize("cov", COV_TYPES)
def test_float32_gives_the_float64_answer(cov):
    """From the same responsibilities (each point to the nearest of 10 data points), 60
    float32 iterations end where float64 ones do."""
    x = _three_blobs()
    centres = x[np.random.default_rng(3).choice(len(x), 10, replace=False)]
    resp = np.eye(10)[np.argmin(((x[:, None] - centres) ** 2).sum(-1), axis=1)]
    post32, elbo32 = _run_steps(x.astype(np.float32), resp.astype(np.float32), cov, 60)
    with jax.enable_x64(True):
        post64, elbo64 = _run_steps(x, resp, cov, 60)
        w64 = np.asarray(vb.mixture_weights(post64, "dirichlet_process"))
        m64, lb64 = np.asarray(post64.means), float(elbo64)
    assert elbo32.dtype == jnp.float32
    assert abs(float(elbo32) - lb64) < 1e-4 * abs(lb64)
    w32 = np.asarray(vb.mixture_weights(post32, "dirichlet_process"))
    big = w64 > 0.05
    assert big.sum() == 3 and np.array_equal(w32 > 0.05, big)
    assert np.max(np.abs(w32 - w64)) < 1e-4
    assert np.max(np.abs(np.asarray(post32.means)[big] - m64[big])) < 1e-3


_D = 2
BAD = [
    (dict(n_components=0), "n_components"),
    (dict(covariance_type="banded"), "covariance_type"),
    (dict(weight_concentration_prior_type="pitman_yor"), "weight_concentration_prior_type"),
    (dict(weight_concentration_prior=0.0), "weight_concentration_prior"),
    (dict(weight_concentration_prior=-1.0), "weight_concentration_prior"),
    (dict(weight_concentration_prior=np.nan), "weight_concentration_prior"),
    (dict(mean_precision_prior=0.0), "mean_precision_prior"),
    (dict(mean_prior=np.zeros(3)), "mean_prior"),
    (dict(degrees_of_freedom_prior=_D - 1.0), "degrees_of_freedom_prior"),
    (dict(covariance_prior=np.array([[1.0, 2.0], [2.0, 1.0]])), "covariance_prior"),
    (dict(covariance_prior=np.eye(3)), "covariance_prior"),
    (dict(covariance_type="diag", covariance_prior=np.array([1.0, -1.0])), "covariance_prior"),
    (dict(covariance_type="spherical", covariance_prior=0.0), "covariance_prior"),
    (dict(max_iter=-1), "max_iter"),
    (dict(tol=-1.0), "tol"),
    (dict(n_init=0), "n_init"),
    (dict(init="kmeans"), "init"),
    (dict(reg_covar=-1.0), "reg_covar"),
]


@pytest.mark.parametrize("kwargs,name", BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_raise_naming_them(kwargs, name):
    x = np.random.default_rng(0).normal(size=(20, _D))
    kwargs = dict(dict(n_components=3, key=jax.random.key(0), max_iter=2), **kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        fit_variational(x, **kwargs)


def test_bad_data_raise_naming_x():
    with pytest.raises(ValueError, match="`x`"):
        fit_variational(np.zeros(5), 2, key=jax.random.key(0))


@pytest.mark.parametrize("cov", ["full", "spherical"])
def test_combined_halves_equal_single(x64, cov, blobs, rel):
    """Stats (and with them the entropy) psum-ed over two halves of the rows give the
    single-batch iteration: what a mesh's `combine` does, here over a vmapped axis."""
    x = jnp.asarray(blobs(seed=4, n_per=40, d=3))
    rng = np.random.default_rng(5)
    post, prior = _ours_start(x, _resp(rng, x.shape[0], 4), cov, "dirichlet_process")
    cfg = dict(covariance_type=cov, weight_type="dirichlet_process")
    ref, ref_elbo = variational_step(x, post, prior, **cfg)
    halves = x.reshape(2, x.shape[0] // 2, x.shape[1])
    new, elbo = jax.vmap(
        lambda h: variational_step(h, post, prior, combine=lambda t: jax.lax.psum(t, "d"),
                                   **cfg),
        axis_name="d")(halves)
    for i in range(2):
        assert rel(new.means[i], ref.means) < 1e-10
        assert rel(new.covariances[i], ref.covariances) < 1e-10
        assert abs(float(elbo[i] - ref_elbo)) < 1e-10 * abs(float(ref_elbo))


MESH_SCRIPT = """
import json
import jax, numpy as np
from jaxvi import distributed
from jaxvi.em.variational_fit import fit_variational

assert jax.device_count() == 4, jax.devices()
out = {}
with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    # N = 301: not a multiple of the device count, so shards are padded and masked.
    x = np.concatenate([rng.normal(size=(100, 2)) + 5 * i for i in range(3)]
                       + [rng.normal(size=(1, 2))])
    mesh = distributed.data_mesh()
    for cov in ["full", "diag"]:
        kw = dict(key=jax.random.key(1), covariance_type=cov, max_iter=12, tol=0.0, n_init=2)
        one, four = fit_variational(x, 5, **kw), fit_variational(x, 5, mesh=mesh, **kw)
        out[cov] = max(float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))))
                       for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)))
        out[cov + "_devices"] = len(four.posterior.means.sharding.device_set)
print("RESULT " + json.dumps(out))
"""


def test_sharded_fit_equals_single_device():
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", MESH_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    for cov in ["full", "diag"]:
        assert out[cov] < 1e-9, out
        assert out[cov + "_devices"] == 4, out
