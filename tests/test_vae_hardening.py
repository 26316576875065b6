"""Issue 12, item 5: the ELBO, IWAE and wake-sleep functions validate every argument (shapes,
concrete values), eagerly and under vmap/jit.
"""


import jax
import numpy as np
import pytest

from jaxvi import elbo as E
from jaxvi import wake_sleep as W


def _elbo_args(s=4, l=2, k=3, seed=0):
    r = np.random.default_rng(seed)
    return dict(log_px_w=r.normal(size=s), w=r.normal(size=(s, l)), w_mean=r.normal(size=l),
                w_scale=r.uniform(0.5, 1.5, size=l), qz_logits=r.normal(size=(s, k)),
                prior_logits=r.normal(size=k), prior_mean=r.normal(size=(k, l)),
                prior_scale=r.uniform(0.5, 1.5, size=(k, l)))


_ELBO_BAD = [
    ("prior_logits", np.zeros(1), "prior_mean"),  # K = 1 prior against q of K = 3
    ("prior_mean", np.zeros((1, 2)), "prior_mean"),
    ("prior_scale", np.ones((1, 2)), "prior_scale"),
    ("qz_logits", np.zeros((4, 1)), "qz_logits"),
    ("log_px_w", np.zeros(5), "log_px_w"),
    ("log_px_w", np.zeros((4, 1)), "log_px_w"),
    ("w", np.zeros((4, 3)), "w"),
    ("w_mean", np.zeros(3), "w_mean"),
    ("w_scale", np.zeros(2), "w_scale"),
    ("w_scale", -np.ones(2), "w_scale"),
    ("w_scale", np.full(2, 1e-40, np.float32), "w_scale"),
    ("prior_scale", np.zeros((3, 2)), "prior_scale"),
    ("prior_scale", np.full((3, 2), np.nan), "prior_scale"),
    ("prior_mean", np.full((3, 2), np.inf), "prior_mean"),
    ("log_px_w", np.full(4, np.nan), "log_px_w"),
]


@pytest.mark.parametrize("field,bad,named", _ELBO_BAD)
def test_elbo_terms_validates_every_argument(field, bad, named):
    args = _elbo_args()
    float(E.elbo(**args))  # the good arguments pass
    args[field] = bad
    with pytest.raises(ValueError, match=f"`{named}`"):
        E.elbo_terms(**args)


def test_elbo_shape_checks_also_run_under_vmap_and_jit():
    args = _elbo_args()
    batched = {k: np.broadcast_to(v, (2, *np.shape(v))) for k, v in args.items()}
    good = jax.jit(jax.vmap(E.elbo))(*batched.values())
    np.testing.assert_allclose(good, float(E.elbo(**args)), rtol=1e-5)
    batched["prior_logits"] = np.zeros((2, 1))
    with pytest.raises(ValueError, match="`prior_mean`"):
        jax.jit(jax.vmap(E.elbo))(*batched.values())


def test_iwae_and_prior_functions_validate():
    a = _elbo_args()
    prior = (a["prior_logits"], a["prior_mean"], a["prior_scale"])
    with pytest.raises(ValueError, match="`log_px_w`"):
        E.iwae_bound(np.zeros(5), a["w"], a["w_mean"], a["w_scale"], *prior)
    with pytest.raises(ValueError, match="`prior_mean`"):
        E.iwae_bound(a["log_px_w"], a["w"], a["w_mean"], a["w_scale"], np.zeros(1), *prior[1:])
    with pytest.raises(ValueError, match="`w_scale`"):
        E.iwae_bound(a["log_px_w"], a["w"], a["w_mean"], -a["w_scale"], *prior)
    with pytest.raises(ValueError, match="`w`"):
        E.log_marginal_prior(np.zeros((4, 3)), *prior)
    with pytest.raises(ValueError, match="`w`"):
        E.prior_posterior_logits(np.zeros(2), *prior)
    with pytest.raises(ValueError, match="`prior_scale`"):
        E.prior_component_log_prob(a["w"], a["prior_mean"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`n`"):
        E.sample_w(a["w_mean"], a["w_scale"], 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`w_scale`"):
        E.sample_w(a["w_mean"], np.zeros(2), 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`scale`"):
        E.gaussian_log_likelihood(np.zeros(3), np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="`x` and `mean`"):
        E.gaussian_log_likelihood(np.zeros(3), np.zeros((2, 4)), np.ones(4))
    with pytest.raises(ValueError, match="`x` must lie in"):
        E.bernoulli_log_likelihood(np.array([0.0, 2.0]), np.zeros(2))


def _tiny_vae():
    from flax import nnx

    from jaxvi.nn import HierarchicalVAE, VAEConfig

    cfg = VAEConfig(data_dim=5, components=2, latent_dim=2, hidden=(8,), head_hidden=(8,))
    return HierarchicalVAE(cfg, rngs=nnx.Rngs(0))


def test_rws_terms_validates_x_and_n_samples():
    model = _tiny_vae()
    x = np.random.default_rng(0).uniform(size=(3, 5)).astype(np.float32)
    terms = W.rws_terms(model, x, key=jax.random.key(0), n_samples=4)
    np.testing.assert_allclose(terms.iwae, model.iwae(x, key=jax.random.key(0), n_samples=4),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="`x` must have 2 dimensions"):
        W.rws_terms(model, x[0], key=jax.random.key(0), n_samples=4)
    with pytest.raises(ValueError, match="`x` and `model.config.data_dim`"):
        W.rws_terms(model, x[:, :4], key=jax.random.key(0), n_samples=4)
    with pytest.raises(ValueError, match="`n_samples`"):
        W.rws_terms(model, x, key=jax.random.key(0), n_samples=0)
    with pytest.raises(ValueError, match="`x` must be finite"):
        W.rws_terms(model, np.full((3, 5), np.nan), key=jax.random.key(0), n_samples=4)
