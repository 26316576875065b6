"""`jaxvi.vae.pretrain`: the consensus of several encodings recovers their shared partition,
and pretraining copes with more neighbours than points."""

import jax
import numpy as np

from jaxvi.vae.clusters import consensus_labels, fit_code_gmm, gmm_labels, prior_from_labels
from jaxvi.vae.model import VAEConfig
from jaxvi.vae.pretrain import pretrain
from jaxvi.vae.recipe import TrainConfig


def test_consensus_recovers_a_shared_partition():
    """Five encodings of one 4-cluster partition, each placing the clusters its own way (a
    random rotation and shift) with its own noise: every encoding alone mislabels 5-15 % of
    the points where its clusters overlap; their consensus sees through the independent noise."""
    from jaxvi.metrics import cluster_accuracy

    r = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    square = 2.0 * np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    codes = []
    for _ in range(5):
        rotation = np.linalg.qr(r.normal(size=(2, 2)))[0]
        centres = square @ rotation + r.normal(size=2)
        codes.append(centres[truth] + r.normal(scale=0.6, size=(200, 2)))
    cons = consensus_labels(codes, 4, seed=0)
    alone = [cluster_accuracy(truth, gmm_labels(fit_code_gmm(c, 4, seed=0), c)) for c in codes]
    assert cluster_accuracy(truth, cons) == 1.0
    assert max(alone) < 0.95
    w, m, v = prior_from_labels(np.eye(4)[truth] * 3.0, cons, 4)
    np.testing.assert_allclose(w, 0.25, atol=1e-5)
    assert np.all(v > 0) and m.shape == (4, 4)


def test_pretraining_with_more_neighbours_than_points():
    """pretrain_neighbors ≥ N: the neighbour table and the loss agree on N − 1 neighbours
    (a loss reshaping for all of them would crash)."""
    x = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    mc = VAEConfig(data_dim=4, components=2, latent_dim=2, hidden=(8,), head_hidden=(4,))
    tc = TrainConfig(pretrain_epochs=1, pretrain_neighbors=10, restarts=1, batch_size=6)
    model, summary = pretrain(mc, tc, x, key=jax.random.key(0))
    assert len(summary["cluster_labels"]) == 6 and np.isfinite(summary["pretrain_loss"])


def test_umap_embedding_separates_what_a_gmm_on_the_codes_cannot():
    """Two interleaved half-moons as "codes": a diagonal GMM on them cuts across both moons,
    a GMM on their UMAP embedding (N2D's step) follows each moon; the labels are a partition
    of every point and the same for the same seed."""
    from sklearn.datasets import make_moons

    from jaxvi.metrics import cluster_accuracy

    codes, truth = make_moons(400, noise=0.03, random_state=0)
    plain = consensus_labels([codes], 2, seed=0, embedding="none")
    umap = consensus_labels([codes], 2, seed=0, embedding="umap", embedding_neighbors=10)
    assert cluster_accuracy(truth, plain) < 0.9
    assert cluster_accuracy(truth, umap) > 0.98
    np.testing.assert_array_equal(umap, consensus_labels([codes], 2, seed=0, embedding="umap",
                                                         embedding_neighbors=10))


def test_code_gmm_is_the_packages_em_and_matches_scikit_learns():
    """fit_code_gmm is jaxvi.em's EM (float64): on four clusters in 3-D its mean
    log-likelihood (within the stopping tolerance) and labels equal scikit-learn's
    GaussianMixture with the same settings
    (full and diagonal covariances), and gmm_labels are the components' argmax."""
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    from jaxvi import em

    r = np.random.default_rng(1)
    centres = r.normal(scale=5.0, size=(4, 3))
    codes = centres[np.repeat(np.arange(4), 150)] + r.normal(size=(600, 3))
    for cov in ("full", "diag"):
        gmm = fit_code_gmm(codes, 4, seed=0, covariance_type=cov)
        assert isinstance(gmm, em.GMM) and gmm.means.dtype == np.float64
        ref = GaussianMixture(4, covariance_type=cov, n_init=5, random_state=0,
                              reg_covar=1e-4).fit(codes)
        with jax.enable_x64(True):
            ours = float(em.log_prob(codes, gmm).mean())
        # both stop when an iteration gains < tol = 1e-3 nats per point
        np.testing.assert_allclose(ours, ref.score(codes), atol=5e-3)
        labels = gmm_labels(gmm, codes)
        assert adjusted_rand_score(labels, ref.predict(codes)) > 0.99
        with jax.enable_x64(True):
            np.testing.assert_array_equal(
                labels, np.argmax(np.asarray(em.e_step(codes, gmm)[0]), axis=1))
