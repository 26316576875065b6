"""`jaxvi.vae.losses`: the neighbour indices (on all features and on principal components),
the neighbour autoencoder's gathered targets, the ensemble loss's per-copy gradients, the
smoothed consensus targets and the consensus term of the ELBO loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvi.vae.losses import (
    autoencoder_loss,
    consensus_elbo_loss,
    elbo_loss,
    ensemble_loss,
    neighbor_indices,
    principal_components,
    smooth_targets,
)
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model
from jaxvi.vae.recipe import TrainConfig

SMALL = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))


def test_neighbor_indices_and_ensemble_loss():
    x = np.random.default_rng(1).normal(size=(30, 3))
    table = neighbor_indices(x, 4)
    assert table.shape == (30, 5) and table.dtype == np.int32
    np.testing.assert_array_equal(table[:, 0], np.arange(30))
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    for i in range(30):
        assert set(table[i, 1:].tolist()) == set(np.argsort(dist[i])[:4].tolist())
    # On principal components: 3 informative directions hidden in 40 features of which 37
    # carry tiny noise; neighbours on 3 components are the neighbours in the 3 directions.
    r = np.random.default_rng(5)
    basis = np.linalg.qr(r.normal(size=(40, 40)))[0]
    wide = np.concatenate([x * 10.0, 1e-3 * r.normal(size=(30, 37))], 1) @ basis.T
    pcs = principal_components(wide, 3)
    def gram(a):  # pairwise squared distances: what a projection onto the subspace keeps
        return ((a[:, None] - a[None]) ** 2).sum(-1)

    np.testing.assert_allclose(gram(pcs), gram(10.0 * x), rtol=1e-3, atol=1e-2)
    np.testing.assert_array_equal(neighbor_indices(wide, 4, max_dims=3), table)

    def loss_fn(params, batch, key):
        return jnp.sum((params["w"] * batch) ** 2) + jax.random.normal(key), {}

    stacked = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]])}
    batch = jnp.ones((4, 2))
    grads = jax.grad(lambda p: ensemble_loss(loss_fn, 2)(p, batch, jax.random.key(0))[0])(
        stacked)
    for i in range(2):
        single = jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0))[0])(
            {"w": stacked["w"][i]})
        np.testing.assert_allclose(grads["w"][i], single["w"], rtol=1e-6)


def test_neighbor_autoencoder_gathers_its_targets():
    """With neighbour index rows, the input is x at the row's first index and the target x at
    the randomly picked one: the loss equals the squared error computed by hand."""
    model = HierarchicalVAE(SMALL, rngs=nnx.Rngs(1))
    graphdef, params = split_model(model)
    x = jnp.asarray(np.random.default_rng(6).random((12, 64)), jnp.float32)
    rows = jnp.asarray(neighbor_indices(np.asarray(x), 3))
    key = jax.random.key(7)
    loss, _ = jax.jit(autoencoder_loss(graphdef, 3))(params, (rows[:5], x), key)
    pick = jax.random.randint(key, (5,), 0, 4)
    target = x[rows[jnp.arange(5), pick]]
    out = model.decoder(model.encoder(x[rows[:5, 0]])[0])[0]
    np.testing.assert_allclose(loss, np.mean(np.sum((out - target) ** 2, -1)), rtol=1e-5)
    assert not np.allclose(target, x[rows[:5, 0]])  # some targets are neighbours


def test_smooth_targets_and_consensus_term(digits):
    x = np.random.default_rng(2).normal(size=(40, 3))
    labels = np.random.default_rng(3).integers(0, 4, 40)
    np.testing.assert_array_equal(smooth_targets(labels, 4, None), np.eye(4)[labels])
    t = smooth_targets(labels, 4, neighbor_indices(x, 5))
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    for i in range(40):  # brute force: label fractions among i and its 5 nearest neighbours
        near = np.argsort(dist[i])[:6]
        np.testing.assert_allclose(t[i], np.bincount(labels[near], minlength=4) / 6, atol=1e-6)
    # The loss is −ELBO + weight · cross-entropy of q(z | w, x) against the targets.
    xb = jnp.asarray(digits.x_train[:16])
    model = HierarchicalVAE(SMALL, rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    target = jnp.asarray(np.eye(3, dtype=np.float32)[np.arange(16) % 3])
    batch = jnp.concatenate([xb, target], axis=1)
    key = jax.random.key(4)
    loss, info = jax.jit(consensus_elbo_loss(graphdef, weight=2.5))(params, batch, key)
    k_elbo, k_w = jax.random.split(key)
    neg_elbo, _ = elbo_loss(graphdef)(params, xb, k_elbo)
    mean, scale = model.encoder(xb)
    w = mean + scale * jax.random.normal(k_w, mean.shape)
    prior = model.prior()
    qz = jnp.stack([jax.nn.softmax(model.head(w[i : i + 1], xb[i], prior)[0]) for i in range(16)])
    ce = -np.mean(np.log(np.asarray(qz))[np.arange(16), np.arange(16) % 3])
    np.testing.assert_allclose(info["consensus_ce"], ce, rtol=1e-4)
    np.testing.assert_allclose(loss, neg_elbo + 2.5 * ce, rtol=1e-4)
    with pytest.raises(ValueError, match="consensus_weight"):
        TrainConfig(consensus_weight=-1.0)
