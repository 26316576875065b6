"""jaxvi.em.checks: bad arguments raise a ValueError that names them, before anything runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em


def test_bad_input_names_the_argument(x64, blobs, init_params):
    x = blobs()
    gmm, _ = init_params(x, 3, "full")
    key = jax.random.key(0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="`x`"):
        em.fit(bad, 3, key=key)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="`x`"):
        em.e_step(bad, gmm)
    with pytest.raises(ValueError, match="`x`.*dimensions"):
        em.fit(x[:, 0], 3, key=key)
    with pytest.raises(ValueError, match="`n_components`"):
        em.fit(x[:2], 3, key=key)
    with pytest.raises(ValueError, match="`covariance_type`"):
        em.fit(x, 3, key=key, covariance_type="banded")
    with pytest.raises(ValueError, match="`covariance_type`"):
        em.m_step(x, np.full((len(x), 3), 1 / 3), "banded")
    with pytest.raises(ValueError, match="`resp`"):
        em.m_step(x, np.full((len(x), 3), 0.5), "full")
    with pytest.raises(ValueError, match="`resp`"):
        em.free_energy(x, gmm, np.full((len(x), 3), 0.3))
    with pytest.raises(ValueError, match="`init`"):
        em.fit(x, 3, key=key, init="kmeans-ish")
    with pytest.raises(ValueError, match="`init`"):
        em.fit(x, 2, key=key, init=gmm)


def test_em_functions_check_their_arguments():
    x = np.random.default_rng(0).normal(size=(100, 2))
    gmm = em.initialize(jax.random.key(0), x, 2)
    wrong = np.ones((100, 1))
    for fn in (em.bic, em.aic, em.log_prob, em.e_step):
        # Before: bic/aic/log_prob broadcast (100, 1) against 2 features (bic: 618.2).
        with pytest.raises(ValueError, match="`x` must have 2 features"):
            fn(wrong, gmm)
    heavy = gmm._replace(weights=jnp.asarray([0.7, 0.7]))
    with pytest.raises(ValueError, match="`init.weights` must sum to 1; got 1.39"):
        em.fit(x, 2, key=jax.random.key(0), init=heavy)
    for name, value in (("tol", float("nan")), ("tol", -1.0), ("reg_covar", float("inf")),
                        ("max_iter", 2.5), ("n_init", True)):
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            em.fit(x, 2, key=jax.random.key(0), **{name: value})
    with pytest.raises(ValueError, match="`gmm.scale_tril` must have shape"):
        em.log_prob(x, dataclass_replace(gmm, scale_tril=jnp.ones((2, 3, 3))))
    with pytest.raises(ValueError, match="`n_components` must be"):
        em.initialize(jax.random.key(0), x, 0)


def dataclass_replace(gmm, **kwargs):
    import dataclasses

    return dataclasses.replace(gmm, **kwargs)
