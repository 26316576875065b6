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


def _unpadded(x, k, cov, init, key, weights, max_iter=100, tol=1e-3):
    """The fit through the driver's jitted program on exactly N rows (no bucket)."""
    x = jnp.asarray(x)
    length, limit = driver.iteration_limits(max_iter)
    opts = driver.options(x.dtype, tol=tol, reg_covar=1e-6, prior=None,
                          fixed=checks.fixed_array(()), max_iter=limit)
    config = driver.Config(k=k, covariance_type=cov, init=init, max_iter=length, n_chunks=1,
                           rows=x.shape[0])
    keys = driver.start_keys(key, init, em.INITS, 2)
    return driver.fit_from_keys(EM, config, x, keys, jnp.asarray(weights, x.dtype), opts)


@pytest.mark.parametrize("init", ["kmeans++", "random", "random_from_data"])
@pytest.mark.parametrize("cov", ["full", "diag"])
def test_padded_fit_equals_fit_on_n_rows(x64, blobs, init, cov):
    x = blobs(seed=5, n_per=40, d=3, k=3)  # 120 rows, padded to 256 by `em.fit`
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(x))
    key = jax.random.key(4)
    for weights in (None, w):
        padded = em.fit(x, 3, key=key, covariance_type=cov, init=init, n_init=2,
                        sample_weight=weights)
        exact = _unpadded(x, 3, cov, init, key, np.ones(len(x)) if weights is None else w)
        assert int(padded.n_iter) == int(exact.n_iter)
        np.testing.assert_allclose(padded.log_likelihood, exact.log_likelihood, rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(padded.gmm),
                        jax.tree_util.tree_leaves(exact.gmm), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(padded.history, exact.history[:100], rtol=1e-12)


def test_new_n_in_the_bucket_and_new_max_iter_or_tol_do_not_trace_again(x64, blobs):
    x = blobs(seed=6, n_per=50, d=2, k=3)  # 150 rows
    key = jax.random.key(0)
    em.fit(x, 3, key=key, covariance_type="diag")
    size = driver.fit_from_keys._cache_size()
    em.fit(x[:120], 3, key=key, covariance_type="diag")
    em.fit(x[:100], 3, key=key, covariance_type="diag", max_iter=40, tol=1e-5)
    res = em.fit(x[:130], 3, key=key, covariance_type="diag", max_iter=7)
    assert driver.fit_from_keys._cache_size() == size
    assert res.history.shape == (7,) and int(res.n_iter) <= 7
    # the variational fit shares the buckets (not max_iter, static there)
    em.fit_variational(x, 3, key=key, covariance_type="diag")
    size = driver.fit_from_keys._cache_size()
    em.fit_variational(x[:111], 3, key=key, covariance_type="diag")
    assert driver.fit_from_keys._cache_size() == size


def test_large_or_chunked_fits_are_not_padded():
    x = jnp.zeros((10, 2))
    config = driver.Config(n_chunks=2, rows=5)
    assert driver.padded(x, None, config)[2] == config
    xp, wp, c = driver.padded(x, None, driver.Config(n_chunks=1, rows=10))
    assert xp.shape == (256, 2) and c.rows == 256
    np.testing.assert_array_equal(wp, np.r_[np.ones(10), np.zeros(246)])
