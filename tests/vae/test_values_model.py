"""`HierarchicalVAE.sample` / `sample_given` checked by per-component moments: the decoder is
set to the exact identity (relu(w) − relu(−w)), so the returned x are the draws w ~ p(w | z)
themselves, and each component's mean and standard deviation, and the labels' frequencies,
are compared with the prior's within 5 standard errors of the sample size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvi.vae.model import HierarchicalVAE, VAEConfig

L = 2
WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[-4.0, 1.0], [3.0, -2.0], [0.5, 5.0]])
SCALES = np.array([[2.0, 0.5], [0.3, 1.5], [1.0, 0.1]])


def _identity_decoder_model():
    cfg = VAEConfig(data_dim=L, components=3, latent_dim=L, hidden=(2 * L,), head_hidden=(4,))
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(0))
    eye = np.eye(L, dtype=np.float32)
    net = model.decoder.net
    net.hidden[0].kernel[...] = jnp.asarray(np.hstack([eye, -eye]))
    net.hidden[0].bias[...] = jnp.zeros(2 * L)
    net.out.kernel[...] = jnp.asarray(np.vstack([eye, -eye]))
    net.out.bias[...] = jnp.zeros(L)
    model.prior.logits[...] = jnp.asarray(np.log(WEIGHTS), jnp.float32)
    model.prior.mean[...] = jnp.asarray(MEANS, jnp.float32)
    model.prior.raw_scale[...] = jnp.asarray(np.log(np.expm1(SCALES - 1e-4)), jnp.float32)
    return model


def _check_moments(w, k):
    n = len(w)
    np.testing.assert_array_less(np.abs(w.mean(0) - MEANS[k]), 5 * SCALES[k] / np.sqrt(n))
    np.testing.assert_array_less(np.abs(w.std(0) - SCALES[k]), 5 * SCALES[k] / np.sqrt(2 * n))


def test_decoder_is_the_identity():
    model = _identity_decoder_model()
    w = jnp.asarray(np.random.default_rng(0).normal(size=(5, L)) * 3, jnp.float32)
    np.testing.assert_allclose(model.decoder.mean(model.decoder(w)), w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_sample_of_a_given_component_has_its_moments(k):
    model = _identity_decoder_model()
    x, z = model.sample(jax.random.key(k), 4000, component=k)
    assert np.all(np.asarray(z) == k)
    _check_moments(np.asarray(x, np.float64), k)


def test_sample_labels_follow_the_prior_weights_and_each_has_its_moments():
    model = _identity_decoder_model()
    n = 12_000
    x, z = model.sample(jax.random.key(11), n)
    x, z = np.asarray(x, np.float64), np.asarray(z)
    freq = np.bincount(z, minlength=3) / n
    np.testing.assert_array_less(np.abs(freq - WEIGHTS), 5 * np.sqrt(WEIGHTS * (1 - WEIGHTS) / n))
    for k in range(3):
        _check_moments(x[z == k], k)


def test_sample_given_follows_the_labels_it_is_given():
    model = _identity_decoder_model()
    z = jnp.asarray(np.repeat([2, 0, 1], 3000))
    x = np.asarray(model.sample_given(jax.random.key(4), z), np.float64)
    for k in range(3):
        _check_moments(x[np.asarray(z) == k], k)


def test_decoder_and_encoder_scales_are_floored_softplus():
    """Gaussian decoder: σ_x = min_scale + softplus(raw) per pixel (0.2 + min_scale at
    initialisation, min_scale when raw → −∞); encoder: s(x) = min_latent_scale + softplus."""
    cfg = VAEConfig(data_dim=3, components=2, latent_dim=2, hidden=(4,), head_hidden=(4,),
                    min_scale=0.07, min_latent_scale=0.01)
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(0))
    w = jnp.zeros((2, 2))
    _, scale = model.decoder(w)
    np.testing.assert_allclose(scale, np.full((2, 3), 0.27), rtol=1e-6)
    model.decoder.raw_scale[...] = jnp.full(3, -50.0)
    np.testing.assert_allclose(model.decoder(w)[1], np.full((2, 3), 0.07), rtol=1e-6)
    model.encoder.net.out.kernel[...] = jnp.zeros_like(model.encoder.net.out.kernel[...])
    model.encoder.net.out.bias[...] = jnp.asarray([0.0, 0.0, -50.0, 1.0])
    mean, s = model.encoder(jnp.ones((1, 3)))
    np.testing.assert_allclose(mean, np.zeros((1, 2)), atol=1e-7)
    np.testing.assert_allclose(s, [[0.01, 0.01 + np.log1p(np.e)]], rtol=1e-6)


def test_one_component_is_a_vae_with_one_gaussian_prior():
    """K = 1: q(z | w, x) is 1, the categorical KL is 0, and the ELBO is the plain VAE's,
    log p(x | w) − log q(w | x) + log N(w; μ, σ) at the same draws of w (scipy densities)."""
    from scipy import stats

    cfg = VAEConfig(data_dim=3, components=1, latent_dim=L, hidden=(8,), head_hidden=(4,))
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(1))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)), jnp.float32)
    key = jax.random.key(3)
    terms = model.elbo_terms(x, key=key, num_samples=4)
    w, m, s = (np.asarray(a, np.float64) for a in model.sample_latents(x, key=key, num_samples=4))
    _, mu, sigma = (np.asarray(a, np.float64) for a in model.prior())
    log_q = stats.norm.logpdf(w, m[:, None], s[:, None]).sum(-1)
    log_p = stats.norm.logpdf(w, mu[0], sigma[0]).sum(-1)
    np.testing.assert_allclose(terms.kl_z, 0.0, atol=1e-6)
    np.testing.assert_allclose(terms.kl_w, (log_q - log_p).mean(1), rtol=1e-4, atol=1e-4)
    probs = model.cluster_probs(x, key=key)
    np.testing.assert_array_equal(np.asarray(probs), 1.0)
