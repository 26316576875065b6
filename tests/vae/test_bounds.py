"""The hierarchical ELBO and IWAE bound against independent float64 references (scipy), with a
linear-Gaussian decoder whose log p(x) is a closed-form Gaussian mixture.
Every function validates
its arguments (shapes, concrete values), eagerly and under vmap/jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import log_softmax, logsumexp, softmax

from jaxvi.vae import bounds as E


def _random_problem(seed, s=7, l=3, k=4, d=6):
    r = np.random.default_rng(seed)
    return dict(
        x=r.normal(size=d),
        w_mean=r.normal(size=l),
        w_scale=r.uniform(0.3, 1.5, size=l),
        qz_logits=r.normal(size=(s, k)) * 2,
        prior_logits=r.normal(size=k),
        prior_mean=r.normal(size=(k, l)) * 2,
        prior_scale=r.uniform(0.4, 1.5, size=(k, l)),
        eps=r.normal(size=(s, l)),
        a=r.normal(size=(d, l)),
        b=r.normal(size=d),
        x_scale=r.uniform(0.5, 1.0, size=d),
    )


def _direct_estimator(p, w, log_px_w):
    """E_q[log p(x, w, z) − log q(w, z | x)] with z summed exactly, scipy only."""
    log_pi = log_softmax(p["prior_logits"])
    log_qz = log_softmax(p["qz_logits"], axis=-1)
    total = 0.0
    for s_i in range(w.shape[0]):
        log_qw = stats.multivariate_normal(p["w_mean"], np.diag(p["w_scale"] ** 2)).logpdf(w[s_i])
        for z in range(log_pi.size):
            log_pw_z = stats.multivariate_normal(
                p["prior_mean"][z], np.diag(p["prior_scale"][z] ** 2)
            ).logpdf(w[s_i])
            log_joint = log_px_w[s_i] + log_pi[z] + log_pw_z
            total += np.exp(log_qz[s_i, z]) * (log_joint - log_qw - log_qz[s_i, z])
    return total / w.shape[0]


def _linear_decoder_loglik(p, w):
    """log N(x; A w + b, diag σ_x²) with scipy. w: (S, L) -> (S,)."""
    mean = w @ p["a"].T + p["b"]
    return stats.norm(mean, p["x_scale"]).logpdf(p["x"]).sum(-1)


def _exact_log_px(p, x=None):
    """log p(x) = log Σ_z π_z N(x; A μ_z + b, A diag σ_z² Aᵀ + diag σ_x²)."""
    x = p["x"] if x is None else x
    log_pi = log_softmax(p["prior_logits"])
    comps = []
    for z in range(log_pi.size):
        mean = p["a"] @ p["prior_mean"][z] + p["b"]
        cov = p["a"] @ np.diag(p["prior_scale"][z] ** 2) @ p["a"].T + np.diag(p["x_scale"] ** 2)
        comps.append(log_pi[z] + stats.multivariate_normal(mean, cov).logpdf(x))
    return logsumexp(comps)


def _args(p, w, log_px_w):
    return (log_px_w, w, p["w_mean"], p["w_scale"], p["qz_logits"], p["prior_logits"],
            p["prior_mean"], p["prior_scale"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_terms_equal_direct_estimator_float64(x64, seed):
    p = _random_problem(seed)
    w = p["w_mean"] + p["w_scale"] * p["eps"]
    log_px_w = _linear_decoder_loglik(p, w)
    args = [jnp.asarray(a, jnp.float64) for a in _args(p, w, log_px_w)]
    terms = E.elbo_terms(*args)
    direct = _direct_estimator(p, w, log_px_w)
    assert terms.elbo.dtype == jnp.float64
    np.testing.assert_allclose(float(terms.elbo), direct, rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(jax.jit(E.elbo)(*args)), direct, rtol=0, atol=1e-10)
    # Terms individually: reconstruction is the mean log-likelihood; KL(q(z)‖π) ≥ 0.
    np.testing.assert_allclose(float(terms.reconstruction), log_px_w.mean(), atol=1e-10)
    log_qz = log_softmax(p["qz_logits"], -1)
    kl_z = np.mean(np.sum(np.exp(log_qz) * (log_qz - log_softmax(p["prior_logits"])), -1))
    np.testing.assert_allclose(float(terms.kl_z), kl_z, atol=1e-10)
    assert float(terms.kl_z) >= 0


def test_gaussian_and_bernoulli_log_likelihood_match_scipy(x64):
    r = np.random.default_rng(3)
    x, mean, scale = r.normal(size=5), r.normal(size=(4, 5)), r.uniform(0.1, 2, size=(4, 5))
    got = E.gaussian_log_likelihood(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(scale))
    np.testing.assert_allclose(got, stats.norm(mean, scale).logpdf(x).sum(-1), rtol=1e-12)
    xb = (r.uniform(size=5) < 0.5).astype(float)
    logits = r.normal(size=(4, 5)) * 3
    got = E.bernoulli_log_likelihood(jnp.asarray(xb), jnp.asarray(logits))
    ref = stats.bernoulli(1 / (1 + np.exp(-logits))).logpmf(xb).sum(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_log_marginal_prior_matches_mixture_density(x64):
    p = _random_problem(4)
    w = np.random.default_rng(5).normal(size=(6, 3))
    got = E.log_marginal_prior(jnp.asarray(w), jnp.asarray(p["prior_logits"]),
                               jnp.asarray(p["prior_mean"]), jnp.asarray(p["prior_scale"]))
    pi = softmax(p["prior_logits"])
    ref = np.log(sum(
        pi[z]
        * stats.multivariate_normal(p["prior_mean"][z], np.diag(p["prior_scale"][z] ** 2)).pdf(w)
        for z in range(pi.size)))
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def _bounds_for(p, n, key, x=None):
    """Monte Carlo ELBO (q(z | w, x) = softmax of fixed logits) and IWAE with n samples."""
    x = p["x"] if x is None else x
    pj = {k: jnp.asarray(v, jnp.float64) for k, v in p.items()}
    w = E.sample_w(pj["w_mean"], pj["w_scale"], n, key=key)
    mean = w @ pj["a"].T + pj["b"]
    x_scale = jnp.broadcast_to(pj["x_scale"], mean.shape)
    log_px_w = E.gaussian_log_likelihood(jnp.asarray(x), mean, x_scale)
    qz = jnp.broadcast_to(pj["qz_logits"][0], (n, pj["qz_logits"].shape[1]))
    elbo = E.elbo(log_px_w, w, pj["w_mean"], pj["w_scale"], qz, pj["prior_logits"],
                  pj["prior_mean"], pj["prior_scale"])
    iwae = E.iwae_bound(log_px_w, w, pj["w_mean"], pj["w_scale"], pj["prior_logits"],
                        pj["prior_mean"], pj["prior_scale"])
    return float(elbo), float(iwae)


def test_elbo_below_exact_log_px_for_every_x(x64):
    p = _random_problem(6)
    xs = np.random.default_rng(7).normal(size=(5, 6)) * 2
    for i, x in enumerate(xs):
        elbo, _ = _bounds_for(p, 20_000, jax.random.key(i), x=x)
        assert elbo < _exact_log_px(p, x)


def test_iwae_rises_toward_exact_log_px(x64):
    p = _random_problem(8)
    # A q(w | x) near the posterior's bulk so the large-k bound gets close.
    p["w_mean"] = np.linalg.lstsq(p["a"], p["x"] - p["b"], rcond=None)[0]
    log_px = _exact_log_px(p)
    ks = [1, 10, 100, 2000]
    reps = 200
    means, errs = [], []
    for k in ks:
        vals = jax.jit(jax.vmap(lambda key, k=k: _iwae_only(p, k, key)))(
            jax.random.split(jax.random.key(k), reps)
        )
        means.append(float(jnp.mean(vals)))
        errs.append(float(jnp.std(vals)) / np.sqrt(reps))
    assert all(a < b for a, b in zip(means[:-1], means[1:], strict=False)), means
    assert means[-1] <= log_px + 4 * errs[-1]  # E[IWAE_k] ≤ log p(x); MC error only
    assert log_px - means[-1] < 0.1 * (log_px - means[0])
    elbo1, _ = _bounds_for(p, 20_000, jax.random.key(99))
    assert elbo1 <= means[0] + 1e-2  # ELBO ≤ E[IWAE_1] (z marginalised exactly)


def _iwae_only(p, n, key):
    pj = {k: jnp.asarray(v, jnp.float64) for k, v in p.items()}
    w = E.sample_w(pj["w_mean"], pj["w_scale"], n, key=key)
    mean = w @ pj["a"].T + pj["b"]
    log_px_w = E.gaussian_log_likelihood(pj["x"], mean, jnp.broadcast_to(pj["x_scale"], mean.shape))
    return E.iwae_bound(log_px_w, w, pj["w_mean"], pj["w_scale"], pj["prior_logits"],
                        pj["prior_mean"], pj["prior_scale"])


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), s=st.integers(1, 5), k=st.integers(2, 5))
def test_iwae_never_below_elbo_on_the_same_samples(seed, s, k):
    """log mean_s exp(log ŵ_s) ≥ mean_s log ŵ_s ≥ the ELBO integrand, for any q(z | w, x)."""
    with jax.enable_x64(True):
        p = _random_problem(seed, s=s, k=k)
        w = p["w_mean"] + p["w_scale"] * p["eps"]
        log_px_w = _linear_decoder_loglik(p, w)
        args = [jnp.asarray(a) for a in _args(p, w, log_px_w)]
        elbo = float(E.elbo(*args))
        iwae = float(E.iwae_bound(*args[:4], *args[5:]))
        assert iwae >= elbo - 1e-10
        # With q(z | w, x) = p(z | w) the z-part of the gap closes exactly on each sample.
        qz_exact = E.prior_posterior_logits(args[1], *args[5:])
        elbo_exact = float(E.elbo(args[0], args[1], args[2], args[3], qz_exact, *args[5:]))
        assert elbo_exact >= elbo - 1e-10
        if s == 1:
            np.testing.assert_allclose(elbo_exact, iwae, atol=1e-10)


def test_elbo_gradients_finite_float32():
    p = _random_problem(9)
    w = p["w_mean"] + p["w_scale"] * p["eps"]
    log_px_w = _linear_decoder_loglik(p, w)
    args = [jnp.asarray(a, jnp.float32) for a in _args(p, w, log_px_w)]
    grads = jax.jit(jax.grad(E.elbo, argnums=tuple(range(8))))(*args)
    for g in grads:
        assert np.all(np.isfinite(g)) and np.any(g != 0)


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
