"""VB-EM's E and M steps and lower bound, all as scikit-learn's `BayesianGaussianMixture`
computes them (Bishop PRML §10.2; Blei & Jordan 2006 for the truncated stick-breaking
Dirichlet process), on EM's additive `Stats`.

An iteration reuses EM's pieces unchanged:

    gmm = expected_gmm(post)                                # E[ln π_k], E[ln|Λ_k|], D/β_k folded in
    stats, sum_ll, centres = <EM's fused E step>(gmm)       # Σr, Σr x, Σr x xᵀ (chunked, psum)
    entropy = resp_entropy(gmm, stats, centres, sum_ll)     # −Σ r ln r, from the same Stats
    post = variational_m_step(stats, centres, prior, ...)   # conjugate update
    elbo = lower_bound(post, entropy, ...)

The expected log-density under q is ln N(x; m_k, (ν_k W_k)⁻¹) plus a per-component constant,
E[ln π_k] + ½(E[ln|Λ_k|] − D ln ν_k − D/β_k), so the E step is EM's E step on the `GMM`
`expected_gmm` builds: means m_k, covariances (ν_k W_k)⁻¹ (scikit-learn's `covariances_`)
and weights the softmax of those constants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma, gammaln

from jaxvi import _linalg
from jaxvi.em import covariance
from jaxvi.em.model import GMM, Stats, component_precisions
from jaxvi.em.step import component_scatter
from jaxvi.em.variational.model import (
    VariationalPosterior,
    VariationalPrior,
    expected_log_weights,
    settings,
)


def log_lambda(nu: jax.Array, d: int) -> jax.Array:
    """E[ln|Λ|] − ln|W| = D ln 2 + Σ_{i<D} ψ((ν − i)/2) of a Wishart(W, ν).

    Args:
      nu: (...) degrees of freedom ν, any shape.
      d: D, the dimension.

    Returns:
      (...) E[ln|Λ|] − ln|W|, ν's shape.
    """
    i = jnp.arange(d, dtype=nu.dtype)
    return d * jnp.log(2.0).astype(nu.dtype) + jnp.sum(digamma(0.5 * (nu[..., None] - i)), -1)


def expected_gmm(post: VariationalPosterior, *, covariance_type: str | None = None,
                 weight_type: str | None = None) -> GMM:
    """The `GMM` whose joint log-density log w_k + log N(x; m_k, (ν_k W_k)⁻¹) is, up to a
    constant in k, E_q[ln π_k + ln N(x; μ_k, Λ_k⁻¹)]: EM's E step on it gives VB-EM's
    responsibilities.

    Args:
      post: one posterior (no batch axis).
      covariance_type: the covariance type (default: the one `post` carries).
      weight_type: the weight prior type (default: the one `post` carries).

    Returns:
      A `GMM` with K components: means m_k (K, D), covariances (ν_k W_k)⁻¹.

    Raises:
      ValueError: a type neither given nor carried.
    """
    covariance_type, weight_type = settings(post, covariance_type, weight_type)
    k, d = post.means.shape
    nu = jnp.broadcast_to(post.degrees_of_freedom, (k,))
    log_w = (expected_log_weights(post.weight_concentration, weight_type)
             + 0.5 * (log_lambda(nu, d) - d * jnp.log(nu) - d / post.mean_precision))
    return GMM(jax.nn.softmax(log_w), post.means, post.covariances, covariance_type,
               post.scale_tril)


def resp_entropy(gmm: GMM, stats: Stats, centres: jax.Array, sum_ll: jax.Array) -> jax.Array:
    """−Σ_nk r_nk ln r_nk of the E step on `gmm`, from the Stats it gave alone.

    ln r_nk = joint_nk − lse_n, and Σ_n r_nk joint_nk is linear in the Stats, so the entropy
    psums with them. joint_nk = ln w_k − ½(D ln 2π + ln|Σ_k| + (x_n − μ_k)ᵀΛ_k(x_n − μ_k)).

    Args:
      gmm: the mixture of the E step (K components, D features).
      stats: the E step's `Stats`, second moments about centres.
      centres: (K, D) or (D,) the centres of the second moments.
      sum_ll: () Σ_n ln Σ_k exp(joint_nk).

    Returns:
      () the entropy of the responsibilities.
    """
    d = gmm.n_features
    precision, logdet = component_precisions(gmm)
    u = centres - gmm.means  # (K, D): x − μ_k = (x − c_k) + u_k
    if precision.ndim == 3:
        quad = (jnp.einsum("kij,kij->k", precision, stats.sum_xx)
                + 2.0 * jnp.einsum("ki,kij,kj->k", u, precision, stats.sum_x)
                + stats.nk * jnp.einsum("ki,kij,kj->k", u, precision, u))
    else:
        quad = jnp.sum(precision * (stats.sum_xx + 2.0 * u * stats.sum_x
                                    + stats.nk[:, None] * u * u), axis=-1)
    # A weight that underflowed to 0 has r_nk = 0 exactly: its terms are 0, not 0·(−∞).
    log_w = jnp.where(stats.nk > 0, jnp.log(gmm.weights), 0.0)
    joint = stats.nk * (log_w - 0.5 * (d * _linalg.LOG_2PI + logdet)) - 0.5 * quad
    return sum_ll - jnp.sum(joint)


def _weight_concentration(nk, gamma0, weight_type):
    if weight_type == "dirichlet_distribution":
        return gamma0 + nk
    tail = jnp.cumsum(nk[::-1])[::-1]  # Σ_{j ≥ k} n_j
    after = jnp.concatenate([tail[1:], jnp.zeros((1,), nk.dtype)])
    return jnp.stack([1.0 + nk, gamma0 + after])


def variational_m_step(stats: Stats, centres: jax.Array, prior: VariationalPrior, *,
                       covariance_type: str, weight_type: str, reg_covar) -> VariationalPosterior:
    """The conjugate update of q from `Stats`, as scikit-learn's `_m_step`.

    n_k = Σ_n r_nk + 10 eps, x̄_k, and S_k the ML covariance (with `reg_covar` on its
    diagonal; pooled for tied, averaged over dimensions for spherical); β_k = β0 + n_k;
    m_k = (β0 m0 + n_k x̄_k)/β_k; ν_k = ν0 + n_k (tied ν0 + N/K);
    covariances (ν_k W_k)⁻¹ = (W0⁻¹ + n_k S_k + n_k β0/β_k (x̄_k − m0)(x̄_k − m0)ᵀ)/ν_k.
    One restart (no batch axis); a traced primitive.

    Args:
      stats: the E step's `Stats` (K components, D features), second moments about centres.
      centres: (K, D) or (D,) the centres of the second moments.
      prior: the `VariationalPrior`.
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_type: "dirichlet_process" or "dirichlet_distribution".
      reg_covar: added to the diagonal of each S_k.

    Returns:
      The new `VariationalPosterior`, carrying both types.
    """
    kind = covariance.of(covariance_type)
    dt = stats.sum_x.dtype
    gamma0, beta0, m0, nu0, psi0 = (jnp.asarray(p, dt) for p in prior)
    nk, delta, scatter = component_scatter(stats, kind)
    k, d = stats.sum_x.shape
    xbar = centres + delta
    beta = beta0 + nk
    means = (beta0 * m0 + nk[:, None] * xbar) / beta[:, None]
    dev = xbar - m0
    shrink = nk * beta0 / beta  # (K,)
    eye = jnp.eye(d, dtype=dt)
    scale_tril = None
    if covariance_type == "full":
        nu = nu0 + nk
        post = psi0 + scatter + reg_covar * nk[:, None, None] * eye + kind.outer(shrink, dev)
        cov = _linalg.symmetrize(post / nu[:, None, None])
    elif covariance_type == "tied":
        n_total = jnp.sum(nk)
        nu = nu0 + n_total / k
        sk = jnp.sum(scatter, axis=0) / n_total + reg_covar * eye
        post = psi0 + sk * n_total / k + jnp.sum(kind.outer(shrink, dev), axis=0) / k
        cov = _linalg.symmetrize(post / nu)
    elif covariance_type == "diag":
        nu = nu0 + nk
        sk = jnp.maximum(scatter, 0.0) / nk[:, None] + reg_covar
        cov = (psi0 + nk[:, None] * sk + kind.outer(shrink, dev)) / nu[:, None]
    else:
        nu = nu0 + nk
        sk = jnp.mean(jnp.maximum(scatter, 0.0), axis=-1) / nk + reg_covar
        cov = (psi0 + nk * sk + shrink * jnp.mean(dev * dev, axis=-1)) / nu
    if kind.matrix:
        scale_tril = _linalg.cholesky(cov)
    return VariationalPosterior(_weight_concentration(nk, gamma0, weight_type), beta, means,
                                nu, cov, scale_tril, covariance_type, weight_type)


def _log_det_precision_chol(post: VariationalPosterior, covariance_type: str, d: int):
    """ln|L_Λ| of the precisions (ν_k W_k)'s Cholesky factors, (K,) or () for tied."""
    if covariance.of(covariance_type).matrix:
        return -_linalg.logdet_tril(post.scale_tril) / 2.0
    log_var = jnp.log(post.covariances)
    return -0.5 * (jnp.sum(log_var, axis=-1) if covariance_type == "diag" else d * log_var)


