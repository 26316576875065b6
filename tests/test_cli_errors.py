"""Every command-line error is one line on stderr with exit code 2, never a traceback, and
comes before anything is fitted or written; an output that would replace an earlier one is
refused without `--overwrite`. Each case runs the real `jaxvi` command in a subprocess on tiny
data (the cases fail in argument or data checking, so each costs about one JAX import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxvi as jaxvi_package
from jaxvi import cli

# The subprocesses import the same jaxvi as this test (whatever the working directory).
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(Path(jaxvi_package.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def jaxvi(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxvi.cli", *map(str, args)], cwd=cwd,
                          env=_ENV, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2, exactly one line on stderr (no traceback) that mentions every one of `names`."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, (name, err)
    return err.strip()


@pytest.fixture
def files(tmp_path):
    """Small data files, good and bad, in tmp_path (also the working directory of the runs)."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "good.npy", rng.normal(size=(30, 2)))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "table.npy").write_text("1.0,2.0\n3.0,4.0\n")
    np.save(tmp_path / "three.npy", rng.normal(size=(3, 4)))
    big = rng.normal(size=(20, 3))
    big[4, 1] = -3e39
    np.save(tmp_path / "huge.npy", big)
    np.save(tmp_path / "cplx.npy", rng.normal(size=(20, 2)) + 1j)
    np.savez(tmp_path / "floaty.npz", x=rng.normal(size=(20, 2)), y=np.linspace(0, 2, 20))
    (tmp_path / "plain").write_text("a file, not a folder\n")
    (tmp_path / "folder").mkdir()
    return tmp_path


# ------------------------------------------------------------------------- broken data files


def test_em_empty_npy_names_the_file(files):
    err = assert_one_line_error(jaxvi("em", "empty.npy", "-k", "2", cwd=files), "empty.npy")
    assert "not a valid .npy" in err and "empty" in err


def test_csv_renamed_npy_is_not_called_pickled(files):
    err = assert_one_line_error(jaxvi("train", "--data", "table.npy", cwd=files), "table.npy")
    assert "not a valid .npy" in err
    assert "pickle" not in err.lower()


def test_em_complex_array_is_refused(files):
    err = assert_one_line_error(jaxvi("em", "cplx.npy", "-k", "2", cwd=files), "cplx.npy")
    assert "complex" in err
    assert not (files / "gmm_params.npz").exists()


def test_em_folder_as_data(files):
    (files / "dir.npy").mkdir()
    assert_one_line_error(jaxvi("em", "dir.npy", "-k", "2", cwd=files), "dir.npy", "folder")


def test_train_three_points_names_the_file_and_the_minimum(files):
    err = assert_one_line_error(
        jaxvi("train", "--data", "three.npy", "--out", "run", "--no-progress", cwd=files),
        "three.npy", "3 data points")
    assert "at least 10" in err
    assert not (files / "run").exists()


def test_train_values_beyond_float32_are_not_called_nan(files):
    err = assert_one_line_error(
        jaxvi("train", "--data", "huge.npy", "--out", "run", "--no-progress", cwd=files),
        "huge.npy", "float32", "3e+39")
    assert "NaN" not in err


def test_train_complex_and_float_labels_are_refused(files):
    # One process for both: data.load refuses either before training.
    err = assert_one_line_error(
        jaxvi("train", "--data", "cplx.npy", "--out", "run", "--no-progress", cwd=files),
        "cplx.npy", "complex")
    assert "complex128" in err
    err = assert_one_line_error(
        jaxvi("train", "--data", "floaty.npz", "--out", "run", "--no-progress", cwd=files),
        "floaty.npz", "`y`", "integer")
    assert not (files / "run").exists()


# ------------------------------------------------------------------------- jaxvi em outputs


@pytest.mark.parametrize("flag, value, expect", [
    ("--out", "plain/params.npz", "plain"),
    ("--out", "folder.npz", "folder"),
    ("--plot", "plain/fit.png", "plain"),
    ("--plot", "fit.xyz", "xyz"),
])
def test_em_bad_output_fails_before_fitting(files, flag, value, expect):
    if value == "folder.npz":
        (files / "folder.npz").mkdir()
    args = ["em", "good.npy", "-k", "2", "--out", "p.npz", flag, value]
    proc = jaxvi(*args, cwd=files)
    assert_one_line_error(proc, flag, expect)
    assert "EM iterations" not in proc.stdout  # refused before the fit
    assert not (files / "p.npz").exists()


def test_em_prints_the_real_path_and_refuses_to_overwrite(files, capsys):
    args = ["em", str(files / "good.npy"), "-k", "2", "--max-iter", "5",
            "--out", str(files / "params"), "--plot", str(files / "fit")]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    npz, png = files / "params.npz", files / "fit.png"
    assert f"saved {npz}\n" in printed and f"saved {png}\n" in printed
    before = npz.read_bytes(), png.read_bytes()
    # A second run into the same outputs is refused (before fitting) ...
    proc = jaxvi("em", "good.npy", "-k", "2", "--out", "params", "--plot", "fit.png",
                 cwd=files)
    assert_one_line_error(proc, "params.npz", "--overwrite")
    assert "EM iterations" not in proc.stdout
    # ... and so is one that would replace only the plot.
    proc = jaxvi("em", "good.npy", "-k", "2", "--out", "other.npz", "--plot", "fit.png",
                 cwd=files)
    assert_one_line_error(proc, "fit.png", "--overwrite")
    assert (npz.read_bytes(), png.read_bytes()) == before
    assert not (files / "other.npz").exists()
    # With --overwrite it replaces them.
    assert cli.main([*args, "--seed", "3", "--overwrite"]) == 0
    assert npz.read_bytes() != before[0]


