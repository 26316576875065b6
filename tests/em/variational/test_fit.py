"""jaxvi.em.variational.fit: `fit_variational`'s loop equals its steps, warm starts continue a
fit, the Dirichlet-process prior switches off the components the data do not need, a
non-finite fit is refused, bad arguments name themselves, a mesh gives the single-device fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_subprocess import run_script
from shared_inputs import four_blobs

from jaxvi import em
from jaxvi.em import init as em_init
from jaxvi.em import variational as vb
from jaxvi.em.variational import fit_variational, initialize_from_resp, variational_step

LOOP_CASES = [("full", "dirichlet_process"), ("tied", "dirichlet_distribution"),
              ("diag", "dirichlet_process"), ("spherical", "dirichlet_distribution")]


@pytest.mark.parametrize("cov,wt", LOOP_CASES)
def test_fit_equals_steps_then_warm_start_continues(x64, cov, wt, blobs, rel):
    """20 loop iterations from keys equal 20 jitted steps from the same initial q (and
    never lower the ELBO); a warm start from the 12th step's q runs the last 8."""
    x = jnp.asarray(blobs(seed=7, n_per=40, d=2))
    key = jax.random.key(4)
    kw = dict(covariance_type=cov, weight_concentration_prior_type=wt, reg_covar=0.0,
              tol=0.0)
    result = fit_variational(x, 6, key=key, max_iter=20, init="random", **kw)
    assert int(result.n_iter) == 20 and not bool(result.converged)
    history = np.asarray(result.history)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    assert history[-1] > history[0] + 1e-3  # it moved
    # The loop is the step: n_init = 1 runs from keys = split(key, 1).
    resp = em_init.init_resp(jax.random.split(key, 1)[0], x, 6, "random")
    prior = vb.default_variational_prior(x, covariance_type=cov, n_components=6)
    post = initialize_from_resp(x, resp, prior, covariance_type=cov, weight_type=wt,
                                reg_covar=0.0)
    step = jax.jit(lambda p: variational_step(x, p, prior, covariance_type=cov, weight_type=wt,
                                              reg_covar=0.0))
    elbos, posts = [], []
    for _ in range(20):
        post, elbo = step(post)
        elbos.append(float(elbo))
        posts.append(post)
    assert rel(history, np.array(elbos)) < 1e-10
    assert rel(result.posterior.means, post.means) < 1e-8
    assert abs(float(result.lower_bound) - history[-1]) < 1e-13 * abs(history[-1])
    rest = fit_variational(x, 6, key=key, max_iter=8, init=posts[11], **kw)
    assert rel(rest.history, history[12:]) < 1e-10
    assert rel(rest.posterior.covariances, result.posterior.covariances) < 1e-9


def test_warm_start_of_the_wrong_shape_names_the_field(blobs):
    x = blobs(seed=8, n_per=20, d=2)
    kw = dict(key=jax.random.key(2), covariance_type="diag", max_iter=2,
              weight_concentration_prior_type="dirichlet_distribution")
    post = fit_variational(x, 4, **kw).posterior
    with pytest.raises(ValueError, match="`init.means`"):
        fit_variational(x, 4, **dict(kw, init=post._replace(means=post.means[:3])))
    with pytest.raises(ValueError, match="`init.weight_concentration`"):
        fit_variational(x, 4, **dict(kw, init=post,
                                     weight_concentration_prior_type="dirichlet_process"))


def test_posterior_carries_its_types(blobs):
    """The fitted q carries its covariance type and weight prior's type, so
    `mixture_weights(post)` and `expected_gmm(post)` need no second argument (the old
    two-argument forms give the same); a q without them asks for them; a warm start of
    another type is refused, naming `init`."""
    x = blobs(seed=8, n_per=20, d=2)
    kw = dict(key=jax.random.key(2), covariance_type="diag", max_iter=2,
              weight_concentration_prior_type="dirichlet_distribution")
    post = fit_variational(x, 4, **kw).posterior
    assert (post.covariance_type, post.weight_type) == ("diag", "dirichlet_distribution")
    np.testing.assert_array_equal(vb.mixture_weights(post),
                                  vb.mixture_weights(post, "dirichlet_distribution"))
    gmm = vb.expected_gmm(post)
    old = vb.expected_gmm(post, covariance_type="diag", weight_type="dirichlet_distribution")
    assert gmm.covariance_type == "diag"
    np.testing.assert_array_equal(gmm.weights, old.weights)
    bare = post._replace(covariance_type=None, weight_type=None)
    with pytest.raises(ValueError, match="weight_type"):
        vb.mixture_weights(bare)
    np.testing.assert_array_equal(vb.mixture_weights(bare, "dirichlet_distribution"),
                                  vb.mixture_weights(post))
    again = fit_variational(x, 4, **dict(kw, init=bare)).posterior  # takes the fit's types
    assert (again.covariance_type, again.weight_type) == ("diag", "dirichlet_distribution")
    with pytest.raises(ValueError, match="`init`.*covariance_type"):
        fit_variational(x, 4, **dict(kw, init=post._replace(covariance_type="spherical")))