def lower_bound(post: VariationalPosterior, entropy: jax.Array, *, covariance_type: str,
                weight_type: str) -> jax.Array:
    """The evidence lower bound as scikit-learn's `_compute_lower_bound` (constants dropped):
    entropy − Σ_k ln B(W_k, ν_k) − ln C(q(π)) − ½ D Σ_k ln β_k.

    Args:
      post: the posterior after an M step (K components, D features).
      entropy: () −Σ r ln r of the responsibilities that M step used.
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_type: "dirichlet_process" or "dirichlet_distribution".

    Returns:
      () the ELBO.
    """
    k, d = post.means.shape
    nu = post.degrees_of_freedom
    log_det = _log_det_precision_chol(post, covariance_type, d) - 0.5 * d * jnp.log(nu)
    i = jnp.arange(d, dtype=nu.dtype)
    log_wishart = -(nu * log_det + nu * d * 0.5 * jnp.log(2.0).astype(nu.dtype)
                    + jnp.sum(gammaln(0.5 * (nu[..., None] - i)), axis=-1))
    log_wishart = k * log_wishart if covariance_type == "tied" else jnp.sum(log_wishart)
    conc = post.weight_concentration
    if weight_type == "dirichlet_process":
        log_norm_weight = -jnp.sum(betaln(conc[0], conc[1]))
    else:
        log_norm_weight = gammaln(jnp.sum(conc)) - jnp.sum(gammaln(conc))
    return entropy - log_wishart - log_norm_weight - 0.5 * d * jnp.sum(jnp.log(post.mean_precision))


