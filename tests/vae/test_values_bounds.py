"""The hierarchical VAE's bounds (`jaxvi.elbo`) and the wake-sleep terms pinned by VALUE
against NumPy/SciPy: each ELBO term with S > 1 samples and K > 1 components and an
unnormalised prior, the IWAE bound, both likelihoods (fractional Bernoulli targets too), the
prior's posterior and marginal, `sample_w`'s moments, and `rws_terms`' head KL, effective
sample size and IWAE term recomputed from the model's networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats
from scipy.special import expit, log_softmax, logsumexp, softmax

from jaxvi.vae import bounds as E
from jaxvi.vae import wake_sleep
from jaxvi.vae.model import HierarchicalVAE, VAEConfig

RNG = np.random.default_rng(1801)
S, K, L = 4, 3, 2


def _case():
    return dict(
        log_px_w=RNG.normal(size=S) - 5.0,
        w=RNG.normal(size=(S, L)),
        w_mean=RNG.normal(size=L) * 0.5,
        w_scale=RNG.uniform(0.4, 1.5, size=L),
        qz_logits=RNG.normal(size=(S, K)) * 2.0,
        prior_logits=RNG.normal(size=K) + 5.0,  # unnormalised on purpose
        prior_mean=RNG.normal(size=(K, L)) * 2.0,
        prior_scale=RNG.uniform(0.5, 2.0, size=(K, L)),
    )


def _log_n(w, m, s):  # log N(w; m, diag s²) summed over the last axis
    return np.sum(stats.norm.logpdf(w, m, s), axis=-1)


def _log_pw_z(c):  # (S, K)
    return np.stack([_log_n(c["w"], c["prior_mean"][k], c["prior_scale"][k])
                     for k in range(K)], -1)


def test_elbo_terms_equal_numpy(x64):
    c = _case()
    t = E.elbo_terms(**c)
    qz, log_qz = softmax(c["qz_logits"], -1), log_softmax(c["qz_logits"], -1)
    log_pi = log_softmax(c["prior_logits"])
    kl_z = np.mean(np.sum(qz * (log_qz - log_pi), -1))
    kl_w = np.mean(_log_n(c["w"], c["w_mean"], c["w_scale"])
                   - np.sum(qz * _log_pw_z(c), -1))
    np.testing.assert_allclose(t.reconstruction, np.mean(c["log_px_w"]), rtol=1e-12)
    np.testing.assert_allclose(t.kl_z, kl_z, rtol=1e-11)
    np.testing.assert_allclose(t.kl_w, kl_w, rtol=1e-11)
    np.testing.assert_allclose(E.elbo(**c), np.mean(c["log_px_w"]) - kl_z - kl_w, rtol=1e-11)
    t32 = E.elbo_terms(**{k: np.float32(v) for k, v in c.items()})
    np.testing.assert_allclose(t32.kl_w, kl_w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(t32.kl_z, kl_z, rtol=1e-4, atol=1e-5)


def test_iwae_prior_posterior_and_marginal_equal_numpy(x64):
    c = _case()
    log_pi = log_softmax(c["prior_logits"])
    joint = log_pi + _log_pw_z(c)
    np.testing.assert_allclose(
        E.prior_posterior_logits(c["w"], c["prior_logits"], c["prior_mean"], c["prior_scale"]),
        joint, rtol=1e-11)
    log_pw = logsumexp(joint, -1)
    np.testing.assert_allclose(
        E.log_marginal_prior(c["w"], c["prior_logits"], c["prior_mean"], c["prior_scale"]),
        log_pw, rtol=1e-11)
    log_w = c["log_px_w"] + log_pw - _log_n(c["w"], c["w_mean"], c["w_scale"])
    want = logsumexp(log_w) - np.log(S)
    args = {k: c[k] for k in ("log_px_w", "w", "w_mean", "w_scale", "prior_logits",
                              "prior_mean", "prior_scale")}
    np.testing.assert_allclose(E.iwae_bound(**args), want, rtol=1e-11)
    one = {**args, "log_px_w": c["log_px_w"][:1], "w": c["w"][:1]}
    np.testing.assert_allclose(E.iwae_bound(**one), log_w[0], rtol=1e-11)  # k = 1: no log k


def test_likelihoods_equal_scipy(x64):
    d = 5
    x = RNG.uniform(size=d)  # fractional Bernoulli targets
    logits = RNG.normal(size=(3, d)) * 3
    want = np.sum(x * np.log(expit(logits)) + (1 - x) * np.log(expit(-logits)), -1)
    np.testing.assert_allclose(E.bernoulli_log_likelihood(x, logits), want, rtol=1e-11)
    xb = (x > 0.5).astype(float)
    np.testing.assert_allclose(E.bernoulli_log_likelihood(xb, logits),
                               np.sum(stats.bernoulli.logpmf(xb, expit(logits)), -1), rtol=1e-10)
    mean, scale = RNG.normal(size=(3, d)), RNG.uniform(0.2, 2.0, size=(3, d))
    np.testing.assert_allclose(E.gaussian_log_likelihood(x, mean, scale),
                               np.sum(stats.norm.logpdf(x, mean, scale), -1), rtol=1e-11)
    np.testing.assert_allclose(E.gaussian_log_likelihood(np.float32(x), np.float32(mean),
                                                         np.float32(scale)),
                               np.sum(stats.norm.logpdf(x, mean, scale), -1), rtol=1e-5)


def test_sample_w_moments(x64):
    n = 20_000
    m, s = np.array([1.0, -2.0, 0.5]), np.array([0.3, 2.0, 1.0])
    w = np.asarray(E.sample_w(m, s, n, key=jax.random.key(0)))
    np.testing.assert_array_less(np.abs(w.mean(0) - m), 5 * s / np.sqrt(n))
    np.testing.assert_array_less(np.abs(w.std(0) - s), 5 * s / np.sqrt(2 * n))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_rws_terms_equal_numpy_from_the_networks(x64, likelihood):
    cfg = VAEConfig(data_dim=4, components=3, latent_dim=2, hidden=(8,), head_hidden=(8,),
                    likelihood=likelihood)
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(1), (2, 4), jnp.float32)
    key, n = jax.random.key(2), 5
    t = wake_sleep.rws_terms(model, x, key=key, num_samples=n)
    mean, scale = model.encoder(x)
    logits, pm, ps = (np.asarray(a, np.float64) for a in model.prior())
    keys = jax.random.split(key, x.shape[0])
    for b in range(x.shape[0]):
        w = E.sample_w(mean[b], scale[b], n, key=keys[b])  # the draws rws_terms makes
        log_px = np.asarray(model.decoder.log_prob(x[b], model.decoder(w)), np.float64)
        ql = np.asarray(model.head(w, x[b], model.prior()), np.float64)
        w = np.asarray(w, np.float64)
        joint = log_softmax(logits) + np.stack([_log_n(w, pm[k], ps[k]) for k in range(3)], -1)
        log_q = _log_n(w, np.asarray(mean[b], np.float64), np.asarray(scale[b], np.float64))
        log_wt = log_px + logsumexp(joint, -1) - log_q
        wbar = softmax(log_wt)
        p_z = softmax(joint, -1)
        head_kl = np.sum(wbar * np.sum(p_z * (np.log(p_z) - log_softmax(ql, -1)), -1))
        np.testing.assert_allclose(t.iwae[b], logsumexp(log_wt) - np.log(n), rtol=1e-4)
        np.testing.assert_allclose(t.head_kl[b], head_kl, rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(t.ess[b], 1.0 / np.sum(wbar**2), rtol=1e-4)
        np.testing.assert_allclose(t.encoder[b], -np.sum(wbar * log_q), rtol=1e-4)
