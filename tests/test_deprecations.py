"""Names renamed by issue 26, each still accepted for one release with a DeprecationWarning
that names the new one, and giving the same result as the new name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvi import em
from jaxvi.vae.losses import elbo_loss
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model
from jaxvi.vae.recipe import TrainConfig
from jaxvi.vae.wake_sleep import rws_terms

CFG = VAEConfig(data_dim=4, components=2, latent_dim=2, hidden=(8,), head_hidden=(4,))


def test_em_component_log_prob_is_conditional_log_prob():
    gmm = em.GMM(jnp.array([0.3, 0.7]), jnp.array([[0.0], [2.0]]), jnp.ones((2, 1)), "diag")
    x = jnp.array([[0.5], [1.5]])
    with pytest.warns(DeprecationWarning, match="conditional_log_prob"):
        old = em.component_log_prob
    np.testing.assert_array_equal(old(x, gmm), em.conditional_log_prob(x, gmm))
    with pytest.raises(AttributeError):
        em.no_such_name  # noqa: B018


def test_vae_monte_carlo_n_samples_is_num_samples():
    model = HierarchicalVAE(CFG, rngs=nnx.Rngs(0))
    x, key = jax.random.uniform(jax.random.key(1), (3, 4)), jax.random.key(2)
    for method in ("elbo", "iwae", "cluster_probs"):
        with pytest.warns(DeprecationWarning, match="`num_samples`"):
            old = getattr(model, method)(x, key=key, n_samples=3)
        np.testing.assert_array_equal(old, getattr(model, method)(x, key=key, num_samples=3))
    with pytest.raises(TypeError, match="num_samples"):
        model.elbo(x, key=key, n_samples=2, num_samples=2)
    with pytest.warns(DeprecationWarning, match="rws_terms"):
        old = rws_terms(model, x, key=key, n_samples=3).iwae
    np.testing.assert_array_equal(old, model.iwae(x, key=key, num_samples=3))
    graphdef, params = split_model(model)
    with pytest.warns(DeprecationWarning, match="elbo_loss"):
        old = elbo_loss(graphdef, n_samples=2)(params, x, key)[0]
    np.testing.assert_array_equal(old, elbo_loss(graphdef, num_samples=2)(params, x, key)[0])


def test_train_config_n_samples_is_elbo_samples():
    with pytest.warns(DeprecationWarning, match="`elbo_samples`"):
        tc = TrainConfig(n_samples=3)
    assert tc == TrainConfig(elbo_samples=3)
    # a checkpoint written before the rename loads with its setting
    assert TrainConfig.from_dict({"n_samples": 2}).elbo_samples == 2
