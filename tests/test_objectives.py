"""Tests for jaxvi.objectives: the exclusive/inclusive KL losses, the fitting loop, the SNIS
forward-KL surrogate of an amortised q, and the boundary checks."""

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

from jaxvi import objectives as O

# A 2-D mixture with unequal weights and well separated modes.
W = np.array([0.5, 0.3, 0.2])
LOC = np.array([[-3.0, -2.0], [3.0, 0.0], [-1.0, 3.5]])
COV = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.8]], [[0.6, -0.2], [-0.2, 0.4]]])


def _moments_f64(w, loc, cov):
    """Reference mixture moments: E[x] and E[x xᵀ] − E[x]E[x]ᵀ in float64 numpy."""
    mean = np.sum(w[:, None] * loc, 0)
    second = np.sum(w[:, None, None] * (cov + loc[:, :, None] * loc[:, None, :]), 0)
    return mean, second - np.outer(mean, mean)


def _gauss_kl_f64(m0, c0, m1, c1):
    """KL(N(m0, c0) ‖ N(m1, c1)) in float64."""
    m0, c0, m1, c1 = (np.asarray(a, np.float64) for a in (m0, c0, m1, c1))
    d = m0.shape[0]
    p1 = np.linalg.inv(c1)
    diff = m1 - m0
    return 0.5 * (np.trace(p1 @ c0) + diff @ p1 @ diff - d
                  + np.linalg.slogdet(c1)[1] - np.linalg.slogdet(c0)[1])


def _q_params(family, rng):
    """Random Gaussian-family parameters: softplus(0.5 ± 0.3) scales, ±0.3 correlations."""
    shape = family.param_shapes().raw_scale
    return O.GaussianParams(jnp.asarray(rng.normal(size=family.dim)),
                            jnp.asarray(0.5 + 0.3 * rng.normal(size=shape)))


# --------------------------------------------------------------------------------------------
# Densities against distrax.
# --------------------------------------------------------------------------------------------


@jax.jit
def _log_probs_and_references(x, full_p, diag_p, mix_p):
    """(ours, distrax) log densities of the three families at x: (N, 3), under jit."""
    full, diag, mix = O.FullCovGaussian(3), O.DiagGaussian(3), O.GaussianMixtureFamily(3, 2)
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
        mix = O.GaussianMixtureFamily(3, 2)
        mix_p = mix.init(loc=rng.normal(size=(2, 3)), scale=np.exp(0.3 * rng.normal(size=(2, 3))))
        mix_p = mix_p._replace(logits=jnp.asarray(rng.normal(size=2)),
                               raw_scale=mix_p.raw_scale + jnp.asarray(
                                   np.tril(0.3 * rng.normal(size=(2, 3, 3)), -1)))
        ours, refs = _log_probs_and_references(
            x, _q_params(O.FullCovGaussian(3), rng), _q_params(O.DiagGaussian(3), rng), mix_p)
        np.testing.assert_allclose(ours, refs, rtol=1e-10, atol=1e-10)


def test_mixture_target_matches_scipy(x64):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 2)) * 3.0)
    target = O.gaussian_mixture_target(W, LOC, COV)
    ref = np.log(sum(w * multivariate_normal(m, c).pdf(np.asarray(x))
                     for w, m, c in zip(W, LOC, COV, strict=True)))
    np.testing.assert_allclose(target.log_prob(x), ref, rtol=1e-10, atol=1e-10)
    mean, cov = _moments_f64(W, LOC, COV)
    np.testing.assert_allclose(target.moments()[0], mean, atol=1e-12)
    np.testing.assert_allclose(target.moments()[1], cov, atol=1e-12)
    draws = np.asarray(target.sample(seed=jax.random.key(0), sample_shape=(40_000,)))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.05)


# --------------------------------------------------------------------------------------------
# The losses are unbiased (Gaussian target, closed-form KL) and their gradients finite.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_cls", [O.FullCovGaussian, O.DiagGaussian])
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
        exact = _gauss_kl_f64(q_mean, q_cov, t_mean, t_cov)
        loss = O.reverse_kl_loss
    else:
        exact = _gauss_kl_f64(t_mean, t_cov, q_mean, q_cov)
        loss = O.forward_kl_loss
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
    target = O.gaussian_mixture_target(W, LOC, COV)
    shifted = lambda x: target.log_prob(x) + 3.0  # noqa: E731
    family = O.FullCovGaussian(2)
    params = family.init(loc=[0.0, 0.0], scale=2.0)

    @jax.jit
    def losses(key):
        kw = {"family": family, "key": key, "num_samples": 16}
        return (O.reverse_kl_loss(params, target, **kw), O.reverse_kl_loss(params, shifted, **kw),
                O.forward_kl_loss(params, target, estimator="snis", **kw),
                O.forward_kl_loss(params, shifted, **kw))  # "auto": SNIS for a callable

    rev, rev_s, fwd, fwd_s = losses(jax.random.key(3))
    np.testing.assert_allclose(rev_s, rev - 3.0, rtol=1e-12)
    np.testing.assert_allclose(fwd_s, fwd, rtol=1e-10)


