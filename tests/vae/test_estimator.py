"""`jaxvi.MixtureVAE`: a short fit on well-separated blobs (given as uint8 images) recovers
them on held-out points; save -> load gives identical predictions and codes; the inference is
deterministic and independent of the other rows; bad input is refused by name; scikit-learn's
estimator checks."""

from typing import NamedTuple

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import jaxvi
from jaxvi.training.checkpoint import checkpoint_steps, save_checkpoint
from jaxvi.vae.estimator import MixtureVAE
from jaxvi.vae.recipe import load_model

SMALL = dict(latent_dim=2, hidden=(32,), head_hidden=(8,), restarts=2, batch_size=32,
             pretrain_epochs=33, pretrain_steps=300, epochs=33, steps=300)


def blob_images(n: int, seed: int):
    """n points of 3 well-separated blobs in 6 pixels, as uint8 images (n, 2, 3)."""
    r = np.random.default_rng(seed)
    centres = np.array([[40, 40, 40, 200, 200, 200], [200, 200, 40, 40, 40, 200],
                        [40, 200, 200, 200, 40, 40]], float)
    y = r.integers(0, 3, n)
    x = np.clip(centres[y] + r.normal(0, 12, (n, 6)), 0, 255)
    return np.round(x).astype(np.uint8).reshape(n, 2, 3), y


@pytest.fixture(scope="module")
def fitted():
    x, y = blob_images(300, 0)
    est = MixtureVAE(3, random_state=0, **SMALL).fit(x)
    return est, x, y


def test_fit_recovers_blobs_and_scales_uint8_images(fitted):
    est, x, y = fitted
    x_test, y_test = blob_images(120, 1)
    assert adjusted_rand_score(y_test, est.predict(x_test)) >= 0.9
    assert adjusted_rand_score(y, est.labels_) >= 0.9
    # uint8 images were flattened and divided by 255, and so is every later X.
    assert est.n_features_in_ == 6 and est.input_scale_ == pytest.approx(1 / 255)
    np.testing.assert_array_equal(est.predict(x_test), est.predict(x_test.reshape(120, 6)))
    means = est.transform(x_test)
    model, _ = load_model_from(est)
    np.testing.assert_allclose(means, model.encoder(x_test.reshape(120, 6) / 255.0)[0],
                               rtol=1e-5, atol=1e-6)
    proba = est.predict_proba(x_test)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    # One fixed set of draws of w: a row's result does not depend on the other rows.
    np.testing.assert_allclose(est.predict_proba(x_test[:7]), proba[:7], rtol=1e-5, atol=1e-6)
    scores = est.score_samples(x_test)
    np.testing.assert_allclose(est.score_samples(x_test[5:9]), scores[5:9], rtol=1e-5)
    assert est.score(x_test) == pytest.approx(float(np.mean(scores)))
    samples, z = est.sample(30, component=1)
    assert samples.shape == (30, 6) and np.all(z == 1)
    assert samples.max() > 2.0  # back in the units of X (0–255), not [0, 1]


def test_embedding_choice_reaches_the_recipe(fitted):
    """The default finds the prior's clusters on the UMAP of the codes; embedding="none" on the
    codes themselves (the recipe before UMAP): both recover well-separated blobs."""
    est, x, y = fitted
    assert est.train_config_.embedding == "umap"
    plain = MixtureVAE(3, random_state=0, embedding="none", **SMALL).fit(x)
    assert plain.train_config_.embedding == "none"
    assert adjusted_rand_score(y, plain.labels_) >= 0.9
    with pytest.raises(ValueError, match="`embedding` must be one of"):
        MixtureVAE(3, embedding="tsne", **SMALL).fit(x)


def load_model_from(est):
    """The estimator's networks as a `HierarchicalVAE`."""
    from jaxvi.vae._estimator_inference import _graphdef
    from jaxvi.vae.model import merge_model

    return merge_model(_graphdef(est.model_config_), est.params_), None


