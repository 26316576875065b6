"""`jaxvi.vae.recipe`: resume equals an uninterrupted run (with and without pretraining),
`load_model` rebuilds the model, bad input and bad configurations are refused before
training, and forward-KL (wake-sleep) training raises the IWAE bound."""

import re

import jax
import numpy as np
import pytest

from jaxvi import data
from jaxvi.training.checkpoint import latest_checkpoint, load_meta
from jaxvi.vae.model import VAEConfig, split_model
from jaxvi.vae.recipe import (
    TrainConfig,
    load_model,
    train_vae,
)

SMALL = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))


def test_resume_equals_uninterrupted_run(tmp_path, digits):
    x = digits.x_train[:192]
    common = dict(batch_size=64, pretrain_epochs=0, seed=3, checkpoint_every=1000)
    full, _ = train_vae(
        x, SMALL, TrainConfig(epochs=4, **common), checkpoint_dir=tmp_path / "full",
        progress=False, log=False,
    )
    # "Interrupted" after 2 epochs (its checkpoint at the end), then resumed to 4.
    train_vae(x, SMALL, TrainConfig(epochs=2, **common),
                    checkpoint_dir=tmp_path / "part", progress=False, log=False)
    assert latest_checkpoint(tmp_path / "part") == 2
    resumed, history = train_vae(
        x, SMALL, TrainConfig(epochs=4, **common), checkpoint_dir=tmp_path / "part",
        resume=True, progress=False, log=False,
    )
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    a = jax.tree.leaves(split_model(full)[1])
    b = jax.tree.leaves(split_model(resumed)[1])
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    # The checkpoint rebuilds the model from its stored config.
    loaded, meta = load_model(tmp_path / "part")
    assert loaded.config == SMALL and meta["epoch"] == 4
    for u, v in zip(b, jax.tree.leaves(split_model(loaded)[1]), strict=True):
        np.testing.assert_array_equal(u, v)
    # A fresh (not resumed) run into the same folder stops before training, keeping it.
    with pytest.raises(ValueError, match="already holds checkpoints .*epoch 4.*resume"):
        train_vae(x, SMALL, TrainConfig(epochs=4, **common),
                        checkpoint_dir=tmp_path / "part", progress=False, log=False)
    assert latest_checkpoint(tmp_path / "part") == 4
    with pytest.raises(ValueError, match="model config"):
        other = VAEConfig(**{**SMALL.to_dict(), "components": 4})
        train_vae(x, other, TrainConfig(epochs=5, **common),
                        checkpoint_dir=tmp_path / "part", resume=True, progress=False, log=False)


def test_bad_training_input_raises(digits):
    bad = digits.x_train[:100].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train_vae(bad, SMALL, TrainConfig(epochs=1), progress=False, log=False)
    with pytest.raises(ValueError, match="64 features"):
        train_vae(digits.x_train[:, :10], SMALL, TrainConfig(epochs=1),
                        progress=False, log=False)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_resume_after_pretraining_keeps_the_consensus_term(tmp_path, digits):
    x = digits.x_train[:128]
    common = dict(batch_size=64, pretrain_epochs=1, restarts=2, seed=5, checkpoint_every=1000,
                  consensus_smoothing=3)
    full, hist = train_vae(x, SMALL, TrainConfig(epochs=2, **common),
                                 checkpoint_dir=tmp_path / "full", progress=False, log=False)
    assert "consensus_ce" in hist[0]
    assert len(load_meta(tmp_path / "full")["pretrain"]["cluster_labels"]) == 128
    train_vae(x, SMALL, TrainConfig(epochs=1, **common),
                    checkpoint_dir=tmp_path / "part", progress=False, log=False)
    resumed, hist = train_vae(x, SMALL, TrainConfig(epochs=2, **common),
                                    checkpoint_dir=tmp_path / "part", resume=True,
                                    progress=False, log=False)
    assert "consensus_ce" in hist[1]
    a = jax.tree.leaves(split_model(full)[1])
    for u, v in zip(a, jax.tree.leaves(split_model(resumed)[1]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_train_vae_checks_batch_size_and_components_before_training(tmp_path):
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    mc = VAEConfig(data_dim=4, components=3, latent_dim=2, hidden=(8,), head_hidden=(4,))
    logged = []
    with pytest.raises(ValueError, match=r"`batch_size` \(64\) must not exceed .* \(20\)"):
        train_vae(x, mc, TrainConfig(batch_size=64, pretrain_epochs=1),
                        checkpoint_dir=tmp_path / "ck", progress=False, log=logged.append)
    with pytest.raises(ValueError, match=r"`components` \(30\) must not exceed .* \(20\)"):
        train_vae(x, VAEConfig(**{**mc.to_dict(), "components": 30}),
                        TrainConfig(batch_size=8, pretrain_epochs=1),
                        checkpoint_dir=tmp_path / "ck", progress=False, log=logged.append)
    assert logged == [] and not (tmp_path / "ck").exists()


def test_unknown_inference_and_too_few_wake_sleep_samples_are_rejected():
    with pytest.raises(ValueError, match="inference"):
        TrainConfig(inference="reverse")
    with pytest.raises(ValueError, match="`embedding` must be one of"):
        TrainConfig(embedding="tsne")
    with pytest.raises(ValueError, match="embedding_neighbors"):
        TrainConfig(embedding_neighbors=-1)
    with pytest.raises(ValueError, match="wake_sleep_samples"):
        TrainConfig(inference="forward-kl", wake_sleep_samples=1)


def test_forward_kl_training_raises_the_iwae_bound():
    x = np.asarray(data.load_digits().x_train[:256], np.float32)
    mc = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))
    tc = TrainConfig(epochs=6, pretrain_epochs=0, restarts=1, batch_size=64,
                           inference="forward-kl", wake_sleep_samples=4)
    _, history = train_vae(x, mc, tc, progress=False, log=False)
    iwae = [h["iwae"] for h in history]
    assert np.all(np.isfinite(iwae))
    assert iwae[-1] > iwae[0] + 1.0


