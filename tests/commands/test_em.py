"""`jaxvi em`: fits, prints log-likelihood/BIC/weights, saves parameters and a plot."""

import numpy as np

from jaxvi.cli import main


def test_em_command_fits_saves_and_plots(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(80, 2)) * 0.5, rng.normal(size=(40, 2)) + [4.0, 3.0]])
    data = tmp_path / "data.npy"
    np.save(data, x)
    out, png = tmp_path / "params.npz", tmp_path / "fit.png"
    rc = main(["em", str(data), "--components", "2", "--covariance-type", "full",
               "--out", str(out), "--plot", str(png), "--seed", "1"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "mean log-likelihood" in printed and "BIC" in printed and "weights" in printed
    params = np.load(out)
    assert params["means"].shape == (2, 2) and params["covariances"].shape == (2, 2, 2)
    assert np.allclose(np.sort(params["weights"]), [1 / 3, 2 / 3], atol=0.02)
    hist = params["history"]
    assert len(hist) >= 1 and np.all(np.diff(hist) >= -1e-9)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_em_command_errors(tmp_path, capsys):
    data = tmp_path / "small.npy"
    np.save(data, np.zeros((3, 2)) + np.arange(3)[:, None])
    assert main(["em", str(tmp_path / "missing.npy"), "--components", "2"]) == 2
    assert main(["em", str(data), "--components", "5", "--out", str(tmp_path / "p.npz")]) == 2
    assert "n_components" in capsys.readouterr().err