def test_em_overwrite_replaces_only_its_own_result(files):
    """`jaxvi em --out ... --overwrite` replaces an earlier result of its own, whole (written
    beside it and renamed), and leaves every other file of the folder as it was; an --out
    that is not a `jaxvi em` result is refused (one line, exit 2), not replaced."""
    np.savez(files / "mine.npz", a=np.arange(3))
    (files / "notes.txt").write_text("notes")
    others = {p.name: p.read_bytes() for p in files.rglob("*") if p.is_file()}
    proc = jaxvi("em", "good.npy", "-k", "2", "--max-iter", "3", "--out", "mine.npz",
                 "--overwrite", cwd=files)
    assert_one_line_error(proc, "--out", "mine.npz", "not a result of `jaxvi em`")
    for prior in ([], ["--variational"]):
        for seed in ("1", "2"):
            proc = jaxvi("em", "good.npy", "-k", "2", "--max-iter", "3", "--out", "res",
                         "--seed", seed, "--overwrite", *prior, cwd=files)
            assert proc.returncode == 0, proc.stderr[-3000:]
        assert set(np.load(files / "res.npz").files) >= {"weights", "means", "covariances"}
    assert {p.name: p.read_bytes() for p in files.rglob("*")
            if p.is_file() and p.name != "res.npz"} == others  # no temporary file left


def test_em_bad_numbers(files):
    assert_one_line_error(jaxvi("em", "good.npy", "-k", "2", "--seed", str(2**70), cwd=files),
                          "--seed")
    assert_one_line_error(jaxvi("em", "good.npy", "-k", "2", "--tol", "nan", cwd=files),
                          "--tol", "nan")
    # Counts beyond int32 used to end in a traceback from inside JAX.
    assert_one_line_error(jaxvi("em", "good.npy", "-k", "2", "--max-iter", str(2**70),
                                cwd=files), "--max-iter")
    assert not (files / "gmm_params.npz").exists()


def test_argparse_errors_are_one_line(files):
    assert_one_line_error(jaxvi("em", "good.npy", cwd=files), "--components")


# ------------------------------------------------------------------------- kl and kl-modes


def test_kl_seed_and_counts_out_of_range(files):
    assert_one_line_error(jaxvi("kl", "--seed", str(2**64), cwd=files), "--seed")
    assert_one_line_error(jaxvi("kl-modes", "--steps", str(2**70), "--out", "klm", cwd=files),
                          "--steps")
    assert not (files / "klm").exists()


@pytest.mark.parametrize("out, expect", [("plain", "plain"), ("plain/sub", "plain")])
def test_kl_modes_out_is_or_sits_under_a_file(files, out, expect):
    assert_one_line_error(jaxvi("kl-modes", "--out", out, cwd=files), "--out", expect)


def test_kl_modes_refuses_to_overwrite_and_bad_floats(files, monkeypatch, capsys):
    out = files / "klm"
    out.mkdir()
    (out / "kl_modes_sweep.json").write_text("{}")
    proc = jaxvi("kl-modes", "--out", "klm", cwd=files)
    assert_one_line_error(proc, "kl_modes_sweep.json", "--overwrite")
    assert (out / "kl_modes_sweep.json").read_text() == "{}"
    assert_one_line_error(jaxvi("kl-modes", "--out", "new", "--learning-rates", "0.1", "nan",
                                cwd=files), "--learning-rates", "nan")
    assert not (files / "new").exists()
    # --overwrite lets the run through (the sweep itself is stubbed out here).
    from jaxvi.commands import kl_modes

    reached = []
    monkeypatch.setattr(kl_modes, "run_kl_modes", lambda out, **kw: reached.append(out) or [])
    monkeypatch.setattr(kl_modes, "format_table", lambda rows: "")
    assert cli.main(["kl-modes", "--out", str(out), "--overwrite"]) == 0
    assert reached == [out]


# ------------------------------------------------------------------------- cli.main itself


def test_main_turns_user_os_errors_into_one_line(monkeypatch, capsys):
    from jaxvi.commands import kl

    def denied(args):
        raise PermissionError(13, "Permission denied", "/root/out.npz")

    monkeypatch.setattr(kl, "run", denied)
    assert cli.main(["kl"]) == 2
    err = capsys.readouterr().err
    assert err == "jaxvi kl: error: Permission denied: '/root/out.npz'\n"


def test_main_keeps_the_traceback_of_a_bug(monkeypatch):
    from jaxvi.commands import kl

    def bug(args):
        raise TypeError("a genuine bug")

    monkeypatch.setattr(kl, "run", bug)
    with pytest.raises(TypeError, match="genuine bug"):
        cli.main(["kl"])


def test_launch_errors_name_the_program(files):
    """`jaxvi launch -n 0 -- jaxvi em ...` used to print the child command list where the
    program's name goes."""
    proc = jaxvi("launch", "-n", "0", "--", "jaxvi", "em", "good.npy", "-k", "2", cwd=files)
    err = assert_one_line_error(proc, "--num-processes", "0")
    assert err.startswith("jaxvi launch: error: "), err
