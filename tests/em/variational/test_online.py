"""jaxvi.em.variational.online: stochastic VI over shuffled mini-batches ends near the
full-batch VB-EM fit; its step is the natural-gradient (convex) step on the statistics; bad
arguments name themselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared_inputs import four_blobs

from jaxvi import em
from jaxvi.em import variational as vb
from jaxvi.em.variational import fit_variational, fit_variational_minibatch, variational_step


def _three_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    return np.concatenate([rng.normal(size=(400, 2)) * [0.5, 0.7] + c for c in centres])


def _shuffled_batches(x, epochs, size, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), size):
            yield x[order[i:i + size]]


def _by_mean(post, wt):
    order = np.lexsort(np.asarray(post.means).T)
    return np.asarray(vb.mixture_weights(post, wt))[order], np.asarray(post.means)[order], \
        np.asarray(post.covariances)[order]


@pytest.mark.parametrize("cov,wt", [("full", "dirichlet_process"),
                                    ("diag", "dirichlet_distribution")])
def test_svi_ends_near_the_full_batch_fit(x64, cov, wt):
    x = _three_blobs()
    kw = dict(covariance_type=cov, weight_concentration_prior_type=wt)
    full = fit_variational(x, 3, key=jax.random.key(0), max_iter=200, tol=1e-9, **kw)
    svi = fit_variational_minibatch(_shuffled_batches(x, 10, 100), 3, key=jax.random.key(0),
                                    n_samples=len(x), **kw)
    assert int(svi.n_iter) == 120 and svi.history.shape == (120,)
    (w0, m0, c0), (w1, m1, c1) = _by_mean(full.posterior, wt), _by_mean(svi.posterior, wt)
    assert np.max(np.abs(w1 - w0)) < 0.01, (w0, w1)
    assert np.max(np.abs(m1 - m0)) < 0.05, (m0, m1)
    assert np.max(np.abs(c1 - c0)) < 0.1 * np.max(np.abs(c0)), (c0, c1)
    # The full-data ELBO one VB-EM step after SVI's q is within 1e-3 of the full fit's.
    prior = vb.default_variational_prior(jnp.asarray(x), covariance_type=cov, n_components=3)
    _, elbo = variational_step(jnp.asarray(x), svi.posterior, prior, covariance_type=cov,
                               weight_type=wt)
    assert abs(float(elbo) - float(full.lower_bound)) < 1e-3 * abs(float(full.lower_bound))
    # The batch estimates are on the full fit's scale (noisy: within 20 %).
    assert abs(float(np.mean(svi.history[-20:])) / float(full.lower_bound) - 1) < 0.2


def test_float32_svi_ends_where_float64_does():
    x = _three_blobs()
    kw = dict(key=jax.random.key(0), n_samples=len(x), covariance_type="full",
              init="random_from_data")  # the same initial points in both dtypes
    svi32 = fit_variational_minibatch(_shuffled_batches(x.astype(np.float32), 3, 200), 3, **kw)
    with jax.enable_x64(True):
        svi64 = fit_variational_minibatch(_shuffled_batches(x, 3, 200), 3, **kw)
        w64, m64, _ = _by_mean(svi64.posterior, "dirichlet_process")
    w32, m32, _ = _by_mean(svi32.posterior, "dirichlet_process")
    assert svi32.posterior.means.dtype == jnp.float32
    assert np.max(np.abs(w32 - w64)) < 1e-4 and np.max(np.abs(m32 - m64)) < 1e-3


@pytest.mark.parametrize("kwargs,name", [
    (dict(kappa=0.5), "kappa"), (dict(delay=-1.0), "delay"), (dict(n_samples=0), "n_samples"),
    (dict(covariance_type="banded"), "covariance_type"), (dict(max_steps=0), "max_steps"),
    (dict(init="k-means"), "init"), (dict(weight_concentration_prior=0.0),
                                     "weight_concentration_prior"),
    (dict(weight_concentration_prior_type="pitman_yor"), "weight_concentration_prior_type"),
])
def test_bad_arguments_raise_naming_them(kwargs, name):
    x = np.random.default_rng(0).normal(size=(30, 2))
    kw = dict(dict(key=jax.random.key(0), n_samples=30), **kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        fit_variational_minibatch(iter([x]), 3, **kw)


def test_bad_batches_raise_naming_them():
    kw = dict(key=jax.random.key(0), n_samples=30)
    with pytest.raises(ValueError, match="`batches`"):
        fit_variational_minibatch(iter([]), 3, **kw)
    x = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError, match="`batches`"):
        fit_variational_minibatch(iter([x, x[:, :1]]), 3, **kw)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_svi_prunes_to_zero_weights_and_stays_usable(dtype):
    """SVI on 4 blobs with K = 12 and concentration 1e-3 (6 passes of batches of 250): the
    unneeded components are pruned (expected-value weight exactly 0 in float64, below 1e-20
    in float32), the posterior is finite and its expected GMM a valid mixture."""
    with jax.enable_x64(dtype == "float64"):
        x = jnp.asarray(np.random.default_rng(1).permutation(four_blobs()), dtype)
        batches = (x[i:i + 250] for _ in range(6) for i in range(0, len(x), 250))
        result = fit_variational_minibatch(batches, 12, key=jax.random.key(0), n_samples=len(x),
                                           weight_concentration_prior=1e-3, delay=1.0)
        gmm = vb.expected_gmm(result.posterior, covariance_type="full",
                              weight_type="dirichlet_process")
        smallest = float(jnp.min(gmm.weights))
        assert smallest == 0.0 if dtype == "float64" else smallest < 1e-20
        assert np.isfinite(float(result.lower_bound))
        assert np.all(np.isfinite(np.asarray(em.log_prob(x, gmm))))
