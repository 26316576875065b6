"""Tests for jaxvi.vi.fit: inclusive fits match moments, exclusive fits end on the mode they
start near, `fit_many` compiles once, a diverging `fit` raises instead of returning NaN
parameters, `nearest_mode`, and the boundary checks."""

from __future__ import annotations

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import multivariate_normal
from shared_inputs import COV, LOC, W, mixture_moments_f64

from jaxvi import vi
from jaxvi.mixture import Mixture


def _target(weights, loc, cov) -> Mixture:
    return Mixture.from_covariance(np.log(np.asarray(weights, float)), loc, cov)


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
    mean, cov = mixture_moments_f64(W, LOC, COV)
    opt = optax.adam(optax.cosine_decay_schedule(0.1, 600), b2=0.9)
    res = vi.fit(target, "full", "inclusive", key=jax.random.key(0), steps=600, optimizer=opt,
                 num_samples=256)
    assert res.losses.shape == (600,) and np.all(np.isfinite(res.losses))
    fam = vi.FullCovGaussian(2)
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

    diag = vi.DiagGaussian(2)
    res = vi.fit(target, diag, "forward", key=jax.random.key(1), steps=600, optimizer=opt,
                 num_samples=256, init_params=diag.init(loc=[4.0, 4.0], scale=0.5))
    m, c = diag.moments(res.params)
    np.testing.assert_allclose(m, mean, atol=0.1)
    np.testing.assert_allclose(np.diag(c), np.diag(cov), rtol=0.05)


def test_reverse_fit_ends_on_the_mode_it_starts_near():
    target = _target(W, LOC, COV)
    family = vi.FullCovGaussian(2)
    inits = jax.tree_util.tree_map(
        lambda *a: jnp.stack(a), *[family.init(loc=m + 0.5, scale=0.7) for m in LOC])
    res = vi.fit_many(target, family, "exclusive", inits, key=jax.random.key(0), steps=500,
                      learning_rates=[0.05], num_samples=64)
    assert res.losses.shape == (1, 3, 500)
    means, covs = jax.vmap(family.moments)(jax.tree_util.tree_map(lambda a: a[0], res.params))
    for k in range(3):
        np.testing.assert_allclose(means[k], LOC[k], atol=0.15)
        assert np.linalg.norm(covs[k] - COV[k]) / np.linalg.norm(COV[k]) < 0.2, (k, covs[k])
        # On mode k alone the exclusive KL is −log w_k.
        np.testing.assert_allclose(res.losses[0, k, -50:].mean(), -np.log(W[k]), atol=0.05)
    idx, dist = vi.nearest_mode(means, jnp.asarray(LOC), jnp.asarray(COV))
    np.testing.assert_array_equal(idx, [0, 1, 2])
    assert np.all(dist < 0.3)


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_mixture_family_recovers_a_mixture_target(direction):
    """A K = 3 mixture q started near the modes fits the 3-component target: KL → 0 in either
    direction, with the target's weights and components."""
    target = _target(W, LOC, COV)
    family = vi.GaussianMixtureFamily(2, 3)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 300), b2=0.9)
    res = vi.fit(target, family, direction, key=jax.random.key(2), steps=300, optimizer=opt,
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

    family = vi.DiagGaussian(1)
    counts = []
    for lrs, starts in (([0.1], [0.0]), ([0.01, 0.1, 1.0], [-2.0, 0.0, 2.0, 4.0])):
        traces.clear()
        inits = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                       *[family.init(loc=[s]) for s in starts])
        res = jax.eval_shape(  # traces (as jit would) without compiling
            lambda k, inits=inits, lrs=lrs: vi.fit_many(
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

    family = vi.DiagGaussian(1)
    opt = optax.adam(optax.cosine_decay_schedule(0.05, 400))
    res = vi.fit(log_p, family, "reverse", key=jax.random.key(0), steps=400, optimizer=opt,
                 init_params=family.init(loc=[1.2], scale=1.0))
    m, c = family.moments(res.params)
    np.testing.assert_allclose(m, [2.0], atol=0.1)
    np.testing.assert_allclose(c[0, 0], 0.8**2, rtol=0.15)
    np.testing.assert_allclose(res.losses[-50:].mean(), -np.log(0.3) - np.log(2.0), atol=0.05)


# --------------------------------------------------------------------------------------------
# A diverging fit raises instead of returning NaN parameters.
# --------------------------------------------------------------------------------------------


_UNIT = dict(weights=np.ones(1), loc=np.zeros((1, 2)), cov=np.eye(2)[None])


def test_fit_with_a_large_learning_rate_raises_naming_the_step():
    target = _target(**_UNIT)
    with pytest.raises(vi.NonFiniteFitError,
                       match=r"at step \d+ of 50.*smaller learning rate") as e:
        vi.fit(target, vi.FullCovGaussian(2), "reverse", key=jax.random.key(0), steps=50,
               optimizer=optax.sgd(50.0))
    losses = e.value.losses
    first = int(np.argmin(np.isfinite(losses)))
    assert losses.shape == (50,) and np.all(np.isfinite(losses[:first]))
    assert f"at step {first + 1} of 50" in str(e.value)


def test_fit_with_a_far_target_raises_instead_of_returning_nan():
    target = _target(np.ones(1), np.full((1, 2), 1e20), np.eye(2)[None])
    with pytest.raises(vi.NonFiniteFitError, match="initial parameters.*init_params"):
        vi.fit(target, vi.DiagGaussian(2), "forward", key=jax.random.key(0), steps=20,
               optimizer=optax.adam(0.1))


def test_fit_catches_a_non_finite_last_update():
    """A finite loss at every step, but the final update is NaN: the parameters are checked."""
    steps = 6

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        bad = count == steps - 1
        upd = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, -0.01 * g), grads)
        return upd, count + 1

    target = _target(**_UNIT)
    with pytest.raises(vi.NonFiniteFitError, match=rf"last update \(step {steps}\)"):
        vi.fit(target, vi.DiagGaussian(2), "reverse", key=jax.random.key(0), steps=steps,
               optimizer=optax.GradientTransformation(init, update))


