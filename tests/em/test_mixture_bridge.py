"""`GMM.to_mixture` / `GMM.from_mixture` and the estimators' `to_mixture`: EM's mixtures and the
package's `jaxvi.mixture.Mixture` (what `jaxvi.kl` and `jaxvi.vi` take) are one density, for
every covariance type, checked against EM's own density and scikit-learn's scores in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_iris

from jaxvi import BayesianGaussianMixture, GaussianMixture, em, kl
from jaxvi.mixture import Mixture


@pytest.mark.parametrize("cov_type", em.COVARIANCE_TYPES)
def test_to_mixture_is_the_same_density_and_round_trips(x64, cov_type):
    x = load_iris().data
    gmm = em.fit(x, 3, key=jax.random.key(0), covariance_type=cov_type, max_iter=20).gmm
    mix = gmm.to_mixture()
    assert mix.scale_tril.shape == (3, 4, 4)
    np.testing.assert_allclose(mix.log_prob(jnp.asarray(x)), em.log_prob(x, gmm), rtol=1e-10)
    back = em.GMM.from_mixture(mix)
    assert back.covariance_type == "full"
    np.testing.assert_allclose(back.weights, gmm.weights, rtol=1e-12)
    np.testing.assert_allclose(back.means, gmm.means, rtol=1e-12)
    dense = em.covariance.of(cov_type).dense(np.asarray(gmm.covariances), 3, 4)
    np.testing.assert_allclose(back.covariances, dense, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(em.log_prob(x, back), em.log_prob(x, gmm), rtol=1e-10)


def test_from_mixture_keeps_the_density_of_any_mixture(x64):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 3))
    mix = Mixture(jnp.asarray(rng.normal(size=4)), jnp.asarray(rng.normal(size=(4, 3))),
                  jnp.asarray(np.linalg.cholesky(a @ a.transpose(0, 2, 1) + np.eye(3))))
    x = jnp.asarray(rng.normal(size=(50, 3)))
    gmm = em.GMM.from_mixture(mix)
    np.testing.assert_allclose(em.log_prob(x, gmm), mix.log_prob(x), rtol=1e-10)
    np.testing.assert_allclose(jax.nn.softmax(gmm.to_mixture().logits), jax.nn.softmax(mix.logits),
                               rtol=1e-12)


def _plug_in_log_prob(est, x):
    """log Σ_k w_k N(x; μ_k, Σ_k) of an estimator's weights_, means_ and covariances_ (SciPy)."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    covs = em.covariance.of(est.covariance_type).dense(est.covariances_, len(est.weights_),
                                                        x.shape[1])
    return logsumexp([np.log(w) + multivariate_normal(m, c).logpdf(x)
                      for w, m, c in zip(est.weights_, est.means_, covs, strict=True)], axis=0)


def test_kl_between_two_fitted_estimators(x64):
    """`kl.mixture_bounds(a.to_mixture(), b.to_mixture())` on two fitted models brackets a
    Monte Carlo estimate of KL(a ‖ b) from a's samples. A BayesianGaussianMixture's mixture is
    its point estimate (weights_, means_, covariances_; its score_samples, like scikit-learn's,
    scores the posterior's expected log-densities instead)."""
    x = load_iris().data
    a = GaussianMixture(3, random_state=0).fit(x)
    b = BayesianGaussianMixture(n_components=3, covariance_type="diag", random_state=1).fit(x)
    np.testing.assert_allclose(a.to_mixture().log_prob(jnp.asarray(x)), a.score_samples(x),
                               rtol=1e-9)
    for est in (a, b):
        np.testing.assert_allclose(est.to_mixture().log_prob(jnp.asarray(x)),
                                   _plug_in_log_prob(est, x), rtol=1e-9)
    pa, pb = a.to_mixture(), b.to_mixture()
    bounds = kl.mixture_bounds(pa, pb)
    samples = jnp.asarray(a.sample(200_000)[0])
    ratio = np.asarray(pa.log_prob(samples) - pb.log_prob(samples))
    mc, se = ratio.mean(), ratio.std() / np.sqrt(len(ratio))
    assert float(bounds.lower) - 4 * se <= mc <= float(bounds.upper) + 4 * se, (bounds, mc)
