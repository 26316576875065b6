"""`jaxvi.vae.evaluate.make_evaluator` pinned by VALUE on one chunk and on several (the last one
short): every reported mean equals the model's own bounds recomputed chunk by chunk with the
same keys, over all the points; `elbo_loss` is minus the batch-mean ELBO."""

import jax
import numpy as np
import pytest
from flax import nnx
from sklearn.metrics import normalized_mutual_info_score

from jaxvi.vae import evaluate as evaluate_lib
from jaxvi.vae import losses
from jaxvi.vae import model as model_lib
from jaxvi.vae.model import HierarchicalVAE, VAEConfig

CFG = VAEConfig(data_dim=5, components=3, latent_dim=2, hidden=(8,), head_hidden=(4,))


MODEL = HierarchicalVAE(CFG, rngs=nnx.Rngs(0))
GRAPHDEF, PARAMS = model_lib.split_model(MODEL)


@jax.jit
def _bounds(params, xb, k1, k2, k3):
    model = model_lib.merge_model(GRAPHDEF, params)
    return (model.elbo_terms(xb, key=k1, num_samples=1), model.iwae(xb, key=k2, num_samples=4),
            model.cluster(xb, key=k3, num_samples=2))


def _reference(x, key, chunk):
    """The model's own bounds, chunk by chunk: chunk i uses the three keys split from
    fold_in(key, i)."""
    terms, iwaes, preds = [], [], []
    for i, start in enumerate(range(0, len(x), chunk)):
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
        t, iw, pr = _bounds(PARAMS, x[start:start + chunk], k1, k2, k3)
        terms.append(t)
        iwaes.append(iw)
        preds.append(pr)
    cat = lambda xs: np.concatenate([np.asarray(a) for a in xs])
    rec = cat([t.reconstruction for t in terms])
    kl_z, kl_w = cat([t.kl_z for t in terms]), cat([t.kl_w for t in terms])
    return dict(elbo=np.mean(rec - kl_z - kl_w), iwae=np.mean(cat(iwaes)),
                reconstruction=np.mean(rec), kl_z=np.mean(kl_z), kl_w=np.mean(kl_w)), cat(preds)


@pytest.mark.parametrize("n", [5, 21])  # one chunk of 5; chunks of 8, 8 and 5
def test_evaluator_equals_chunkwise_reference(n):
    x = np.asarray(jax.random.uniform(jax.random.key(1), (n, CFG.data_dim)))
    y = np.arange(n) % 3
    evaluate = evaluate_lib.make_evaluator(GRAPHDEF, iwae_samples=4, cluster_samples=2, chunk=8)
    key = jax.random.key(7)
    res, pred = evaluate(PARAMS, x, y, key=key)
    want, want_pred = _reference(x, key, 8)
    assert pred.shape == (n,)
    np.testing.assert_array_equal(pred, want_pred)
    for name, value in want.items():
        np.testing.assert_allclose(res[name], value, rtol=2e-5, atol=1e-5, err_msg=name)
    assert res["clusters_used"] == len(np.unique(want_pred))
    np.testing.assert_allclose(res["nmi"], normalized_mutual_info_score(y, want_pred),
                               atol=1e-12)


def test_elbo_loss_is_minus_the_batch_mean_elbo():
    x = jax.random.uniform(jax.random.key(2), (6, CFG.data_dim))
    key = jax.random.key(3)
    loss, info = losses.elbo_loss(GRAPHDEF, num_samples=2)(PARAMS, x, key)
    elbo = np.asarray(MODEL.elbo(x, key=key, num_samples=2))
    np.testing.assert_allclose(loss, -elbo.mean(), rtol=1e-5)
    np.testing.assert_allclose(info["elbo"], elbo.mean(), rtol=1e-5)
