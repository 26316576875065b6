"""Training: the ELBO rises, resume equals an uninterrupted run, the non-finite guard, data
loading, bad input, and `jaxvi train`/`jaxvi evaluate` end to end on a small data set."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxvi import cli, data, train
from jaxvi.nn import HierarchicalVAE, VAEConfig

SMALL = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def test_digits_split_is_fixed_and_stratified(digits):
    assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1
    counts = np.bincount(digits.y_test)
    assert counts.min() >= 35 and counts.max() <= 37
    again = data.load_digits()
    np.testing.assert_array_equal(again.x_test, digits.x_test)


def test_load_array_npy_and_npz(tmp_path, digits):
    x, y = digits.x_train[:100], digits.y_train[:100]
    np.save(tmp_path / "a.npy", x.reshape(100, 8, 8))
    ds = data.load(tmp_path / "a.npy")
    assert ds.x_train.shape == (80, 64) and ds.y_train is None
    np.savez(tmp_path / "b.npz", x=x, y=y)
    ds = data.load(tmp_path / "b.npz")
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 100 and ds.y_test is not None
    np.savez(tmp_path / "c.npz", x_train=x[:70], x_test=x[70:], y_train=y[:70], y_test=y[70:])
    ds = data.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(ds.x_test, x[70:])
    bad = x.copy()
    bad[3, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="finite"):
        data.load(tmp_path / "nan.npy")
    with pytest.raises(FileNotFoundError):
        data.load(tmp_path / "missing.npy")
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=".npy or .npz"):
        data.load(tmp_path / "d.csv")


def test_epoch_batches_is_a_permutation():
    x = jnp.arange(20.0).reshape(10, 2)
    b = jax.jit(lambda x, k: data.epoch_batches(x, 3, key=k))(x, jax.random.key(0))
    assert b.shape == (3, 3, 2)
    rows = np.asarray(b).reshape(-1, 2)[:, 0] / 2
    assert len(set(rows.tolist())) == 9 and set(rows.tolist()) <= set(range(10))


def test_short_training_raises_the_elbo(digits):
    x = jnp.asarray(digits.x_train[:256])
    model = HierarchicalVAE(SMALL, rngs=nnx.Rngs(0))
    graphdef, params = train.split_model(model)
    evaluator = train.make_evaluator(graphdef, iwae_samples=8)
    before, _ = evaluator(params, x, key=jax.random.key(1))
    state, history = train.fit(
        train.elbo_loss(graphdef), optax.adam(3e-3), params, x, key=jax.random.key(2),
        epochs=15, batch_size=64, progress=False, log=False,
    )
    after, _ = evaluator(state.params, x, key=jax.random.key(1))
    assert after["elbo"] > before["elbo"] + 10.0
    assert history[-1]["elbo"] > history[0]["elbo"]
    assert after["iwae"] >= after["elbo"] - 0.5
    assert int(state.step) == 15 * (256 // 64)


def test_resume_equals_uninterrupted_run(tmp_path, digits):
    x = digits.x_train[:192]
    common = dict(batch_size=64, pretrain_epochs=0, seed=3, checkpoint_every=1000)
    full, _ = train.train_vae(
        x, SMALL, train.TrainConfig(epochs=4, **common), checkpoint_dir=tmp_path / "full",
        progress=False, log=False,
    )
    # "Interrupted" after 2 epochs (its checkpoint at the end), then resumed to 4.
    train.train_vae(x, SMALL, train.TrainConfig(epochs=2, **common),
                    checkpoint_dir=tmp_path / "part", progress=False, log=False)
    assert train.latest_checkpoint(tmp_path / "part") == 2
    resumed, history = train.train_vae(
        x, SMALL, train.TrainConfig(epochs=4, **common), checkpoint_dir=tmp_path / "part",
        resume=True, progress=False, log=False,
    )
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    a = jax.tree.leaves(train.split_model(full)[1])
    b = jax.tree.leaves(train.split_model(resumed)[1])
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
    # The checkpoint rebuilds the model from its stored config.
    loaded, meta = train.load_model(tmp_path / "part")
    assert loaded.config == SMALL and meta["epoch"] == 4
    for u, v in zip(b, jax.tree.leaves(train.split_model(loaded)[1]), strict=True):
        np.testing.assert_array_equal(u, v)
    # A fresh (not resumed) run into the same folder stops before training, keeping it.
    with pytest.raises(ValueError, match="already holds checkpoints .*epoch 4.*resume"):
        train.train_vae(x, SMALL, train.TrainConfig(epochs=4, **common),
                        checkpoint_dir=tmp_path / "part", progress=False, log=False)
    assert train.latest_checkpoint(tmp_path / "part") == 4
    with pytest.raises(ValueError, match="model config"):
        other = VAEConfig(**{**SMALL.to_dict(), "components": 4})
        train.train_vae(x, other, train.TrainConfig(epochs=5, **common),
                        checkpoint_dir=tmp_path / "part", resume=True, progress=False, log=False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    """loss = log a under SGD(lr=1): a goes 3 → 2.67 → … → 0.56 → −1.24, where log is NaN."""

    def loss_fn(params, batch, key):
        loss = jnp.log(params["a"]) + 0.0 * jnp.sum(batch)
        return loss, {}

    x = np.ones((4, 2), np.float32)
    with pytest.raises(train.NonFiniteLossError, match="epoch 7"):
        train.fit(loss_fn, optax.sgd(1.0), {"a": jnp.asarray(3.0)}, x, key=jax.random.key(0),
                  epochs=20, batch_size=4, checkpoint_dir=tmp_path, checkpoint_every=1,
                  progress=False, log=False)
    assert train.latest_checkpoint(tmp_path) == 6
    target = train.init_state({"a": jnp.asarray(0.0)}, optax.sgd(1.0))
    state, meta = train.restore_checkpoint(tmp_path, target)
    assert np.isfinite(float(state.params["a"])) and len(meta["history"]) == 6
    assert all(np.isfinite(r["loss"]) for r in meta["history"])


def test_bad_training_input_raises(digits):
    bad = digits.x_train[:100].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train.train_vae(bad, SMALL, train.TrainConfig(epochs=1), progress=False, log=False)
    with pytest.raises(ValueError, match="64 features"):
        train.train_vae(digits.x_train[:, :10], SMALL, train.TrainConfig(epochs=1),
                        progress=False, log=False)
    with pytest.raises(ValueError, match="batch_size"):
        train.TrainConfig(batch_size=0)


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
    assert train.latest_checkpoint(out / "checkpoint") == 2
    assert cli.main([*again, "--overwrite"]) == 0
    assert train.latest_checkpoint(out / "checkpoint") == 1
    capsys.readouterr()
    # Wrong feature count for the checkpoint, K < 2, an unknown likelihood: clear errors.
    np.save(tmp_path / "ten.npy", np.random.default_rng(0).random((50, 10)))
    assert cli.main(["evaluate", str(out), "--data", str(tmp_path / "ten.npy")]) == 2
    assert "64 features" in capsys.readouterr().err
    assert cli.main(["train", "--components", "1", "--out", str(tmp_path / "x")]) == 2
    assert "components" in capsys.readouterr().err
    assert cli.main(["train", "--likelihood", "poisson", "--out", str(tmp_path / "x")]) == 2
    assert "likelihood" in capsys.readouterr().err


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
    cons = train.consensus_labels(codes, 4, seed=0)
    alone = [cluster_accuracy(truth, train.fit_code_gmm(c, 4, seed=0).predict(c)) for c in codes]
    assert cluster_accuracy(truth, cons) == 1.0
    assert max(alone) < 0.95
    w, m, v = train.prior_from_labels(np.eye(4)[truth] * 3.0, cons, 4)
    np.testing.assert_allclose(w, 0.25, atol=1e-5)
    assert np.all(v > 0) and m.shape == (4, 4)


def test_neighbor_table_and_ensemble_loss():
    x = np.random.default_rng(1).normal(size=(30, 3))
    table = train.neighbor_table(x, 4).reshape(30, 5, 3)
    np.testing.assert_array_equal(table[:, 0], x)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    for i in range(30):
        nearest = set(np.argsort(dist[i])[:4].tolist())
        got = {int(np.argmin(((x - row) ** 2).sum(-1))) for row in table[i, 1:]}
        assert got == nearest

    def loss_fn(params, batch, key):
        return jnp.sum((params["w"] * batch) ** 2) + jax.random.normal(key), {}

    stacked = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]])}
    batch = jnp.ones((4, 2))
    grads = jax.grad(lambda p: train.ensemble_loss(loss_fn, 2)(p, batch, jax.random.key(0))[0])(
        stacked)
    for i in range(2):
        single = jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0))[0])(
            {"w": stacked["w"][i]})
        np.testing.assert_allclose(grads["w"][i], single["w"], rtol=1e-6)


def test_smooth_targets_and_consensus_term(digits):
    x = np.random.default_rng(2).normal(size=(40, 3))
    labels = np.random.default_rng(3).integers(0, 4, 40)
    np.testing.assert_array_equal(train.smooth_targets(x, labels, 4, 0), np.eye(4)[labels])
    t = train.smooth_targets(x, labels, 4, 5)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    for i in range(40):  # brute force: label fractions among i and its 5 nearest neighbours
        near = np.argsort(dist[i])[:6]
        np.testing.assert_allclose(t[i], np.bincount(labels[near], minlength=4) / 6, atol=1e-6)
    # The loss is −ELBO + weight · cross-entropy of q(z | w, x) against the targets.
    xb = jnp.asarray(digits.x_train[:16])
    model = HierarchicalVAE(SMALL, rngs=nnx.Rngs(0))
    graphdef, params = train.split_model(model)
    target = jnp.asarray(np.eye(3, dtype=np.float32)[np.arange(16) % 3])
    batch = jnp.concatenate([xb, target], axis=1)
    key = jax.random.key(4)
    loss, info = jax.jit(train.consensus_elbo_loss(graphdef, weight=2.5))(params, batch, key)
    k_elbo, k_w = jax.random.split(key)
    neg_elbo, _ = train.elbo_loss(graphdef)(params, xb, k_elbo)
    mean, scale = model.encoder(xb)
    w = mean + scale * jax.random.normal(k_w, mean.shape)
    prior = model.prior()
    qz = jnp.stack([jax.nn.softmax(model.head(w[i : i + 1], xb[i], prior)[0]) for i in range(16)])
    ce = -np.mean(np.log(np.asarray(qz))[np.arange(16), np.arange(16) % 3])
    np.testing.assert_allclose(info["consensus_ce"], ce, rtol=1e-4)
    np.testing.assert_allclose(loss, neg_elbo + 2.5 * ce, rtol=1e-4)
    with pytest.raises(ValueError, match="consensus_weight"):
        train.TrainConfig(consensus_weight=-1.0)


def test_resume_after_pretraining_keeps_the_consensus_term(tmp_path, digits):
    x = digits.x_train[:128]
    common = dict(batch_size=64, pretrain_epochs=1, restarts=2, seed=5, checkpoint_every=1000,
                  consensus_smoothing=3)
    full, hist = train.train_vae(x, SMALL, train.TrainConfig(epochs=2, **common),
                                 checkpoint_dir=tmp_path / "full", progress=False, log=False)
    assert "consensus_ce" in hist[0]
    assert len(train.load_meta(tmp_path / "full")["pretrain"]["cluster_labels"]) == 128
    train.train_vae(x, SMALL, train.TrainConfig(epochs=1, **common),
                    checkpoint_dir=tmp_path / "part", progress=False, log=False)
    resumed, hist = train.train_vae(x, SMALL, train.TrainConfig(epochs=2, **common),
                                    checkpoint_dir=tmp_path / "part", resume=True,
                                    progress=False, log=False)
    assert "consensus_ce" in hist[1]
    a = jax.tree.leaves(train.split_model(full)[1])
    for u, v in zip(a, jax.tree.leaves(train.split_model(resumed)[1]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
