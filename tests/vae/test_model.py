"""The NNX hierarchical VAE: its bounds equal the pure `jaxvi.vae.bounds` functions on the
networks' outputs, gradients reach every parameter group, the step runs under jit and vmap,
sampling and clustering behave, and bad configurations raise."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxvi.training.step import init_state, make_step
from jaxvi.vae import bounds as E
from jaxvi.vae.losses import elbo_loss
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model

CFG = VAEConfig(data_dim=6, components=3, latent_dim=2, hidden=(16,), head_hidden=(8,))


def _model(cfg=CFG, seed=0):
    return HierarchicalVAE(cfg, rngs=nnx.Rngs(seed))


def _x(n=5, d=6, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, d))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_model_elbo_matches_pure_functions(likelihood):
    cfg = VAEConfig(**{**CFG.to_dict(), "likelihood": likelihood})
    model, x, key = _model(cfg), _x(), jax.random.key(3)
    terms = model.elbo_terms(x, key=key, num_samples=4)
    # Recompute by hand from the networks' outputs with the same noise.
    mean, scale = model.encoder(x)
    prior = model.prior()
    keys = jax.random.split(key, x.shape[0])
    for b in range(x.shape[0]):
        w = E.sample_w(mean[b], scale[b], 4, key=keys[b])
        dec = model.decoder(w)
        if likelihood == "gaussian":
            lp = E.gaussian_log_likelihood(x[b], *dec)
        else:
            lp = E.bernoulli_log_likelihood(x[b], *dec)
        ql = model.head(w, x[b], prior)
        ref = E.elbo_terms(lp, w, mean[b], scale[b], ql, *prior)
        for got, want in zip(terms, ref, strict=True):
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)
    assert terms.elbo.shape == (5,)
    iwae = model.iwae(x, key=key, num_samples=4)
    assert iwae.shape == (5,) and np.all(np.isfinite(iwae))


def test_head_starts_at_prior_posterior():
    """q(z | w, x) = p(z | w) at initialisation (the residual's last layer is zero)."""
    model = _model()
    w = jax.random.normal(jax.random.key(0), (4, CFG.latent_dim))
    prior = model.prior()
    got = jax.nn.softmax(model.head(w, _x(1)[0], prior))
    want = jax.nn.softmax(E.prior_posterior_logits(w, *prior))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_gradients_reach_every_parameter_group_and_are_finite():
    model = _model()
    graphdef, params = split_model(model)
    # Move the head's zero-initialised last layer so every path carries gradient.
    params["head"]["net"]["out"]["kernel"] = 0.1 * jnp.ones_like(
        params["head"]["net"]["out"]["kernel"]
    )
    loss_fn = elbo_loss(graphdef, num_samples=2)
    grads, _ = jax.jit(jax.grad(loss_fn, has_aux=True))(params, _x(), jax.random.key(0))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    groups = {jax.tree_util.keystr(p[:1]) for p, _ in flat}
    assert groups == {"['encoder']", "['head']", "['prior']", "['decoder']"}
    for path, g in flat:
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_step_under_jit_and_vmap_and_compiles_once():
    model = _model()
    graphdef, params = split_model(model)
    x = _x(8)
    traces = []
    adam = optax.adam(1e-3)
    adam_step = make_step(elbo_loss(graphdef), adam)

    def counted(s, b, k):
        traces.append(1)
        return adam_step(s, b, k)

    jstep = jax.jit(counted)
    s1, info = jstep(init_state(params, adam), x, jax.random.key(0))
    s1, info = jstep(s1, x, jax.random.key(1))
    assert len(traces) == 1 and int(s1.step) == 2 and np.isfinite(info["loss"])
    # vmap: 3 independent replicas (states), each with its own batch and key, equal to three
    # single steps. (SGD, so the comparison is not at the mercy of Adam's sign-like first step
    # on near-zero gradients.)
    opt = optax.sgd(1e-2)
    step = jax.jit(make_step(elbo_loss(graphdef), opt))
    state = init_state(params, opt)
    states = jax.tree.map(lambda a: jnp.stack([a] * 3), state)
    xs = jnp.stack([x, x * 0.5, x * 0.25])
    keys = jax.random.split(jax.random.key(2), 3)
    vs, vinfo = jax.jit(jax.vmap(step))(states, xs, keys)
    assert vinfo["loss"].shape == (3,)
    for i in (0, 2):
        single, _ = step(state, xs[i], keys[i])
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(vs), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-6)


def test_cluster_and_sample():
    model = _model()
    x = _x(7)
    probs = model.cluster_probs(x, key=jax.random.key(0), num_samples=3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    pred = model.cluster(x, key=jax.random.key(0), num_samples=3)
    assert pred.shape == (7,) and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, np.argmax(probs, -1))
    xs, z = model.sample(jax.random.key(1), 4, component=2)
    assert xs.shape == (4, CFG.data_dim) and np.all(np.asarray(z) == 2)
    xs, z = model.sample(jax.random.key(1), 200)
    assert set(np.unique(z)) <= {0, 1, 2} and len(np.unique(z)) == 3
    # Samples from a component come from w near its prior mean: same key, same output.
    a, _ = model.sample(jax.random.key(5), 3, component=1)
    b, _ = model.sample(jax.random.key(5), 3, component=1)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="component"):
        model.sample(jax.random.key(1), 2, component=3)
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"components": 0}, "components"),
        ({"likelihood": "poisson"}, "likelihood"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"min_scale": 0.0}, "min_scale"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAEConfig(data_dim=6, **kwargs)


def test_config_roundtrip():
    cfg = VAEConfig(data_dim=64, components=7, hidden=(32, 16), likelihood="bernoulli")
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
