"""Tests for jaxvi.vi.losses: the exclusive/inclusive KL losses (unbiased, unnormalised
targets, SNIS, finite gradients), the SNIS forward-KL surrogate of an amortised q, a mixture
target, and the checks of targets, families and proposals."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from shared_inputs import COV, LOC, W, mixture_moments_f64, mvn_kl_np

from jaxvi import vi
from jaxvi.mixture import Mixture


def _q_params(family, rng):
    """Random Gaussian-family parameters: softplus(0.5 ± 0.3) scales, ±0.3 correlations."""
    shape = family.param_shapes().raw_scale
    return vi.GaussianParams(jnp.asarray(rng.normal(size=family.dim)),
                             jnp.asarray(0.5 + 0.3 * rng.normal(size=shape)))


def _target(weights, loc, cov) -> Mixture:
    return Mixture.from_covariance(np.log(np.asarray(weights, float)), loc, cov)


def test_mixture_target_matches_scipy(x64):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 2)) * 3.0)
    target = _target(W, LOC, COV)
    ref = np.log(sum(w * multivariate_normal(m, c).pdf(np.asarray(x))
                     for w, m, c in zip(W, LOC, COV, strict=True)))
    np.testing.assert_allclose(target.log_prob(x), ref, rtol=1e-10, atol=1e-10)
    mean, cov = mixture_moments_f64(W, LOC, COV)
    np.testing.assert_allclose(target.moments()[0], mean, atol=1e-12)
    np.testing.assert_allclose(target.moments()[1], cov, atol=1e-12)
    draws = np.asarray(target.sample(seed=jax.random.key(0), sample_shape=(40_000,)))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.05)


# --------------------------------------------------------------------------------------------
# The losses are unbiased (Gaussian target, closed-form KL) and their gradients finite.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_cls", [vi.FullCovGaussian, vi.DiagGaussian])
@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_losses_are_unbiased(x64, family_cls, direction):
    rng = np.random.default_rng(1)
    family = family_cls(3)
    params = _q_params(family, rng)
    a = rng.normal(size=(3, 3))
    t_mean, t_cov = rng.normal(size=3), a @ a.T + 0.5 * np.eye(3)
    target = distrax.MultivariateNormalFullCovariance(jnp.asarray(t_mean), jnp.asarray(t_cov))
    q_mean, q_cov = family.moments(params)
    if direction == "reverse":
        exact = mvn_kl_np(q_mean, q_cov, t_mean, t_cov)
        loss = vi.reverse_kl_loss
    else:
        exact = mvn_kl_np(t_mean, t_cov, q_mean, q_cov)
        loss = vi.forward_kl_loss
    keys = jax.random.split(jax.random.key(0), 4000)
    est = jax.jit(jax.vmap(lambda k: loss(params, target, family=family, key=k, num_samples=4)))
    values = np.asarray(est(keys))
    se = values.std() / np.sqrt(values.size)
    assert abs(values.mean() - exact) < 4 * se + 1e-9, (values.mean(), exact, se)
    # jit and eager agree for the same key.
    one = loss(params, target, family=family, key=keys[0], num_samples=4)
    np.testing.assert_allclose(one, values[0], rtol=1e-10)


def test_unnormalised_targets(x64):
    """Adding a constant c to log p shifts the reverse loss by −c and leaves the SNIS forward
    estimate (which estimates log Z) unchanged."""
    target = _target(W, LOC, COV)
    shifted = lambda x: target.log_prob(x) + 3.0  # noqa: E731
    family = vi.FullCovGaussian(2)
    params = family.init(loc=[0.0, 0.0], scale=2.0)

    @jax.jit
    def losses(key):
        kw = {"family": family, "key": key, "num_samples": 16}
        return (vi.reverse_kl_loss(params, target, **kw),
                vi.reverse_kl_loss(params, shifted, **kw),
                vi.forward_kl_loss(params, target, estimator="snis", **kw),
                vi.forward_kl_loss(params, shifted, **kw))  # "auto": SNIS for a callable

    rev, rev_s, fwd, fwd_s = losses(jax.random.key(3))
    np.testing.assert_allclose(rev_s, rev - 3.0, rtol=1e-12)
    np.testing.assert_allclose(fwd_s, fwd, rtol=1e-10)


def test_snis_forward_is_consistent(x64):
    """SNIS from q (or from a proposal) approaches the closed-form KL(p ‖ q) for large n."""
    target = distrax.MultivariateNormalFullCovariance(jnp.array([0.5, -0.3]),
                                                      jnp.array([[1.0, 0.3], [0.3, 0.7]]))
    family = vi.FullCovGaussian(2)
    params = family.init(loc=[0.0, 0.0], scale=1.6)
    exact = mvn_kl_np([0.5, -0.3], [[1.0, 0.3], [0.3, 0.7]], *family.moments(params))
    proposal = distrax.MultivariateNormalDiag(jnp.zeros(2), 2.0 * jnp.ones(2))

    @jax.jit
    def estimates(k1, k2):
        kw = {"family": family, "num_samples": 50_000}
        return (vi.forward_kl_loss(params, target, key=k1, estimator="snis", **kw),
                vi.forward_kl_loss(params, target, key=k2, proposal=proposal, **kw))

    for est in estimates(jax.random.key(0), jax.random.key(1)):
        np.testing.assert_allclose(est, exact, atol=0.02)


def test_gradients_are_finite():
    """Every estimator on the full Gaussian, SNIS from q on the mixture family. Each gradient
    row is finite and not identically zero."""
    target = _target(W, LOC, COV)
    proposal = _target([1.0], [[0.0, 0.0]], [9.0 * np.eye(2)])
    key = jax.random.key(0)
    estimators = {
        "reverse": lambda p, f: vi.reverse_kl_loss(p, target, family=f, key=key),
        "forward": lambda p, f: vi.forward_kl_loss(p, target, family=f, key=key),
        "snis-q": lambda p, f: vi.forward_kl_loss(p, target, family=f, key=key, estimator="snis"),
        "snis-proposal": lambda p, f: vi.forward_kl_loss(p, target, family=f, key=key,
                                                         proposal=proposal),
    }
    # (The diagonal family's and the mixture's reverse/target-sample gradients are exercised by
    # the fits in test_fit.py.)
    plan = [(vi.FullCovGaussian(2), list(estimators)), (vi.GaussianMixtureFamily(2, 3), ["snis-q"])]
    for family, names in plan:
        @jax.jit
        def values_and_grads(p, f=family, names=names):
            return [jax.value_and_grad(lambda q, n=n: estimators[n](q, f))(p) for n in names]

        for value, grads in values_and_grads(family.init(key=key)):
            assert np.isfinite(value)
            leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]
            assert all(np.all(np.isfinite(g)) for g in leaves)
            assert any(np.any(g != 0) for g in leaves)


# --------------------------------------------------------------------------------------------
# The forward-KL encoder objective of an amortised q with a discrete latent.
# --------------------------------------------------------------------------------------------


def _discrete_model(rng, k=4, d=2, n=5):
    log_prior = jnp.asarray(np.log(rng.dirichlet(np.ones(k))))
    means = jnp.asarray(2.0 * rng.normal(size=(k, d)))
    x = jnp.asarray(rng.normal(size=(n, d)) * 2.0)
    # log p(x_n, z) for every z: (N, K)
    log_joint = log_prior + jnp.sum(
        -0.5 * (x[:, None, :] - means) ** 2 - 0.5 * jnp.log(2 * jnp.pi), -1)
    enc = {"w": jnp.asarray(0.5 * rng.normal(size=(d, k))), "b": jnp.asarray(rng.normal(size=k))}
    log_q = lambda e: jax.nn.log_softmax(x @ e["w"] + e["b"], -1)  # noqa: E731
    return x, log_joint, enc, log_q


def _exact_forward_kl(enc, log_joint, log_q):
    log_post = jax.nn.log_softmax(log_joint, -1)
    return jnp.mean(jnp.sum(jnp.exp(log_post) * (log_post - log_q(enc)), -1))


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_snis_surrogate_enumeration_is_exact(seed):
    """Enumerating z under a uniform proposal, the surrogate's gradient is ∇ KL(p(z|x) ‖ q(z|x))
    exactly and its value is that KL plus the posterior entropy."""
    with jax.enable_x64(True):
        _, log_joint, enc, log_q = _discrete_model(np.random.default_rng(seed))
        surrogate = lambda e: jnp.mean(vi.snis_forward_kl_surrogate(log_q(e), log_joint))  # noqa: E731
        g_exact = jax.grad(_exact_forward_kl)(enc, log_joint, log_q)
        g_sur = jax.grad(surrogate)(enc)
        for a, b in zip(jax.tree_util.tree_leaves(g_sur), jax.tree_util.tree_leaves(g_exact),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        log_post = jax.nn.log_softmax(log_joint, -1)
        entropy = -jnp.mean(jnp.sum(jnp.exp(log_post) * log_post, -1))
        np.testing.assert_allclose(surrogate(enc),
                                   _exact_forward_kl(enc, log_joint, log_q) + entropy, rtol=1e-9)


def test_snis_surrogate_with_samples_from_q_matches_definition(x64):
    """z_s ~ q(z | x), log-weights log p(x, z_s) − log q(z_s | x): the surrogate's gradient
    converges to the gradient of KL(p(z | x) ‖ q(z | x)) computed by enumeration."""
    x, log_joint, enc, log_q = _discrete_model(np.random.default_rng(7))
    num = 40_000
    z = jax.random.categorical(jax.random.key(0), log_q(enc)[:, None, :],
                               shape=(x.shape[0], num))  # (N, S), no gradient

    def surrogate(e):
        lq = jnp.take_along_axis(log_q(e), z, -1)
        lw = jnp.take_along_axis(log_joint, z, -1) - lq
        return jnp.mean(vi.snis_forward_kl_surrogate(lq, lw))

    g_exact = jax.grad(_exact_forward_kl)(enc, log_joint, log_q)
    g_sur = jax.jit(jax.grad(surrogate))(enc)
    flat = lambda g: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)])  # noqa: E731
    err = np.linalg.norm(flat(g_sur) - flat(g_exact)) / np.linalg.norm(flat(g_exact))
    assert err < 0.05, err


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_the_argument():
    target = _target(W, LOC, COV)
    key = jax.random.key(0)
    fam = vi.FullCovGaussian(2)
    cases = [
        (lambda: vi.forward_kl_loss(fam.init(), target.log_prob, family=fam, key=key,
                                    estimator="target-samples"), "target"),
        (lambda: vi.reverse_kl_loss(fam.init(), target, family="cholesky", key=key), "family"),
        (lambda: vi.snis_forward_kl_surrogate(jnp.zeros(3), jnp.zeros(4)), "log_q"),
        # The mixture target's constructor.
        (lambda: Mixture.from_covariance(np.log(W)[:2], LOC, COV), "logits"),
        (lambda: _target(W, LOC, COV[:, :1]), "cov"),
        (lambda: _target(W, LOC, -COV), "cov"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            call()


def test_targets_and_proposals_are_checked():
    with pytest.raises(ValueError, match="`loc` .*`cov`"):
        Mixture.from_covariance(np.log(np.ones(2) / 2), np.zeros((2, 3)), np.zeros((3, 3, 3)))
    target = _target(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match="`x` and `loc`"):
        target.log_prob(np.zeros(3))
    with pytest.raises(ValueError, match="`proposal`"):
        vi.forward_kl_loss(vi.DiagGaussian(2).init(), target, family=vi.DiagGaussian(2),
                           key=jax.random.key(0), estimator="snis", proposal=object())


@pytest.mark.parametrize("jit", [False, True])
def test_a_target_must_return_one_log_density_per_point(jit):
    """A callable target returning (D,) per point (an elementwise log density left unsummed):
    a ValueError at trace time naming `target`, one log-density per point and the shape it
    returned, for both directions (not "Incompatible shapes for broadcasting")."""
    fam = vi.FullCovGaussian(2)
    key = jax.random.key(0)

    def per_coordinate(x):
        return -0.5 * x**2

    def reverse(params):
        return vi.reverse_kl_loss(params, per_coordinate, family=fam, key=key)

    def forward(params):
        return vi.forward_kl_loss(params, per_coordinate, family=fam, key=key)

    message = r"`target` must return one log-density .* per point.*returned shape \(2,\)"
    for loss in (reverse, forward):
        with pytest.raises(ValueError, match=message):
            (jax.jit(loss) if jit else loss)(fam.init())
    with pytest.raises(ValueError, match=message):
        vi.fit(per_coordinate, fam, "reverse", key=key, steps=2, optimizer=optax.adam(0.1))
    # Summed over the coordinates it is a valid (unnormalised) target.
    assert np.isfinite(vi.reverse_kl_loss(fam.init(), lambda x: per_coordinate(x).sum(),
                                          family=fam, key=key))