def test_snis_forward_is_consistent(x64):
    """SNIS from q (or from a proposal) approaches the closed-form KL(p ‖ q) for large n."""
    target = distrax.MultivariateNormalFullCovariance(jnp.array([0.5, -0.3]),
                                                      jnp.array([[1.0, 0.3], [0.3, 0.7]]))
    family = O.FullCovGaussian(2)
    params = family.init(loc=[0.0, 0.0], scale=1.6)
    exact = _gauss_kl_f64([0.5, -0.3], [[1.0, 0.3], [0.3, 0.7]], *family.moments(params))
    proposal = distrax.MultivariateNormalDiag(jnp.zeros(2), 2.0 * jnp.ones(2))

    @jax.jit
    def estimates(k1, k2):
        kw = {"family": family, "num_samples": 50_000}
        return (O.forward_kl_loss(params, target, key=k1, estimator="snis", **kw),
                O.forward_kl_loss(params, target, key=k2, proposal=proposal, **kw))

    for est in estimates(jax.random.key(0), jax.random.key(1)):
        np.testing.assert_allclose(est, exact, atol=0.02)


def test_gradients_are_finite():
    """Every estimator on the full Gaussian, SNIS from q on the mixture family. Each gradient
    row is finite and not identically zero."""
    target = O.gaussian_mixture_target(W, LOC, COV)
    proposal = O.gaussian_mixture_target([1.0], [[0.0, 0.0]], [9.0 * np.eye(2)])
    key = jax.random.key(0)
    estimators = {
        "reverse": lambda p, f: O.reverse_kl_loss(p, target, family=f, key=key),
        "forward": lambda p, f: O.forward_kl_loss(p, target, family=f, key=key),
        "snis-q": lambda p, f: O.forward_kl_loss(p, target, family=f, key=key, estimator="snis"),
        "snis-proposal": lambda p, f: O.forward_kl_loss(p, target, family=f, key=key,
                                                        proposal=proposal),
    }
    # (The diagonal family's and the mixture's reverse/target-sample gradients are exercised by
    # the fits below.)
    plan = [(O.FullCovGaussian(2), list(estimators)), (O.GaussianMixtureFamily(2, 3), ["snis-q"])]
    for family, names in plan:
        @jax.jit
        def values_and_grads(p, f=family, names=names):
            return [jax.value_and_grad(lambda q, n=n: estimators[n](q, f))(p) for n in names]

        for value, grads in values_and_grads(family.init(key=key)):
            assert np.isfinite(value)
            leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)]
            assert all(np.all(np.isfinite(g)) for g in leaves)
            assert any(np.any(g != 0) for g in leaves)


def test_mixture_weighted_rsample_is_unbiased():
    """Σ w f(x) over the stratified draws of a mixture q estimates E_q[f]: here its mean."""
    family = O.GaussianMixtureFamily(2, 3)
    params = family.init(loc=LOC, scale=0.7)._replace(logits=jnp.log(jnp.asarray(W)))
    x, w = family.weighted_rsample(params, key=jax.random.key(0), n=20_000)
    np.testing.assert_allclose(jnp.sum(w[:, None] * x, 0), W @ LOC, atol=0.02)
    np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Fitting: inclusive = moment matching, exclusive = the mode it starts near.
# --------------------------------------------------------------------------------------------