def test_fit_that_converges_is_returned_unchanged():
    target = _target(np.ones(1), np.array([[1.0, -2.0]]), np.eye(2)[None])
    res = vi.fit(target, vi.DiagGaussian(2), "reverse", key=jax.random.key(0), steps=300,
                 optimizer=optax.adam(0.05))
    assert isinstance(res, vi.VIFitResult) and res.losses.shape == (300,)
    np.testing.assert_allclose(res.params.loc, [1.0, -2.0], atol=0.1)
    np.testing.assert_allclose(vi.DiagGaussian(2).scale(res.params), [1.0, 1.0], atol=0.1)
    assert math.isfinite(float(res.losses[-1]))


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_the_argument():
    target = _target(W, LOC, COV)
    opt = optax.adam(0.1)
    key = jax.random.key(0)
    fam = vi.FullCovGaussian(2)
    cases = [
        (lambda: vi.fit(target, "gaussian", "reverse", key=key, steps=5, optimizer=opt),
         "family"),
        (lambda: vi.fit(target, 3, "reverse", key=key, steps=5, optimizer=opt), "family"),
        (lambda: vi.fit(target, fam, "sideways", key=key, steps=5, optimizer=opt), "direction"),
        (lambda: vi.fit(target, vi.FullCovGaussian(3), "reverse", key=key, steps=5,
                        optimizer=opt), "target"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=0, optimizer=opt), "steps"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=-3, optimizer=opt), "steps"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=2.5, optimizer=opt), "steps"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=5, optimizer="adam"),
         "optimizer"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=5, optimizer=opt,
                        num_samples=0), "num_samples"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=5, optimizer=opt,
                        init_params=vi.FullCovGaussian(3).init()), "init_params.loc"),
        (lambda: vi.fit(target, fam, "reverse", key=key, steps=5, optimizer=opt,
                        init_params=vi.DiagGaussian(2).init()), "init_params.raw_scale"),
        (lambda: vi.fit(target, fam, "forward", key=key, steps=5, optimizer=opt,
                        estimator="exact"), "estimator"),
        (lambda: vi.fit(target.log_prob, "full", "reverse", key=key, steps=5, optimizer=opt),
         "family"),
        (lambda: vi.fit(object(), fam, "reverse", key=key, steps=5, optimizer=opt), "target"),
        (lambda: vi.fit_many(target, fam, "reverse", fam.init(), key=key, steps=5,
                             learning_rates=[0.1]), "init_params"),
        (lambda: vi.fit_many(target, fam, "reverse", jax.tree_util.tree_map(
            lambda a: a[None], fam.init()), key=key, steps=5, learning_rates=[-0.1]),
         "learning_rates"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            call()


def test_run_and_nearest_mode_validate_shapes():
    with pytest.raises(ValueError, match="`mean` and `mode_locs`"):
        vi.nearest_mode(np.zeros(3), np.zeros((2, 2)), np.broadcast_to(np.eye(2), (2, 2, 2)))
    with pytest.raises(ValueError, match="`mode_covs`"):
        vi.nearest_mode(np.zeros(2), np.zeros((2, 2)), -np.broadcast_to(np.eye(2), (2, 2, 2)))
    target = _target(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match="`family`"):
        vi.run(vi.DiagGaussian(2).init(), target, "diag", "reverse", key=jax.random.key(0),
               steps=2, optimizer=optax.sgd(0.1))