def _three_blobs(n_per=150):
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    return np.concatenate([rng.normal(size=(n_per, 2)) * 0.5 + c for c in centres])


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_dirichlet_process_keeps_three_of_twenty_components(x64, cov):
    x = _three_blobs()
    # from a converged k-means (the default k-means++ with 10 Lloyd steps leaves a split
    # blob on some keys: with the row padding of `jaxvi.em.driver`, on key 0)
    result = fit_variational(x, 20, key=jax.random.key(0), covariance_type=cov,
                             max_iter=400, tol=1e-8, init="kmeans")
    w = np.sort(np.asarray(vb.mixture_weights(result.posterior, "dirichlet_process")))[::-1]
    assert bool(result.converged)
    assert np.all(np.abs(w[:3] - 1 / 3) < 0.02), w
    assert np.all(w[3:] < 0.005), w


def test_non_finite_fit_is_refused():
    """Points at 1e30: their second moments overflow float32; the fit says so, never
    returns NaN. (The default covariance prior, the data's covariance, overflows first.)"""
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32) * 1e30
    with pytest.raises(ValueError, match="`covariance_prior` must be finite"):
        fit_variational(x, 3, key=jax.random.key(0), max_iter=5)
    with pytest.raises(ValueError, match="Fitting the variational mixture failed"):
        fit_variational(x, 3, key=jax.random.key(0), max_iter=5, covariance_prior=np.eye(2))


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
    (dict(init="k-means"), "init"),
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
    with pytest.raises(ValueError, match="`x`"):
        fit_variational(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), 2,
                        key=jax.random.key(0))


MESH_SCRIPT = """
import json
import jax, numpy as np
from jaxvi import distributed
from jaxvi.em.variational import fit_variational, fit_variational_minibatch

assert jax.device_count() == 4, jax.devices()


def gap(a, b):
    return max(float(np.max(np.abs(np.asarray(u, float) - np.asarray(v, float))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


out = {}
with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    # N = 301: not a multiple of the device count, so shards are padded and masked.
    x = np.concatenate([rng.normal(size=(100, 2)) + 5 * i for i in range(3)]
                       + [rng.normal(size=(1, 2))])
    mesh = distributed.data_mesh()
    kw = dict(key=jax.random.key(1), covariance_type="full", max_iter=10, tol=0.0)
    one = fit_variational(x, 5, n_init=2, **kw)
    four = fit_variational(x, 5, n_init=2, mesh=mesh, **kw)
    out["restarts"] = gap(one, four)
    out["devices"] = len(four.posterior.means.sharding.device_set)
    warm_one = fit_variational(x, 5, **dict(kw, init=one.posterior))
    warm_four = fit_variational(x, 5, mesh=mesh, **dict(kw, init=one.posterior))
    out["warm"] = gap(warm_one, warm_four)
    batches = [x[i::3] for i in range(3)] * 2  # batches of 101 and 100 rows: padded
    svi = dict(key=jax.random.key(2), n_samples=len(x), covariance_type="diag")
    out["svi"] = gap(fit_variational_minibatch(iter(batches), 4, **svi),
                     fit_variational_minibatch(iter(batches), 4, mesh=mesh, **svi))
print("RESULT " + json.dumps(out))
"""


def test_sharded_fit_equals_single_device():
    """Restarts, a warm start and stochastic VI on 4 simulated devices equal the
    single-device fits."""
    out = run_script(MESH_SCRIPT)
    assert out["restarts"] < 1e-9 and out["warm"] < 1e-9 and out["svi"] < 1e-9, out
    assert out["devices"] == 4, out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cov,wt", [("full", "dirichlet_process"),
                                    ("diag", "dirichlet_distribution")])
def test_pruned_weights_underflow_to_zero_and_the_fit_stays_usable(dtype, cov, wt):
    """K = 12 on 4 blobs with concentration 1e-3: the pruned components' expected-value
    weights underflow to exactly 0 in both dtypes; the fit is finite, its lower bound never
    decreases, and the expected GMM is a valid mixture for `jaxvi.em`'s densities, E step
    and sampler (a weight of 0 is a pruned component, not an invalid one)."""
    with jax.enable_x64(dtype == "float64"):
        x = jnp.asarray(four_blobs(), dtype)
        # (a start that puts a pruned component after the kept ones in the stick order, where
        # its expected weight underflows; the draws of key 0 changed with the row padding of
        # `jaxvi.em.driver` and its float64 DP fit's pruned components weigh ~5e-6)
        result = fit_variational(x, 12, key=jax.random.key(2), covariance_type=cov,
                                 weight_concentration_prior_type=wt, init="kmeans",
                                 weight_concentration_prior=1e-3, max_iter=100)
        gmm = vb.expected_gmm(result.posterior, covariance_type=cov, weight_type=wt)
        assert np.sum(np.asarray(gmm.weights) == 0.0) >= 1
        assert all(bool(jnp.all(jnp.isfinite(a)))
                   for a in jax.tree_util.tree_leaves(result.posterior))
        history = np.asarray(result.history)[: int(result.n_iter)]
        assert np.all(np.diff(history) >= -1e-5 * np.abs(history[1:]))
        log_p = np.asarray(em.log_prob(x, gmm))
        assert log_p.dtype == np.dtype(dtype) and np.all(np.isfinite(log_p))
        log_resp, _ = em.e_step(x, gmm)
        assert np.all(np.exp(np.asarray(log_resp))[:, np.asarray(gmm.weights) == 0] == 0)
        _, z = em.sample(jax.random.key(1), gmm, 500)
        assert np.all(np.asarray(gmm.weights)[np.asarray(z)] > 0)
