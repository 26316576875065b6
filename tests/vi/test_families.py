"""Tests for jaxvi.vi.families: the densities of the three families against distrax, the
mixture family's stratified draws, and `init`'s and `make_family`'s argument checks."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvi import vi

W = np.array([0.5, 0.3, 0.2])
LOC = np.array([[-3.0, -2.0], [3.0, 0.0], [-1.0, 3.5]])


def _q_params(family, rng):
    """Random Gaussian-family parameters: softplus(0.5 ± 0.3) scales, ±0.3 correlations."""
    shape = family.param_shapes().raw_scale
    return vi.GaussianParams(jnp.asarray(rng.normal(size=family.dim)),
                             jnp.asarray(0.5 + 0.3 * rng.normal(size=shape)))


# --------------------------------------------------------------------------------------------
# Densities against distrax.
# --------------------------------------------------------------------------------------------


@jax.jit
def _log_probs_and_references(x, full_p, diag_p, mix_p):
    """(ours, distrax) log densities of the three families at x: (N, 3), under jit."""
    full, diag, mix = vi.FullCovGaussian(3), vi.DiagGaussian(3), vi.GaussianMixtureFamily(3, 2)
    ours = [full.log_prob(full_p, x), diag.log_prob(diag_p, x), mix.log_prob(mix_p, x)]
    refs = [
        distrax.MultivariateNormalTri(full_p.loc, full.scale_tril(full_p)).log_prob(x),
        distrax.MultivariateNormalDiag(diag_p.loc, diag.scale(diag_p)).log_prob(x),
        distrax.MixtureSameFamily(
            distrax.Categorical(logits=mix_p.logits),
            distrax.MultivariateNormalTri(mix_p.loc, mix.scale_tril(mix_p))).log_prob(x),
    ]
    return jnp.stack(ours), jnp.stack(refs)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_family_log_probs_match_distrax(seed):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(5, 3)))
        mix = vi.GaussianMixtureFamily(3, 2)
        mix_p = mix.init(loc=rng.normal(size=(2, 3)), scale=np.exp(0.3 * rng.normal(size=(2, 3))))
        mix_p = mix_p._replace(logits=jnp.asarray(rng.normal(size=2)),
                               raw_scale=mix_p.raw_scale + jnp.asarray(
                                   np.tril(0.3 * rng.normal(size=(2, 3, 3)), -1)))
        ours, refs = _log_probs_and_references(
            x, _q_params(vi.FullCovGaussian(3), rng), _q_params(vi.DiagGaussian(3), rng), mix_p)
        np.testing.assert_allclose(ours, refs, rtol=1e-10, atol=1e-10)


def test_mixture_weighted_rsample_is_unbiased():
    """Σ w f(x) over the stratified draws of a mixture q estimates E_q[f]: here its mean."""
    family = vi.GaussianMixtureFamily(2, 3)
    params = family.init(loc=LOC, scale=0.7)._replace(logits=jnp.log(jnp.asarray(W)))
    x, w = family.weighted_rsample(params, key=jax.random.key(0), n=20_000)
    np.testing.assert_allclose(jnp.sum(w[:, None] * x, 0), W @ LOC, atol=0.02)
    np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [vi.FullCovGaussian(2), vi.DiagGaussian(2),
                                    vi.GaussianMixtureFamily(2, 3)])
@pytest.mark.parametrize("scale", [0.0, -1.0, np.nan, 1e-40, np.ones(5)])
def test_family_init_refuses_bad_scale(family, scale):
    with pytest.raises(ValueError, match="`scale`"):
        family.init(key=jax.random.key(0), scale=scale)


def test_family_init_checks_loc_and_keeps_good_values():
    fam = vi.DiagGaussian(3)
    with pytest.raises(ValueError, match=r"`loc` must have shape \(3,\)"):
        fam.init(loc=np.zeros(2))
    with pytest.raises(ValueError, match="`loc` must be finite"):
        fam.init(loc=np.array([0.0, np.inf, 0.0]))
    params = fam.init(loc=np.arange(3.0), scale=np.array([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(fam.scale(params), [0.5, 1.0, 2.0], rtol=1e-6)
    params = vi.FullCovGaussian(2).init(scale=1e-30)  # tiny but normal: fine
    np.testing.assert_allclose(jnp.diagonal(vi.FullCovGaussian(2).scale_tril(params)), 1e-30,
                               rtol=1e-5)


def test_make_family_refuses_bad_sizes_naming_the_argument():
    cases = [
        (lambda: vi.make_family("mixture", 2, num_components=0), "num_components"),
        (lambda: vi.make_family("diag", 0), "dim"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            call()
