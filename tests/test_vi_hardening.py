"""Issue 12, items 5 and 7: the objectives validate their arguments, and a diverging `fit` raises
instead of returning NaN parameters.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvi import objectives as O

# --------------------------------------------------------------------------------------------
# Items 5 and 7: objectives
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [O.FullCovGaussian(2), O.DiagGaussian(2),
                                    O.GaussianMixtureFamily(2, 3)])
@pytest.mark.parametrize("scale", [0.0, -1.0, np.nan, 1e-40, np.ones(5)])
def test_family_init_refuses_bad_scale(family, scale):
    with pytest.raises(ValueError, match="`scale`"):
        family.init(key=jax.random.key(0), scale=scale)


def test_family_init_checks_loc_and_keeps_good_values():
    fam = O.DiagGaussian(3)
    with pytest.raises(ValueError, match=r"`loc` must have shape \(3,\)"):
        fam.init(loc=np.zeros(2))
    with pytest.raises(ValueError, match="`loc` must be finite"):
        fam.init(loc=np.array([0.0, np.inf, 0.0]))
    params = fam.init(loc=np.arange(3.0), scale=np.array([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(fam.scale(params), [0.5, 1.0, 2.0], rtol=1e-6)
    params = O.FullCovGaussian(2).init(scale=1e-30)  # tiny but normal: fine
    np.testing.assert_allclose(jnp.diagonal(O.FullCovGaussian(2).scale_tril(params)), 1e-30,
                               rtol=1e-5)


def test_objectives_helpers_validate_shapes():
    with pytest.raises(ValueError, match="`loc` and `cov`"):
        O.mixture_moments(np.ones(2) / 2, np.zeros((2, 3)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="`mean` and `mode_locs`"):
        O.nearest_mode(np.zeros(3), np.zeros((2, 2)), np.broadcast_to(np.eye(2), (2, 2, 2)))
    with pytest.raises(ValueError, match="`mode_covs`"):
        O.nearest_mode(np.zeros(2), np.zeros((2, 2)), -np.broadcast_to(np.eye(2), (2, 2, 2)))
    target = O.gaussian_mixture_target(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
    with pytest.raises(ValueError, match="`x` and `loc`"):
        target.log_prob(np.zeros(3))
    with pytest.raises(ValueError, match="`family`"):
        O.run(O.DiagGaussian(2).init(), target, "diag", "reverse", key=jax.random.key(0),
              steps=2, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="`proposal`"):
        O.forward_kl_loss(O.DiagGaussian(2).init(), target, family=O.DiagGaussian(2),
                          key=jax.random.key(0), estimator="snis", proposal=object())


_UNIT = dict(weights=np.ones(1), loc=np.zeros((1, 2)), cov=np.eye(2)[None])


def test_fit_with_a_large_learning_rate_raises_naming_the_step():
    target = O.gaussian_mixture_target(**_UNIT)
    with pytest.raises(O.NonFiniteFitError, match=r"at step \d+ of 50.*smaller learning rate") as e:
        O.fit(target, O.FullCovGaussian(2), "reverse", key=jax.random.key(0), steps=50,
              optimizer=optax.sgd(50.0))
    losses = e.value.losses
    first = int(np.argmin(np.isfinite(losses)))
    assert losses.shape == (50,) and np.all(np.isfinite(losses[:first]))
    assert f"at step {first + 1} of 50" in str(e.value)


def test_fit_with_a_far_target_raises_instead_of_returning_nan():
    target = O.gaussian_mixture_target(np.ones(1), np.full((1, 2), 1e20), np.eye(2)[None])
    with pytest.raises(O.NonFiniteFitError, match="initial parameters.*init_params"):
        O.fit(target, O.DiagGaussian(2), "forward", key=jax.random.key(0), steps=20,
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

    target = O.gaussian_mixture_target(**_UNIT)
    with pytest.raises(O.NonFiniteFitError, match=rf"last update \(step {steps}\)"):
        O.fit(target, O.DiagGaussian(2), "reverse", key=jax.random.key(0), steps=steps,
              optimizer=optax.GradientTransformation(init, update))


def test_fit_that_converges_is_returned_unchanged():
    target = O.gaussian_mixture_target(np.ones(1), np.array([[1.0, -2.0]]), np.eye(2)[None])
    res = O.fit(target, O.DiagGaussian(2), "reverse", key=jax.random.key(0), steps=300,
                optimizer=optax.adam(0.05))
    assert isinstance(res, O.FitResult) and res.losses.shape == (300,)
    np.testing.assert_allclose(res.params.loc, [1.0, -2.0], atol=0.1)
    np.testing.assert_allclose(O.DiagGaussian(2).scale(res.params), [1.0, 1.0], atol=0.1)
    assert math.isfinite(float(res.losses[-1]))
