"""`jaxvi em --variational`: fits by `fit_variational`, prints and saves its posterior, the
effective components and a plot; bad options are refused (exit 2, one line) before anything
is fitted or written."""

import jax
import numpy as np
import pytest
from jax_subprocess import run_jaxvi
from scipy.stats import multivariate_normal
from shared_inputs import four_blobs

from jaxvi.cli import main
from jaxvi.em import variational as vb
from jaxvi.em.variational_fit import fit_variational


@pytest.fixture(scope="module")
def blobs_file(tmp_path_factory):
    """Three well-separated 2-D clusters of 60 points each."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = np.concatenate([rng.normal(size=(60, 2)) * 0.5 + c for c in centres])
    path = tmp_path_factory.mktemp("vb") / "blobs.npy"
    np.save(path, x)
    return path, x


def test_variational_fit_saves_what_fit_variational_gives(blobs_file, tmp_path, capsys):
    path, x = blobs_file
    out, png = tmp_path / "vb.npz", tmp_path / "vb.png"
    args = ["em", str(path), "-k", "8", "--variational", "--max-iter", "60", "--tol", "0",
            "--seed", "3", "--weight-concentration", "0.05", "--out", str(out)]
    assert main([*args, "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "effective components: 3 of 8 (weight > 0.01)" in printed, printed
    assert "lower bound" in printed
    saved = np.load(out)
    with jax.enable_x64(True):
        ref = fit_variational(x, 8, key=jax.random.key(3), max_iter=60, tol=0.0,
                              weight_concentration_prior=0.05)
        weights = np.asarray(vb.mixture_weights(ref.posterior, "dirichlet_process"))
    np.testing.assert_allclose(saved["weights"], weights, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(saved["means"], ref.posterior.means, rtol=1e-10)
    np.testing.assert_allclose(saved["covariances"], ref.posterior.covariances, rtol=1e-10)
    np.testing.assert_allclose(saved["history"], np.asarray(ref.history), rtol=1e-12)
    assert float(saved["lower_bound"]) == pytest.approx(float(ref.lower_bound), rel=1e-12)
    assert saved["weight_concentration"].shape == (2, 8)  # the sticks' Beta parameters
    assert int(saved["n_effective"]) == 3 and saved["effective"].sum() == 3
    # The log-likelihood is that of the posterior-mean mixture (E_q[π], m_k, (ν_k W_k)⁻¹).
    dens = sum(w * multivariate_normal(m, c).pdf(x) for w, m, c in
               zip(saved["weights"], saved["means"], saved["covariances"], strict=True))
    assert float(saved["log_likelihood"]) == pytest.approx(np.mean(np.log(dens)), rel=1e-10)
    np.testing.assert_allclose(np.sort(saved["weights"][saved["effective"]]), 1 / 3, atol=0.02)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    # An earlier result is refused without --overwrite, and left as it was.
    before = out.read_bytes()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    # A finite Dirichlet prior, diagonal, the covariance prior regularised: its
    # concentrations are (K,); a higher threshold counts fewer.
    assert main(["em", str(path), "-k", "4", "--variational", "dirichlet", "--max-iter", "3",
                 "--weight-threshold", "0.5", "--covariance-type", "diag",
                 "--covariance-prior-reg", "0.5", "--out", str(tmp_path / "dir.npz")]) == 0
    saved = np.load(tmp_path / "dir.npz")
    with jax.enable_x64(True):
        ref = fit_variational(x, 4, key=jax.random.key(0), max_iter=3, covariance_type="diag",
                              weight_concentration_prior_type="dirichlet_distribution",
                              covariance_prior=np.var(x, axis=0, ddof=1) + 0.5)
    np.testing.assert_allclose(saved["covariances"], ref.posterior.covariances, rtol=1e-10)
    assert saved["weight_concentration"].shape == (4,)
    assert str(saved["weight_concentration_prior_type"]) == "dirichlet_distribution"
    assert int(saved["n_effective"]) == int((saved["weights"] > 0.5).sum())


@pytest.mark.parametrize("extra,flag", [
    (["--variational", "--weight-concentration", "0"], "--weight-concentration"),
    (["--variational", "--weight-concentration", "-1"], "--weight-concentration"),
    (["--variational", "--weight-threshold", "1.5"], "--weight-threshold"),
    (["--variational", "--weight-threshold", "0"], "--weight-threshold"),
    (["--weight-concentration", "1"], "--weight-concentration"),
    (["--weight-threshold", "0.1"], "--weight-threshold"),
    (["--variational", "--covariance-prior-reg", "-1"], "--covariance-prior-reg"),
    (["--covariance-prior-reg", "1"], "--covariance-prior-reg"),
    (["--variational", "-k", "500"], "n_components"),
])
def test_bad_options_are_refused_before_writing(blobs_file, tmp_path, capsys, extra, flag):
    path, _ = blobs_file
    out = tmp_path / "p.npz"
    assert main(["em", str(path), "-k", "3", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert flag in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_unknown_weight_prior_is_an_argparse_error(blobs_file, capsys):
    path, _ = blobs_file
    with pytest.raises(SystemExit) as exit_:
        main(["em", str(path), "-k", "3", "--variational", "pitman-yor"])
    assert exit_.value.code == 2 and "--variational" in capsys.readouterr().err


def test_singular_covariance_prior_names_the_option(tmp_path, capsys):
    """A constant feature makes the default covariance prior (the data's covariance)
    singular: refused, naming --covariance-prior-reg, before anything is written."""
    x = np.c_[np.random.default_rng(1).normal(size=(30, 2)), np.ones(30)]
    np.save(tmp_path / "flat.npy", x)
    out = tmp_path / "p.npz"
    for cov in ("full", "diag"):
        assert main(["em", str(tmp_path / "flat.npy"), "-k", "2", "--variational",
                     "--covariance-type", cov, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "--covariance-prior-reg" in err and "singular" in err, err
    assert not out.exists()


@pytest.mark.parametrize("prior", ["dirichlet-process", "dirichlet"])
def test_pruning_through_the_real_command(tmp_path, prior):
    """`jaxvi em --variational` (a subprocess) with K = 12 on 4 blobs and concentration
    1e-3, where VB-EM prunes components until their expected-value weights underflow to 0:
    it fits, counts 4 effective components and saves a finite posterior-mean mixture."""
    np.save(tmp_path / "blobs.npy", four_blobs())
    proc = run_jaxvi("em", "blobs.npy", "-k", "12", "--variational", prior,
                     "--weight-concentration", "1e-3", "--out", "vb.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "effective components: 4 of 12" in proc.stdout, proc.stdout
    saved = np.load(tmp_path / "vb.npz")
    assert np.isfinite(float(saved["log_likelihood"])) and int(saved["n_effective"]) == 4
    assert np.all(np.isfinite(saved["covariances"]))
