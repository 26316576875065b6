"""jaxvi.em.driver: row buckets (zero-weight padding changes nothing; a new N in the same
bucket does not trace again) and programs shared across max_iter / tol."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em
from jaxvi.em import checks, driver
from jaxvi.em.fit import EM


def test_bucket_rows_steps():
    assert [driver.bucket_rows(n) for n in (1, 150, 256, 257, 384, 385, 600, 1000)] == [
        256, 256, 256, 384, 384, 512, 768, 1024]
    for n in range(1, 5000, 37):
        assert n <= driver.bucket_rows(n) <= max(256, 1.5 * n)


def _unpadded(x, k, cov, init, key, weights, max_iter=100, tol=1e-3, n_init=2):
    """The fit through the driver's jitted program on exactly N rows (no bucket); weights
    (N,) or None."""
    x = jnp.asarray(x)
    length, limit = driver.iteration_limits(max_iter)
    opts = driver.options(x.dtype, tol=tol, reg_covar=1e-6, prior=None,
                          fixed=checks.fixed_array(()), max_iter=limit)
    config = driver.Config(k=k, covariance_type=cov, init=init, max_iter=length, n_chunks=1,
                           rows=x.shape[0])
    keys = driver.start_keys(key, init, em.INITS, n_init)
    weights = None if weights is None else jnp.asarray(weights, x.dtype)
    result = driver.fit_from_keys(EM, config, x, keys, weights, opts)
    return result._replace(history=result.history[..., :max_iter])


@pytest.mark.parametrize("init", ["kmeans++", "random", "random_from_data"])
@pytest.mark.parametrize("cov", ["full", "diag"])
def test_padded_fit_equals_fit_on_n_rows(x64, blobs, init, cov):
    x = blobs(seed=5, n_per=40, d=3, k=3)  # 120 rows, padded to 256 by `em.fit`
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(x))
    key = jax.random.key(4)
    for weights in (None, w):
        padded = em.fit(x, 3, key=key, covariance_type=cov, init=init, n_init=2,
                        sample_weight=weights)
        exact = _unpadded(x, 3, cov, init, key, weights)
        assert int(padded.n_iter) == int(exact.n_iter)
        np.testing.assert_allclose(padded.log_likelihood, exact.log_likelihood, rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(padded.gmm),
                        jax.tree_util.tree_leaves(exact.gmm), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(padded.history, exact.history[:100], rtol=1e-12)


def _leaves_close(a, b, rtol=1e-9, atol=1e-12):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("init", em.INITS)
def test_padding_does_not_change_the_initial_draw(x64, blobs, init):
    """The padded single-process fit (120 rows in a 256-row bucket) starts where the fit on
    exactly its 120 rows starts and where the mesh fit (never padded) starts, with the same
    key, with and without sample weights: max_iter=0 returns the initial parameters. (The
    padding once made the unweighted draws weighted by the padding mask: another k-means++
    seeding, another permutation for "random_from_data".)"""
    from jaxvi.distributed import data_mesh

    x = blobs(seed=5, n_per=40, d=3, k=3, spread=1.5)  # overlapping: the start matters
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(x))
    key = jax.random.key(7)
    mesh = data_mesh(jax.devices()[:1])
    for weights in (None, w):
        kw = dict(key=key, covariance_type="full", init=init, n_init=3, sample_weight=weights)
        ww = None if weights is None else jnp.asarray(weights)
        start = em.fit(x, 4, max_iter=0, **kw)
        _leaves_close(start.gmm, _unpadded(x, 4, "full", init, key, ww, max_iter=0,
                                           n_init=3).gmm)
        _leaves_close(start.gmm, em.fit(x, 4, max_iter=0, mesh=mesh, **kw).gmm)
        fitted = em.fit(x, 4, **kw)
        exact = _unpadded(x, 4, "full", init, key, ww, n_init=3)
        assert int(fitted.n_iter) == int(exact.n_iter)
        _leaves_close(fitted.gmm, exact.gmm)
        _leaves_close(fitted.gmm, em.fit(x, 4, mesh=mesh, **kw).gmm)
        # variational Bayes shares the driver and its padding
        vkw = dict(key=key, covariance_type="full", init=init, n_init=3, sample_weight=weights)
        vb = em.fit_variational(x, 5, **vkw)
        vb_mesh = em.fit_variational(x, 5, mesh=mesh, **vkw)
        assert int(vb.n_iter) == int(vb_mesh.n_iter)
        _leaves_close(vb.posterior, vb_mesh.posterior, rtol=1e-8)


def test_new_n_in_the_bucket_and_new_max_iter_or_tol_do_not_trace_again(x64, blobs):
    # the loop's program (`fit_from_starts`) is shared; the initialisation's (drawn from the
    # unpadded rows, `initial_params`) is traced once per N
    x = blobs(seed=6, n_per=50, d=2, k=3)  # 150 rows
    key = jax.random.key(0)
    em.fit(x, 3, key=key, covariance_type="diag")
    size = driver.fit_from_starts._cache_size()
    em.fit(x[:120], 3, key=key, covariance_type="diag")
    em.fit(x[:100], 3, key=key, covariance_type="diag", max_iter=40, tol=1e-5)
    res = em.fit(x[:130], 3, key=key, covariance_type="diag", max_iter=7)
    assert driver.fit_from_starts._cache_size() == size
    assert res.history.shape == (7,) and int(res.n_iter) <= 7
    # a warm start on a new N in the bucket runs the same loop program
    em.fit(x[:140], 3, key=key, covariance_type="diag", init=res.gmm)
    assert driver.fit_from_starts._cache_size() == size
    # the variational fit shares the buckets (not max_iter, static there)
    em.fit_variational(x, 3, key=key, covariance_type="diag")
    size = driver.fit_from_starts._cache_size()
    em.fit_variational(x[:111], 3, key=key, covariance_type="diag")
    assert driver.fit_from_starts._cache_size() == size


def test_large_or_chunked_fits_are_not_padded():
    x = jnp.zeros((10, 2))
    config = driver.Config(n_chunks=2, rows=5)
    assert driver.padded(x, None, config)[2] == config
    xp, wp, c = driver.padded(x, None, driver.Config(n_chunks=1, rows=10))
    assert xp.shape == (256, 2) and c.rows == 256
    np.testing.assert_array_equal(wp, np.r_[np.ones(10), np.zeros(246)])