def test_forward_fit_matches_target_moments():
    """A distrax mixture works directly as the target; the inclusive optimum over Gaussians is
    the target's mean and covariance (diagonal family: its mean and variances)."""
    target = distrax.MixtureSameFamily(
        distrax.Categorical(probs=jnp.asarray(W, jnp.float32)),
        distrax.MultivariateNormalFullCovariance(jnp.asarray(LOC, jnp.float32),
                                                 jnp.asarray(COV, jnp.float32)))
    mean, cov = _moments_f64(W, LOC, COV)
    opt = optax.adam(optax.cosine_decay_schedule(0.1, 600), b2=0.9)
    res = O.fit(target, "full", "inclusive", key=jax.random.key(0), steps=600, optimizer=opt,
                num_samples=256)
    assert res.losses.shape == (600,) and np.all(np.isfinite(res.losses))
    fam = O.FullCovGaussian(2)
    m, c = fam.moments(res.params)
    np.testing.assert_allclose(m, mean, atol=0.1)
    assert np.linalg.norm(c - cov) / np.linalg.norm(cov) < 0.05
    # The loss ends at min_q KL(p ‖ q) = H[N(mean, cov)] − H[p], H[p] by Monte Carlo.
    rng = np.random.default_rng(5)
    comp = rng.choice(3, size=100_000, p=W)
    x = LOC[comp] + np.einsum("nij,nj->ni", np.linalg.cholesky(COV)[comp],
                              rng.normal(size=(100_000, 2)))
    neg_entropy_p = float(np.mean(np.log(sum(
        w * multivariate_normal(m, c).pdf(x) for w, m, c in zip(W, LOC, COV, strict=True)))))
    best = 0.5 * (2 * (1 + np.log(2 * np.pi)) + np.linalg.slogdet(cov)[1]) + neg_entropy_p
    np.testing.assert_allclose(res.losses[-100:].mean(), best, atol=0.05)

    diag = O.DiagGaussian(2)
    res = O.fit(target, diag, "forward", key=jax.random.key(1), steps=600, optimizer=opt,
                num_samples=256, init_params=diag.init(loc=[4.0, 4.0], scale=0.5))
    m, c = diag.moments(res.params)
    np.testing.assert_allclose(m, mean, atol=0.1)
    np.testing.assert_allclose(np.diag(c), np.diag(cov), rtol=0.05)


def test_reverse_fit_ends_on_the_mode_it_starts_near():
    target = O.gaussian_mixture_target(W, LOC, COV)
    family = O.FullCovGaussian(2)
    inits = jax.tree_util.tree_map(
        lambda *a: jnp.stack(a), *[family.init(loc=m + 0.5, scale=0.7) for m in LOC])
    res = O.fit_many(target, family, "exclusive", inits, key=jax.random.key(0), steps=500,
                     learning_rates=[0.05], num_samples=64)
    assert res.losses.shape == (1, 3, 500)
    means, covs = jax.vmap(family.moments)(jax.tree_util.tree_map(lambda a: a[0], res.params))
    for k in range(3):
        np.testing.assert_allclose(means[k], LOC[k], atol=0.15)
        assert np.linalg.norm(covs[k] - COV[k]) / np.linalg.norm(COV[k]) < 0.2, (k, covs[k])
        # On mode k alone the exclusive KL is −log w_k.
        np.testing.assert_allclose(res.losses[0, k, -50:].mean(), -np.log(W[k]), atol=0.05)
    idx, dist = O.nearest_mode(means, jnp.asarray(LOC), jnp.asarray(COV))
    np.testing.assert_array_equal(idx, [0, 1, 2])
    assert np.all(dist < 0.3)


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_mixture_family_recovers_a_mixture_target(direction):
    """A K = 3 mixture q started near the modes fits the 3-component target: KL → 0 in either
    direction, with the target's weights and components."""
    target = O.gaussian_mixture_target(W, LOC, COV)
    family = O.GaussianMixtureFamily(2, 3)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 300), b2=0.9)
    res = O.fit(target, family, direction, key=jax.random.key(2), steps=300, optimizer=opt,
                num_samples=128, init_params=family.init(loc=LOC + 0.4, scale=1.0))
    assert float(jnp.mean(res.losses[-30:])) < 0.03
    np.testing.assert_allclose(jax.nn.softmax(res.params.logits), W, atol=0.03)
    np.testing.assert_allclose(res.params.loc, LOC, atol=0.15)
    l = family.scale_tril(res.params)
    np.testing.assert_allclose(l @ jnp.swapaxes(l, -1, -2), COV, atol=0.15)


def test_fit_many_traces_the_loss_once_whatever_the_batch():
    """vmap over starts and learning rates: one trace (one compile), not one per fit."""
    traces = []

    def log_p(x):
        traces.append(1)
        return -0.5 * jnp.sum(jnp.square(x - 1.0))

    family = O.DiagGaussian(1)
    counts = []
    for lrs, starts in (([0.1], [0.0]), ([0.01, 0.1, 1.0], [-2.0, 0.0, 2.0, 4.0])):
        traces.clear()
        inits = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                       *[family.init(loc=[s]) for s in starts])
        res = jax.eval_shape(  # traces (as jit would) without compiling
            lambda k, inits=inits, lrs=lrs: O.fit_many(
                log_p, family, "reverse", inits, key=k, steps=3, learning_rates=lrs,
                num_samples=4), jax.random.key(0))
        assert res.losses.shape == (len(lrs), len(starts), 3)
        counts.append(len(traces))
    assert counts[0] == counts[1] <= 2, counts


