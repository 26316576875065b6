"""`jaxvi train` (and `jaxvi evaluate` on its output) end to end on a small data set: the
files it writes, a refused or overwritten --out, every argument and the data checked before
anything is deleted, a run killed during pretraining resumed to the uninterrupted result,
and the options that choose the inference and the devices."""

import json
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

from jaxvi import cli, data
from jaxvi.training.checkpoint import (
    latest_checkpoint,
    save_checkpoint,
)
from jaxvi.training.step import init_state
from jaxvi.vae.model import VAEConfig, split_model
from jaxvi.vae.recipe import (
    PRETRAIN_DIR,
    TrainConfig,
    check_fresh_checkpoint_dir,
    check_train_inputs,
    train_vae,
)


def test_cli_train_and_evaluate(tmp_path, digits, capsys):
    x = np.concatenate([digits.x_train[:150], digits.x_test[:50]])
    y = np.concatenate([digits.y_train[:150], digits.y_test[:50]])
    np.savez(tmp_path / "small.npz", x=x, y=y)
    out = tmp_path / "run"
    rc = cli.main(["train", "--data", str(tmp_path / "small.npz"), "--epochs", "2",
                   "--pretrain-epochs", "1", "--batch-size", "32", "--components", "3",
                   "--hidden", "32", "--restarts", "2",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("metrics.json", "samples.png", "recon.png", "latent.png"):
        assert (out / name).stat().st_size > 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_nmi", "test_elbo", "test_iwae"):
        assert np.isfinite(m[key])
    assert len(m["history"]) == 2 and m["model_config"]["components"] == 3
    assert m["model_config"]["hidden"] == [32]
    printed = capsys.readouterr().out
    assert "epoch    2" in printed and "test_accuracy" in printed
    assert cli.main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(ev["test_elbo"], m["test_elbo"], rtol=1e-5)
    # A second fresh run into the same --out is refused (the checkpoint stays) unless told
    # to --overwrite, which starts over.
    again = ["train", "--data", str(tmp_path / "small.npz"), "--epochs", "1",
             "--pretrain-epochs", "0", "--batch-size", "32", "--components", "3",
             "--hidden", "32", "--out", str(out), "--no-progress"]
    assert cli.main(again) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert latest_checkpoint(out / "checkpoint") == 2
    assert cli.main([*again, "--overwrite"]) == 0
    assert latest_checkpoint(out / "checkpoint") == 1
    capsys.readouterr()
    # Wrong feature count for the checkpoint, K < 1, an unknown likelihood: clear errors.
    np.save(tmp_path / "ten.npy", np.random.default_rng(0).random((50, 10)))
    assert cli.main(["evaluate", str(out), "--data", str(tmp_path / "ten.npy")]) == 2
    assert "64 features" in capsys.readouterr().err
    assert cli.main(["train", "--components", "0", "--out", str(tmp_path / "x")]) == 2
    assert "components" in capsys.readouterr().err
    assert cli.main(["train", "--likelihood", "poisson", "--out", str(tmp_path / "x")]) == 2
    assert "likelihood" in capsys.readouterr().err


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


@pytest.fixture
def run_with_checkpoint(tmp_path):
    """tmp_path with small.npz (50 points, 4 features) and run/checkpoint holding epoch 1."""
    np.savez(tmp_path / "small.npz", x=np.random.default_rng(0).random((50, 4)))
    state = init_state({"a": jnp.ones(2)}, optax.sgd(1.0))
    save_checkpoint(tmp_path / "run" / "checkpoint", state, {}, epoch=1)
    (tmp_path / "plain").write_text("a file\n")
    return tmp_path


def test_cli_overwrite_checks_every_argument_and_the_data_before_deleting(run_with_checkpoint):
    """A bad --batch-size (larger than the 40 training points) is refused before anything is
    trained or deleted: the old checkpoint stays."""
    cwd = run_with_checkpoint
    proc = _jaxvi("train", "--data", "small.npz", "--out", "run", "--overwrite",
                  "--batch-size", "1000", "--no-progress", cwd=cwd)
    _assert_one_line_error(proc, "batch_size", "1000", "40")
    assert proc.stdout == ""  # refused before the run starts, let alone pretraining
    assert latest_checkpoint(cwd / "run" / "checkpoint") == 1
    # An --out that is (or sits under) a file: named, before the data are even read.
    for out in ("plain", "plain/sub"):
        proc = _jaxvi("train", "--data", "missing.npz", "--out", out, cwd=cwd)
        _assert_one_line_error(proc, "--out", out, "file")


def test_cli_overwrite_replaces_only_the_earlier_checkpoints(run_with_checkpoint):
    """--overwrite deletes the earlier run's checkpoint steps (of the joint training and of
    the pretraining) once the new run has saved, and nothing else: files of the user's in
    --out, in its checkpoint folder and in the pretraining folder survive. A file where the
    checkpoint folder goes is refused (one line, exit 2), not deleted."""
    cwd = run_with_checkpoint
    ckpt = cwd / "run" / "checkpoint"
    state = init_state({"a": jnp.ones(2)}, optax.sgd(1.0))
    save_checkpoint(ckpt / PRETRAIN_DIR, state, {}, epoch=7)
    mine = [cwd / "run" / "notes.txt", ckpt / "notes.txt", ckpt / "data" / "x.npy",
            ckpt / PRETRAIN_DIR / "mine.txt"]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
    proc = _jaxvi("train", "--data", "small.npz", "--out", "run", "--overwrite", "--epochs",
                  "2", "--pretrain-epochs", "1", "--batch-size", "16", "--components", "2",
                  "--hidden", "8", "--restarts", "1", "--no-progress", cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(path.read_text() == path.name for path in mine)
    assert latest_checkpoint(ckpt) == 2 and latest_checkpoint(ckpt / PRETRAIN_DIR) is None
    assert sorted(p.name for p in ckpt.iterdir() if not p.name.isdigit()) == [
        "data", "notes.txt", PRETRAIN_DIR]  # no staging folder left over
    assert sorted(p.name for p in (ckpt / PRETRAIN_DIR).iterdir()) == ["mine.txt"]
    (cwd / "run2").mkdir()
    (cwd / "run2" / "checkpoint").write_text("not a folder")
    proc = _jaxvi("train", "--data", "small.npz", "--out", "run2", "--overwrite",
                  "--batch-size", "16", cwd=cwd)
    _assert_one_line_error(proc, "--out", "run2", "'checkpoint'")
    assert (cwd / "run2" / "checkpoint").read_text() == "not a folder"


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
    pre = ckpt / PRETRAIN_DIR
    proc = subprocess.Popen([sys.executable, "-m", "jaxvi.cli", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_a_checkpoint(pre, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = latest_checkpoint(pre)
    assert killed_at is not None and killed_at < 8 and latest_checkpoint(ckpt) is None
    # A fresh run into that folder is refused: it holds the pretraining's checkpoint.
    with pytest.raises(ValueError, match="pretraining epoch"):
        check_fresh_checkpoint_dir(ckpt, resume=False)

    ds = data.load(tmp_path / "d.npz")  # what the command trained on
    mc = VAEConfig(data_dim=16, components=3, latent_dim=2, hidden=(16,))
    tc = TrainConfig(epochs=1, pretrain_epochs=8, checkpoint_every=10, batch_size=32,
                           restarts=1, pretrain_neighbors=2)
    logged = []
    resumed, history = train_vae(ds.x_train, mc, tc, checkpoint_dir=ckpt, resume=True,
                                       progress=False, log=logged.append)
    assert f"resuming pretraining from epoch {killed_at} of 8 ({pre})" in logged
    assert not pre.exists() and latest_checkpoint(ckpt) == 1  # pretraining's removed
    full, full_history = train_vae(ds.x_train, mc, tc, progress=False, log=False)
    for u, v in zip(jax.tree.leaves(split_model(full)[1]),
                    jax.tree.leaves(split_model(resumed)[1]), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert [h["loss"] for h in history] == [h["loss"] for h in full_history]


def test_cli_rejects_more_devices_than_there_are(tmp_path):
    code = cli.main(["train", "--devices", "64", "--epochs", "1", "--pretrain-epochs", "0",
                     "--restarts", "1", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert not (tmp_path / "metrics.json").exists()


def test_cli_passes_inference_to_the_config(tmp_path):
    # An unknown value reaches TrainConfig's check (exit 2 before any training) ...
    code = cli.main(["train", "--inference", "reverse", "--epochs", "1", "--out",
                     str(tmp_path), "--no-progress"])
    assert code == 2
    assert not (tmp_path / "metrics.json").exists()
    # ... and the known one is parsed into the option train_vae reads.
    args = cli.build_parser().parse_args(["train", "--inference", "forward-kl"])
    assert args.inference == "forward-kl" and args.devices == 1


def test_cli_bernoulli_refuses_data_outside_the_unit_interval(tmp_path, capsys):
    """Float data beyond [0, 1] with a Bernoulli decoder: one line naming `x_train`, exit 2,
    nothing written; the same values as uint8 are scaled to [0, 1] on load and pass the check."""
    x = np.random.default_rng(0).integers(0, 256, (40, 4, 4))
    np.savez(tmp_path / "f.npz", x=x.astype(np.float32))
    code = cli.main(["train", "--data", str(tmp_path / "f.npz"), "--likelihood", "bernoulli",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "`x_train` must lie in [0, 1]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    ds = data.load_array(_saved(tmp_path / "u8.npz", x.astype(np.uint8)))
    mc = VAEConfig(data_dim=16, components=3, likelihood="bernoulli")
    check_train_inputs(ds.x_train, mc, TrainConfig(batch_size=8), x_test=ds.x_test)


def _saved(path, x):
    np.savez(path, x=x)
    return path


def test_cli_resume_from_damaged_checkpoints_is_one_line(tmp_path):
    """A real run's checkpoints with their OCDBT manifests deleted: `--resume` ends in one line
    on stderr (no intact checkpoint, naming the folder) and exit 2, without the "Event loop is
    closed" tracebacks of the array reads orbax abandons when one of them fails."""
    np.save(tmp_path / "d.npy", np.random.default_rng(0).random((200, 16)).astype(np.float32))
    args = ["train", "--data", "d.npy", "--out", "run", "--no-progress", "--epochs", "2",
            "--pretrain-epochs", "1", "--checkpoint-every", "1", "--batch-size", "32",
            "--restarts", "1", "--hidden", "16,16,16", "--components", "3", "--latent-dim", "2",
            "--pretrain-neighbors", "2"]
    assert _jaxvi(*args, cwd=tmp_path).returncode == 0
    ckpt = tmp_path / "run" / "checkpoint"
    manifests = list(ckpt.glob("*/state/**/manifest.ocdbt"))
    assert len(manifests) >= 2  # both kept epochs
    for f in manifests:
        f.unlink()
    for _ in range(2):  # the tracebacks came from a race: most runs, not every one
        proc = _jaxvi(*args, "--resume", cwd=tmp_path)
        line = _assert_one_line_error(proc, "no intact checkpoint in", "epoch 2", "epoch 1")
        assert line.startswith("jaxvi train: error:")


def test_cli_refuses_data_of_a_scale_float32_training_cannot_hold(tmp_path):
    """Data of scale 1e30 (finite in float32): one line naming `--data`, the file and the
    scale, exit 2, before anything is written (it used to train into "training loss became
    nan during epoch 1 ... Try a smaller learning rate", exit 1)."""
    x = np.random.default_rng(0).random((200, 16)).astype(np.float32) * np.float32(1e30)
    np.save(tmp_path / "big.npy", x)
    proc = _jaxvi("train", "--data", "big.npy", "--out", "run", "--no-progress",
                  "--epochs", "1", "--pretrain-epochs", "1", "--restarts", "1",
                  "--hidden", "16", "--components", "3", cwd=tmp_path)
    _assert_one_line_error(proc, "`--data` 'big.npy'", "`x_train`", "1e+30", "Rescale")
    assert proc.stdout == "" and not (tmp_path / "run").exists()
