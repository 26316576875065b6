"""Training that never saves NaN parameters, checks everything before it deletes or trains,
and resumes a run killed during pretraining to the result of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvi import data, train
from jaxvi.nn import VAEConfig


def _jaxvi(*args, cwd, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxvi.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(proc, *names) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for name in names:
        assert name in proc.stderr, (name, proc.stderr)
    return proc.stderr.strip()


# ----------------------------------------------------------------------------- the NaN guard


def test_all_finite():
    ok = {"a": jnp.ones(3), "n": jnp.arange(3), "b": (jnp.zeros((2, 2)),)}
    assert bool(jax.jit(train.all_finite)(ok))
    assert not bool(train.all_finite({**ok, "c": jnp.array([1.0, jnp.inf])}))
    assert not bool(train.all_finite({**ok, "c": jnp.array(jnp.nan)}))
    assert bool(train.all_finite({}))


def test_nan_gradient_on_an_epochs_last_step_is_never_saved(tmp_path):
    """The loss is a (finite) but its gradient is NaN once a < 1 (the `where` trap): under
    SGD(lr=1), two steps an epoch, a goes 3.5 → 2.5 → 1.5 in epoch 1, then 1.5 → 0.5 →
    NaN in epoch 2, whose mean loss (1.5 + 0.5) / 2 is finite. Epoch 2 must not be saved."""

    def loss_fn(params, batch, key):
        a = params["a"]
        loss = jnp.where(a < 1.0, a, a + 0.0 * jnp.sqrt(a - 1.0)) + 0.0 * jnp.sum(batch)
        return loss, {}

    x = np.ones((8, 2), np.float32)
    with pytest.raises(train.NonFiniteLossError, match="parameters became NaN or Inf during "
                       "epoch 2 .*loss stayed finite.*last good checkpoint \\(epoch 1\\)"):
        train.fit(loss_fn, optax.sgd(1.0), {"a": jnp.asarray(3.5)}, x, key=jax.random.key(0),
                  epochs=5, batch_size=4, checkpoint_dir=tmp_path, checkpoint_every=1,
                  progress=False, log=False)
    assert train.latest_checkpoint(tmp_path) == 1
    state, meta = train.restore_checkpoint(tmp_path, train.init_state({"a": jnp.asarray(0.0)},
                                                                      optax.sgd(1.0)))
    assert float(state.params["a"]) == 1.5 and len(meta["history"]) == 1


# ----------------------------------------------------------------------------- up-front checks


def test_pretraining_with_more_neighbours_than_points():
    """pretrain_neighbors ≥ N: the neighbour table and the loss agree on N − 1 neighbours
    (the loss used to reshape for all of them and crash)."""
    x = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    mc = VAEConfig(data_dim=4, components=2, latent_dim=2, hidden=(8,), head_hidden=(4,))
    tc = train.TrainConfig(pretrain_epochs=1, pretrain_neighbors=10, restarts=1, batch_size=6)
    model, summary = train.pretrain(mc, tc, x, key=jax.random.key(0))
    assert len(summary["cluster_labels"]) == 6 and np.isfinite(summary["pretrain_loss"])


def test_train_vae_checks_batch_size_and_components_before_training(tmp_path):
    x = np.random.default_rng(0).random((20, 4)).astype(np.float32)
    mc = VAEConfig(data_dim=4, components=3, latent_dim=2, hidden=(8,), head_hidden=(4,))
    logged = []
    with pytest.raises(ValueError, match=r"`batch_size` \(64\) must not exceed .* \(20\)"):
        train.train_vae(x, mc, train.TrainConfig(batch_size=64, pretrain_epochs=1),
                        checkpoint_dir=tmp_path / "ck", progress=False, log=logged.append)
    with pytest.raises(ValueError, match=r"`components` \(30\) must not exceed .* \(20\)"):
        train.train_vae(x, VAEConfig(**{**mc.to_dict(), "components": 30}),
                        train.TrainConfig(batch_size=8, pretrain_epochs=1),
                        checkpoint_dir=tmp_path / "ck", progress=False, log=logged.append)
    assert logged == [] and not (tmp_path / "ck").exists()


@pytest.fixture
def run_with_checkpoint(tmp_path):
    """tmp_path with small.npz (50 points, 4 features) and run/checkpoint holding epoch 1."""
    np.savez(tmp_path / "small.npz", x=np.random.default_rng(0).random((50, 4)))
    state = train.init_state({"a": jnp.ones(2)}, optax.sgd(1.0))
    train.save_checkpoint(tmp_path / "run" / "checkpoint", state, {}, epoch=1)
    (tmp_path / "plain").write_text("a file\n")
    return tmp_path


def test_cli_overwrite_checks_every_argument_and_the_data_before_deleting(run_with_checkpoint):
    """A bad --batch-size (larger than the 40 training points) used to fail only after
    pretraining, the old checkpoint already deleted; now nothing is trained or deleted."""
    cwd = run_with_checkpoint
    proc = _jaxvi("train", "--data", "small.npz", "--out", "run", "--overwrite",
                  "--batch-size", "1000", "--no-progress", cwd=cwd)
    _assert_one_line_error(proc, "batch_size", "1000", "40")
    assert proc.stdout == ""  # refused before the run starts, let alone pretraining
    assert train.latest_checkpoint(cwd / "run" / "checkpoint") == 1
    # An --out that is (or sits under) a file: named, before the data are even read.
    for out in ("plain", "plain/sub"):
        proc = _jaxvi("train", "--data", "missing.npz", "--out", out, cwd=cwd)
        _assert_one_line_error(proc, "--out", out, "file")


# ----------------------------------------------------------------------------- kill and resume


def _wait_for_a_checkpoint(folder: Path, proc: subprocess.Popen, timeout: float = 90.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was killed: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared in {folder} within {timeout} s")


def test_run_killed_during_pretraining_resumes_to_the_uninterrupted_result(tmp_path):
    """`jaxvi train` killed (SIGKILL) during pretraining; the resumed run (`resume=True`, what
    `--resume` passes) continues from the pretraining checkpoint and ends bit-identical to an
    uninterrupted run."""
    x = np.random.default_rng(1).random((200, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    args = ["train", "--data", "d.npz", "--out", "run", "--no-progress", "--epochs", "1",
            "--pretrain-epochs", "8", "--checkpoint-every", "10", "--batch-size", "32",
            "--restarts", "1", "--hidden", "16", "--components", "3", "--latent-dim", "2",
            "--pretrain-neighbors", "2"]
    ckpt = tmp_path / "run" / "checkpoint"
    pre = ckpt / train.PRETRAIN_DIR
    proc = subprocess.Popen([sys.executable, "-m", "jaxvi.cli", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_a_checkpoint(pre, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = train.latest_checkpoint(pre)
    assert killed_at is not None and killed_at < 8 and train.latest_checkpoint(ckpt) is None
    # A fresh run into that folder is refused: it holds the pretraining's checkpoint.
    with pytest.raises(ValueError, match="pretraining epoch"):
        train.check_fresh_checkpoint_dir(ckpt, resume=False)

    ds = data.load(tmp_path / "d.npz")  # what the command trained on
    mc = VAEConfig(data_dim=16, components=3, latent_dim=2, hidden=(16,))
    tc = train.TrainConfig(epochs=1, pretrain_epochs=8, checkpoint_every=10, batch_size=32,
                           restarts=1, pretrain_neighbors=2)
    logged = []
    resumed, history = train.train_vae(ds.x_train, mc, tc, checkpoint_dir=ckpt, resume=True,
                                       progress=False, log=logged.append)
    assert f"resuming pretraining from epoch {killed_at} of 8 ({pre})" in logged
    assert not pre.exists() and train.latest_checkpoint(ckpt) == 1  # pretraining's removed
    full, full_history = train.train_vae(ds.x_train, mc, tc, progress=False, log=False)
    for u, v in zip(jax.tree.leaves(train.split_model(full)[1]),
                    jax.tree.leaves(train.split_model(resumed)[1]), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert [h["loss"] for h in history] == [h["loss"] for h in full_history]