def test_reverse_fit_on_an_unnormalised_log_density():
    """`fit` with a plain callable (unnormalised 1-D bimodal density) locks onto the mode it
    starts at, with that mode's variance; the loss is KL − log Z."""
    def log_p(x):  # 2·[0.7 N(−3, 0.5²) + 0.3 N(2, 0.8²)] without the 2
        a = jnp.log(0.7) - 0.5 * ((x[0] + 3.0) / 0.5) ** 2 - jnp.log(0.5)
        b = jnp.log(0.3) - 0.5 * ((x[0] - 2.0) / 0.8) ** 2 - jnp.log(0.8)
        return jnp.logaddexp(a, b) - 0.5 * jnp.log(2 * jnp.pi) + jnp.log(2.0)

    family = O.DiagGaussian(1)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 400))
    res = O.fit(log_p, family, "reverse", key=jax.random.key(0), steps=400, optimizer=opt,
                init_params=family.init(loc=[1.2], scale=1.0))
    m, c = family.moments(res.params)
    np.testing.assert_allclose(m, [2.0], atol=0.1)
    np.testing.assert_allclose(c[0, 0], 0.8**2, rtol=0.15)
    np.testing.assert_allclose(res.losses[-50:].mean(), -np.log(0.3) - np.log(2.0), atol=0.05)


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
        surrogate = lambda e: jnp.mean(O.snis_forward_kl_surrogate(log_q(e), log_joint))  # noqa: E731
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
        return jnp.mean(O.snis_forward_kl_surrogate(lq, lw))

    g_exact = jax.grad(_exact_forward_kl)(enc, log_joint, log_q)
    g_sur = jax.jit(jax.grad(surrogate))(enc)
    flat = lambda g: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)])  # noqa: E731
    err = np.linalg.norm(flat(g_sur) - flat(g_exact)) / np.linalg.norm(flat(g_exact))
    assert err < 0.05, err


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_the_argument():
    target = O.gaussian_mixture_target(W, LOC, COV)
    opt = optax.adam(0.1)
    key = jax.random.key(0)
    fam = O.FullCovGaussian(2)
    cases = [
        (lambda: O.fit(target, "gaussian", "reverse", key=key, steps=5, optimizer=opt), "family"),
        (lambda: O.fit(target, 3, "reverse", key=key, steps=5, optimizer=opt), "family"),
        (lambda: O.fit(target, fam, "sideways", key=key, steps=5, optimizer=opt), "direction"),
        (lambda: O.fit(target, O.FullCovGaussian(3), "reverse", key=key, steps=5,
                       optimizer=opt), "target"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=0, optimizer=opt), "steps"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=-3, optimizer=opt), "steps"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=2.5, optimizer=opt), "steps"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=5, optimizer="adam"), "optimizer"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=5, optimizer=opt,
                       num_samples=0), "num_samples"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=5, optimizer=opt,
                       init_params=O.FullCovGaussian(3).init()), "init_params.loc"),
        (lambda: O.fit(target, fam, "reverse", key=key, steps=5, optimizer=opt,
                       init_params=O.DiagGaussian(2).init()), "init_params.raw_scale"),
        (lambda: O.fit(target, fam, "forward", key=key, steps=5, optimizer=opt,
                       estimator="exact"), "estimator"),
        (lambda: O.fit(target.log_prob, "full", "reverse", key=key, steps=5, optimizer=opt),
         "family"),
        (lambda: O.fit(object(), fam, "reverse", key=key, steps=5, optimizer=opt), "target"),
        (lambda: O.forward_kl_loss(fam.init(), target.log_prob, family=fam, key=key,
                                   estimator="target-samples"), "target"),
        (lambda: O.reverse_kl_loss(fam.init(), target, family="cholesky", key=key), "family"),
        (lambda: O.fit_many(target, fam, "reverse", fam.init(), key=key, steps=5,
                            learning_rates=[0.1]), "init_params"),
        (lambda: O.fit_many(target, fam, "reverse", jax.tree_util.tree_map(
            lambda a: a[None], fam.init()), key=key, steps=5, learning_rates=[-0.1]),
         "learning_rates"),
        (lambda: O.snis_forward_kl_surrogate(jnp.zeros(3), jnp.zeros(4)), "log_q"),
        (lambda: O.gaussian_mixture_target([0.5, 0.6], LOC[:2], COV[:2]), "weights"),
        (lambda: O.gaussian_mixture_target(W, LOC, COV[:, :1]), "cov"),
        (lambda: O.gaussian_mixture_target(W, LOC, -COV), "cov"),
        (lambda: O.make_family("mixture", 2, num_components=0), "num_components"),
        (lambda: O.make_family("diag", 0), "dim"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            call()
