"""`TrainConfig.inference` and the `jaxvi train` options that choose it and the devices."""

import numpy as np
import pytest

from jaxvi import cli, data, train
from jaxvi.nn import VAEConfig


def test_unknown_inference_and_too_few_wake_sleep_samples_are_rejected():
    with pytest.raises(ValueError, match="inference"):
        train.TrainConfig(inference="reverse")
    with pytest.raises(ValueError, match="wake_sleep_samples"):
        train.TrainConfig(inference="forward-kl", wake_sleep_samples=1)


def test_forward_kl_training_raises_the_iwae_bound():
    x = np.asarray(data.load_digits().x_train[:256], np.float32)
    mc = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))
    tc = train.TrainConfig(epochs=6, pretrain_epochs=0, restarts=1, batch_size=64,
                           inference="forward-kl", wake_sleep_samples=4)
    _, history = train.train_vae(x, mc, tc, progress=False, log=False)
    iwae = [h["iwae"] for h in history]
    assert np.all(np.isfinite(iwae))
    assert iwae[-1] > iwae[0] + 1.0


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
