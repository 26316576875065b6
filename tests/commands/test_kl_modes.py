"""`jaxvi kl-modes` end to end with small options: files, JSON contents, table, bad options."""

from __future__ import annotations

import json

import numpy as np

from jaxvi.cli import main


def test_kl_modes_writes_figures_json_and_table(tmp_path, capsys):
    out = tmp_path / "klm"
    rc = main(["kl-modes", "--out", str(out), "--steps", "60", "--grid", "2",
               "--init-scales", "1.0", "--learning-rates", "0.001", "0.3", "--num-samples", "8",
               "--plot-lr", "0.3"])
    assert rc == 0
    for name in ("kl_modes_1d.png", "kl_modes_2d.png", "kl_modes_sweep.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    report = json.loads((out / "kl_modes_sweep.json").read_text())
    rows = report["sweep"]
    assert [(r["target"], r["learning_rate"]) for r in rows] == [
        ("1d", 0.001), ("1d", 0.3), ("2d", 0.001), ("2d", 0.3)]
    assert [r["num_fits"] for r in rows] == [4, 4, 4, 4]  # grid² starts on the line, grid² in 2-D
    for r in rows:
        fractions = [r["exclusive"][k] for k in ("largest", "other", "between")]
        assert all(0 <= f <= 1 for f in fractions) and abs(sum(fractions) - 1) < 1e-9
        assert all(np.isfinite(v) for v in r["inclusive"].values())
    # 60 steps at lr 0.001 barely move a fit: every exclusive start off a mode stays between.
    assert rows[2]["exclusive"]["between"] == 1.0
    # Target moments in the JSON are the mixture's (checked here in numpy).
    t = report["targets"]["2d"]
    w, m, c = (np.asarray(t[k]) for k in ("weights", "locs", "covs"))
    mean = w @ m
    np.testing.assert_allclose(t["mean"], mean)
    np.testing.assert_allclose(
        t["cov"], np.einsum("k,kij->ij", w, c + np.einsum("ki,kj->kij", m, m))
        - np.outer(mean, mean), atol=1e-12)
    printed = capsys.readouterr().out
    assert "excl: largest" in printed and "kl_modes_sweep.json" in printed


def test_kl_modes_rejects_bad_options(tmp_path, capsys):
    assert main(["kl-modes", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["kl-modes", "--out", str(tmp_path), "--learning-rates", "0.1", "-1"]) == 2
    assert "--learning-rates" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