def test_step_budget_does_not_grow_with_n(tmp_path):
    """Doubling N leaves the optimizer steps of pretraining and joint training at the budget
    (the epochs' steps would double: `epoch_plan`), recorded with the checkpoint."""
    mc = VAEConfig(data_dim=3, components=2, latent_dim=2, hidden=(4,), head_hidden=(4,))
    x = np.random.default_rng(0).normal(size=(160, 3)).astype(np.float32)
    tc = TrainConfig(epochs=50, pretrain_epochs=50, steps=24, pretrain_steps=30, restarts=1,
                     batch_size=8, consensus_smoothing=2, checkpoint_every=10**6)
    steps = {}
    for n in (80, 160):  # unbudgeted: 50 epochs of 10 and of 20 steps
        folder = tmp_path / str(n)
        _, hist = train_vae(x[:n], mc, tc, checkpoint_dir=folder, progress=False, log=False)
        steps[n] = (load_meta(folder)["pretrain"]["pretrain_steps"], hist[-1]["step"],
                    len(hist))
    assert steps == {80: (30, 24, 3), 160: (30, 24, 2)}


def test_data_too_large_for_float32_training_is_refused_before_training():
    """The Gaussian decoder's Σ x²/(2σ²), σ ≥ min_scale, of the largest point must fit float32
    with room (1e-3 of its range): data just inside the limit train to a finite loss, data
    twice as large (and data of scale 1e30, which are finite in float32 and used to end in
    "training loss became nan during epoch 1") are refused before training, naming `x_train`,
    the data's largest magnitude and the scale that fits."""
    base = np.random.default_rng(0).random((200, 16))
    mc = VAEConfig(data_dim=16, components=3, latent_dim=2, hidden=(16,), head_hidden=(4,))
    tc = TrainConfig(epochs=2, pretrain_epochs=1, batch_size=32, restarts=1,
                     pretrain_neighbors=2)
    limit = float(np.finfo(np.float32).max) * 1e-3
    quad = np.max(np.sum(base**2, axis=1)) / (2 * mc.min_scale**2)
    inside = (base * 0.9 * np.sqrt(limit / quad)).astype(np.float32)
    _, history = train_vae(inside, mc, tc, progress=False, log=False)
    assert np.isfinite(history[-1]["loss"])
    for x, biggest in ((2 * inside, f"{2 * inside.max():.3g}"), (base * 1e30, "1e+30")):
        with pytest.raises(ValueError, match=rf"`x_train` has values up to {re.escape(biggest)} in "
                           r"magnitude.*min_scale = 0.05.*values up to about 1\.03e\+16"):
            train_vae(x.astype(np.float32), mc, tc, progress=False, log=False)