def test_save_load_round_trip(fitted, tmp_path):
    est, x, _ = fitted
    folder = est.save(tmp_path / "vae")
    back = jaxvi.MixtureVAE.load(folder)
    np.testing.assert_array_equal(back.predict(x), est.predict(x))
    np.testing.assert_array_equal(back.transform(x), est.transform(x))
    np.testing.assert_array_equal(back.score_samples(x), est.score_samples(x))
    assert back.get_params() == est.get_params() and back.input_scale_ == est.input_scale_
    model, meta = load_model(folder)  # the recipe's own loader reads it too
    assert model.config == est.model_config_ and meta["input_scale"] == est.input_scale_
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        est.save(folder)
    est.save(folder, overwrite=True)


def test_save_overwrite_replaces_only_the_checkpoint(fitted, tmp_path):
    """A user's files beside a saved model survive every save: a folder holding them is
    refused (the checkpoint left as it was) unless allow_other_files, and overwrite then
    replaces the checkpoint's step folders only, a higher-numbered old step included."""
    est, x, _ = fitted
    folder = est.save(tmp_path / "mine")
    (folder / "notes.txt").write_text("mine")
    (folder / "data").mkdir()
    (folder / "data" / "x.npy").write_bytes(b"123")
    save_checkpoint(folder, TrainState(np.zeros(2)), {"junk": 1}, epoch=999)  # stale, newer
    with pytest.raises(ValueError, match=r"'data', 'notes.txt'.*allow_other_files=True"):
        est.save(folder, overwrite=True)
    assert checkpoint_steps(folder)[-1] == 999
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        est.save(folder, allow_other_files=True)
    est.save(folder, overwrite=True, allow_other_files=True)
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "data" / "x.npy").read_bytes() == b"123"
    assert checkpoint_steps(folder) == [int(est.history_[-1]["epoch"])]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["data", "notes.txt", str(checkpoint_steps(folder)[0])])  # no staging left over
    np.testing.assert_array_equal(jaxvi.MixtureVAE.load(folder).predict(x), est.predict(x))
    # A first save into a folder of the user's own: refused unless allowed, then beside them.
    own = tmp_path / "own"
    own.mkdir()
    (own / "keep.txt").write_text("k")
    with pytest.raises(ValueError, match="keep.txt"):
        est.save(own)
    est.save(own, allow_other_files=True)
    assert (own / "keep.txt").read_text() == "k"


class TrainState(NamedTuple):
    params: np.ndarray


def test_bad_input_is_refused_by_name(fitted):
    est, x, _ = fitted
    with pytest.raises(ValueError, match="X has 5 features, but MixtureVAE is expecting 6"):
        est.predict(np.zeros((4, 5)))
    bad = x.reshape(300, 6).astype(float)
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.predict(bad)
    with pytest.raises(NotFittedError):
        MixtureVAE(3).predict(x)
    with pytest.raises(ValueError, match="n_components"):
        MixtureVAE(0).fit(x)
    # A Bernoulli decoder takes data in [0, 1] only (uint8 is scaled there; floats are not).
    with pytest.raises(ValueError, match=r"`X` must lie in \[0, 1\].*Bernoulli"):
        MixtureVAE(3, likelihood="bernoulli").fit(x.reshape(300, 6).astype(np.float32))
    # A Gaussian decoder takes data of a scale float32 training holds: 1e30 (finite in float32)
    # used to end in a NaN loss after pretraining; now it is refused before, in fit and predict.
    huge = x.reshape(300, 6).astype(np.float32) * np.float32(1e28)
    with pytest.raises(ValueError, match=r"`X` has values up to .*e\+30 in magnitude.*Rescale"):
        MixtureVAE(3, random_state=0, **SMALL).fit(huge)
    with pytest.raises(ValueError, match=r"`X`, after scaling by 0.003922 has values up to"):
        est.predict(huge)


# scikit-learn's estimator checks, all of them (about 50; most fit a small network on data of a
# new shape, so each compiles anew: 2-15 s apiece on 2 cores). Some set n_components = 1, which
# fits one Gaussian prior.
CHECKED = dict(latent_dim=2, hidden=(32,), head_hidden=(8,), restarts=1, cluster_samples=4,
               iwae_samples=4, epochs=300, random_state=0)  # check_clustering: ARI > 0.4 on 3
# blobs, and every cluster used on them with 5 noise points: 60 joint steps (the default
# epochs on 55 rows) left one cluster empty there; 300 keep all three (both GMM fitters).


@parametrize_with_checks([MixtureVAE(3, **CHECKED)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
