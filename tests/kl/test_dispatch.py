"""`jaxvi.kl.kl_divergence`: closed forms for distrax Gaussians and categoricals, mixture
estimates for distrax mixtures and `jaxvi.mixture.Mixture`, errors for unsupported pairs."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared_inputs import random_gaussian_params, random_mixture

from jaxvi import kl
from jaxvi.kl import dispatch

D = 3


def test_kl_divergence_dispatch(x64):
    rng = np.random.default_rng(8)
    lp, sp, tp, cp = (jnp.asarray(a) for a in random_gaussian_params(rng, (2,)))
    lq, sq, tq, cq = (jnp.asarray(a) for a in random_gaussian_params(rng, (2,)))
    diag_p, diag_q = distrax.MultivariateNormalDiag(lp, sp), distrax.MultivariateNormalDiag(lq, sq)
    tri_p, tri_q = distrax.MultivariateNormalTri(lp, tp), distrax.MultivariateNormalTri(lq, tq)
    full_p = distrax.MultivariateNormalFullCovariance(lp, cp)
    full_q = distrax.MultivariateNormalFullCovariance(lq, cq)
    for p, q in [(diag_p, diag_q), (tri_p, tri_q), (full_p, full_q), (diag_p, tri_q),
                 (full_p, diag_q), (tri_p, full_q)]:
        np.testing.assert_allclose(kl.kl_divergence(p, q), p.kl_divergence(q), rtol=1e-10)
    normal_p, normal_q = distrax.Normal(lp, sp), distrax.Normal(lq, sq)
    np.testing.assert_allclose(kl.kl_divergence(normal_p, normal_q),
                               normal_p.kl_divergence(normal_q), rtol=1e-10)
    cat_p, cat_q = distrax.Categorical(logits=lp), distrax.Categorical(logits=lq)
    np.testing.assert_allclose(kl.kl_divergence(cat_p, cat_q), cat_p.kl_divergence(cat_q),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="`p` and `q`"):
        kl.kl_divergence(normal_p, cat_q)
    with pytest.raises(ValueError, match="method"):
        kl.kl_divergence(diag_p, diag_q, method="nope")


def test_kl_divergence_with_distrax_mixtures(x64):
    rng = np.random.default_rng(6)
    p, q = random_mixture(rng, 2), random_mixture(rng, 3)

    def to_distrax(m):
        return distrax.MixtureSameFamily(distrax.Categorical(logits=m.logits),
                                         distrax.MultivariateNormalTri(m.loc, m.scale_tril))

    dp, dq = to_distrax(p), to_distrax(q)
    np.testing.assert_allclose(kl.kl_divergence(dp, dq, method="variational"),
                               kl.mixture_variational(p, q), rtol=1e-12)
    np.testing.assert_allclose(kl.kl_divergence(dp, dq, method="matched"),
                               kl.mixture_matched_upper_bound(p, q), rtol=1e-12)
    mc = kl.kl_divergence(dp, dq, key=jax.random.key(0), method="monte_carlo",
                          num_samples=2000)
    ref = kl.mixture_monte_carlo(jax.random.key(0), p, q, 2000)
    np.testing.assert_allclose(mc, ref.estimate, rtol=1e-10)
    # A single MVN against a mixture is a one-component mixture.
    single = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    b = kl.mixture_bounds(dispatch._as_mixture(single), q)
    assert b.lower <= kl.kl_divergence(single, dq, method="variational") <= b.upper
    assert kl.kl_divergence(dp, dq, method="lower") <= kl.kl_divergence(dp, dq, method="upper")
    with pytest.raises(ValueError, match="`key`"):
        kl.kl_divergence(dp, dq, method="monte_carlo")


def test_kl_divergence_never_switches_estimator_on_a_key(x64):
    """"auto" is the closed form or an error; a key goes with "monte_carlo" only."""
    rng = np.random.default_rng(7)
    p, q = random_mixture(rng, 2), random_mixture(rng, 3)
    with pytest.raises(ValueError, match="must name an estimate"):
        kl.kl_divergence(p, q)
    for method in ("auto", "variational", "upper"):
        with pytest.raises(ValueError, match="`key` is used by method='monte_carlo' only"):
            kl.kl_divergence(p, q, key=jax.random.key(0), method=method)
    # the variational estimate is the same with or without a key nearby: a key is refused
    v = kl.kl_divergence(p, q, method="variational")
    np.testing.assert_allclose(v, kl.mixture_variational(p, q), rtol=1e-12)
    # Gaussians: the closed form, with or without a key for monte_carlo
    a = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    b = distrax.MultivariateNormalDiag(jnp.ones(2), 2 * jnp.ones(2))
    np.testing.assert_allclose(kl.kl_divergence(a, b), a.kl_divergence(b), rtol=1e-12)
    np.testing.assert_allclose(kl.kl_divergence(a, b, key=jax.random.key(0),
                                                method="monte_carlo"),
                               a.kl_divergence(b), rtol=1e-12)


def test_kl_divergence_falls_back_to_distrax_registered_kls(x64):
    p, q = distrax.Beta(2.0, 3.0), distrax.Beta(1.0, 1.5)
    np.testing.assert_allclose(kl.kl_divergence(p, q), p.kl_divergence(q), rtol=1e-12)
    with pytest.raises(ValueError, match="registered KL"):
        kl.kl_divergence(distrax.Normal(0.0, 1.0), distrax.Beta(1.0, 1.0))
