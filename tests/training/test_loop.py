"""`jaxvi.training.loop.fit`: a short run raises the ELBO, the step budget's epoch plan, and the
guard stops on a non-finite loss or non-finite parameters, keeping the last good checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxvi.training.checkpoint import latest_checkpoint, restore_checkpoint
from jaxvi.training.loop import NonFiniteLossError, epoch_plan, fit
from jaxvi.training.step import init_state
from jaxvi.vae.evaluate import make_evaluator
from jaxvi.vae.losses import elbo_loss
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model

SMALL = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))


def test_short_training_raises_the_elbo(digits):
    x = jnp.asarray(digits.x_train[:256])
    model = HierarchicalVAE(SMALL, rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    evaluator = make_evaluator(graphdef, iwae_samples=8)
    before, _ = evaluator(params, x, key=jax.random.key(1))
    state, history = fit(
        elbo_loss(graphdef), optax.adam(3e-3), params, x, key=jax.random.key(2),
        epochs=15, batch_size=64, progress=False, log=False,
    )
    after, _ = evaluator(state.params, x, key=jax.random.key(1))
    assert after["elbo"] > before["elbo"] + 10.0
    assert history[-1]["elbo"] > history[0]["elbo"]
    assert after["iwae"] >= after["elbo"] - 0.5
    assert int(state.step) == 15 * (256 // 64)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    """loss = log a under SGD(lr=1): a goes 3 → 2.67 → … → 0.56 → −1.24, where log is NaN."""

    def loss_fn(params, batch, key):
        loss = jnp.log(params["a"]) + 0.0 * jnp.sum(batch)
        return loss, {}

    x = np.ones((4, 2), np.float32)
    with pytest.raises(NonFiniteLossError, match="epoch 7"):
        fit(loss_fn, optax.sgd(1.0), {"a": jnp.asarray(3.0)}, x, key=jax.random.key(0),
                  epochs=20, batch_size=4, checkpoint_dir=tmp_path, checkpoint_every=1,
                  progress=False, log=False)
    assert latest_checkpoint(tmp_path) == 6
    target = init_state({"a": jnp.asarray(0.0)}, optax.sgd(1.0))
    state, meta = restore_checkpoint(tmp_path, target)
    assert np.isfinite(float(state.params["a"])) and len(meta["history"]) == 6
    assert all(np.isfinite(r["loss"]) for r in meta["history"])


def test_nan_gradient_on_an_epochs_last_step_is_never_saved(tmp_path):
    """The loss is a (finite) but its gradient is NaN once a < 1 (the `where` trap): under
    SGD(lr=1), two steps an epoch, a goes 3.5 → 2.5 → 1.5 in epoch 1, then 1.5 → 0.5 →
    NaN in epoch 2, whose mean loss (1.5 + 0.5) / 2 is finite. Epoch 2 must not be saved."""

    def loss_fn(params, batch, key):
        a = params["a"]
        loss = jnp.where(a < 1.0, a, a + 0.0 * jnp.sqrt(a - 1.0)) + 0.0 * jnp.sum(batch)
        return loss, {}

    x = np.ones((8, 2), np.float32)
    with pytest.raises(NonFiniteLossError, match="parameters became NaN or Inf during "
                       "epoch 2 .*loss stayed finite.*last good checkpoint \\(epoch 1\\)"):
        fit(loss_fn, optax.sgd(1.0), {"a": jnp.asarray(3.5)}, x, key=jax.random.key(0),
                  epochs=5, batch_size=4, checkpoint_dir=tmp_path, checkpoint_every=1,
                  progress=False, log=False)
    assert latest_checkpoint(tmp_path) == 1
    state, meta = restore_checkpoint(tmp_path, init_state({"a": jnp.asarray(0.0)},
                                                                      optax.sgd(1.0)))
    assert float(state.params["a"]) == 1.5 and len(meta["history"]) == 1


def test_epoch_plan_caps_the_steps_whatever_n():
    # digits' defaults (1,437 points, batch 128): the budgets cover the epochs, nothing changes.
    assert epoch_plan(1437, 128, 100, 1200) == (100, 11)
    assert epoch_plan(1437, 128, 60, 700) == (60, 11)
    assert epoch_plan(1437, 128, 60, None) == (60, 11)
    for n in (60000, 120000, 10**7):  # larger N: fewer epochs, then fewer batches each
        epochs, batches = epoch_plan(n, 128, 100, 1200)
        assert 1200 <= epochs * batches < 1200 + epochs and batches <= n // 128
    assert epoch_plan(60000, 128, 100, 1200) == (3, 400)
    assert epoch_plan(10**7, 128, 100, 1200) == (1, 1200)
