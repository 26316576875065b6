"""The four covariance types of `jaxvi.em.GMM`, each decided in one place.

One object per type in `COVARIANCES` (look one up with `of(name)`) says how its covariances are
stored (scikit-learn's layouts: full (K, D, D), tied (D, D), diag (K, D), spherical (K,)), how
many free parameters they have, the per-point feature layout of the fused E step, how the
per-component Cholesky factors or variances are read from them, and the M step's covariance
from a scatter (maximum likelihood or MAP). "full" and "tied" store matrices (`matrix`):
densities go through Cholesky factors and second moments are packed D(D+1)/2 outer products;
"diag" and "spherical" store variances and second moments are squares.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg


class CovarianceType:
    """One covariance type of a K-component, D-dimensional `GMM` (base class)."""

    name: str = ""
    matrix: bool = False  # Σ stored as (D, D) matrices: Cholesky factors, packed features

    def shape(self, k: int, d: int) -> tuple[int, ...]:
        """The shape of `GMM.covariances`."""
        raise NotImplementedError

    def n_parameters(self, k: int, d: int) -> int:
        """Free parameters of the covariances (scikit-learn's count)."""
        raise NotImplementedError

    def n_second_moments(self, d: int) -> int:
        """Second-moment features per point: D(D+1)/2 for matrices, D for variances."""
        raise NotImplementedError

    def second_moments(self, xc: jax.Array) -> jax.Array:
        """xc: (n, D) -> the second-moment features (n, `n_second_moments(D)`)."""
        raise NotImplementedError

    def unpack(self, second: jax.Array, d: int) -> jax.Array:
        """(K, `n_second_moments(D)`) sums of second-moment features -> `Stats.sum_xx`'s
        layout: (K, D, D) for matrices, (K, D) for variances."""
        raise NotImplementedError

    def outer(self, w: jax.Array, a: jax.Array) -> jax.Array:
        """w_k a_k a_kᵀ for w: (K,), a: (K, D), in `Stats.sum_xx`'s layout."""
        raise NotImplementedError

    def posterior_scatter(self, scatter, shrink, dev) -> jax.Array:
        """The MAP M step's B_k = S_k + shrink_k dev_k dev_kᵀ (`Prior`)."""
        raise NotImplementedError

    def ml_covariance(self, scatter: jax.Array, nk: jax.Array, reg_covar) -> jax.Array:
        """The maximum-likelihood M step's covariances from scatters S_k (`Stats.sum_xx`'s
        layout) and counts nk: (K,), plus `reg_covar`."""
        raise NotImplementedError

    def map_covariance(self, post, nk, psi0, nu0, reg_covar) -> jax.Array:
        """The MAP M step's covariances from B_k (`posterior_scatter`), counts nk: (K,) and
        the prior's Ψ0: (D, D) and ν0, plus `reg_covar` (the formulas are in `Prior`)."""
        raise NotImplementedError

    def component_scale_tril(self, chol: jax.Array, k: int) -> jax.Array:
        """(K, D, D) per-component Cholesky factors from `GMM.scale_tril` (matrices only)."""
        raise NotImplementedError

    def variances(self, cov: jax.Array, k: int, d: int) -> jax.Array:
        """(K, D) per-component variances from `GMM.covariances` (variances only)."""
        raise NotImplementedError

    def dense(self, cov: np.ndarray, k: int, d: int) -> np.ndarray:
        """(K, D, D) NumPy covariance matrices from `GMM.covariances` (for pictures)."""
        raise NotImplementedError

    def n_point_features(self, d: int) -> int:
        """Length of the fused E step's per-point features φ(x) = [second moments, x]."""
        return self.n_second_moments(d) + d

    def point_features(self, xc: jax.Array) -> jax.Array:
        """xc: (n, D) -> φ(xc) = [second-moment features, xc]: (n, `n_point_features(D)`)."""
        return jnp.concatenate([self.second_moments(xc), xc], axis=-1)


class _MatrixCovariance(CovarianceType):
    matrix = True

    def n_second_moments(self, d):
        return d * (d + 1) // 2

    def second_moments(self, xc):
        return _linalg.sym_outer_features(xc)

    def unpack(self, second, d):
        return _linalg.unpack_sym(second, d)

    def outer(self, w, a):
        return w[:, None, None] * a[:, :, None] * a[:, None, :]

    def posterior_scatter(self, scatter, shrink, dev):
        return scatter + self.outer(shrink, dev)


class _VarianceCovariance(CovarianceType):
    matrix = False

    def n_second_moments(self, d):
        return d

    def second_moments(self, xc):
        return xc * xc

    def unpack(self, second, d):
        return second

    def outer(self, w, a):
        return w[:, None] * a * a

    def posterior_scatter(self, scatter, shrink, dev):
        return jnp.maximum(scatter, 0.0) + self.outer(shrink, dev)


class FullCovariance(_MatrixCovariance):
    """One (D, D) covariance per component: covariances (K, D, D)."""

    name = "full"

    def shape(self, k, d):
        return (k, d, d)

    def n_parameters(self, k, d):
        return k * d * (d + 1) // 2

    def ml_covariance(self, scatter, nk, reg_covar):
        eye = jnp.eye(scatter.shape[-1], dtype=scatter.dtype)
        return _linalg.symmetrize(scatter / nk[:, None, None]) + reg_covar * eye

    def map_covariance(self, post, nk, psi0, nu0, reg_covar):
        d = post.shape[-1]
        cov = (psi0 + post) / (nu0 + nk + d + 2.0)[:, None, None]
        return _linalg.symmetrize(cov) + reg_covar * jnp.eye(d, dtype=post.dtype)

    def component_scale_tril(self, chol, k):
        return chol

    def dense(self, cov, k, d):
        return np.asarray(cov)


class TiedCovariance(_MatrixCovariance):
    """One (D, D) covariance shared by all components: covariances (D, D)."""

    name = "tied"

    def shape(self, k, d):
        return (d, d)

    def n_parameters(self, k, d):
        return d * (d + 1) // 2

    def ml_covariance(self, scatter, nk, reg_covar):
        eye = jnp.eye(scatter.shape[-1], dtype=scatter.dtype)
        return _linalg.symmetrize(jnp.sum(scatter, axis=0) / jnp.sum(nk)) + reg_covar * eye

    def map_covariance(self, post, nk, psi0, nu0, reg_covar):
        # One inverse-Wishart shared by all components, K normal priors on the means.
        d = post.shape[-1]
        cov = (psi0 + jnp.sum(post, axis=0)) / (nu0 + jnp.sum(nk) + d + 1.0 + nk.shape[0])
        return _linalg.symmetrize(cov) + reg_covar * jnp.eye(d, dtype=post.dtype)

    def component_scale_tril(self, chol, k):
        d = chol.shape[-1]
        return jnp.broadcast_to(chol, (k, d, d))

    def dense(self, cov, k, d):
        cov = np.asarray(cov)
        return np.broadcast_to(cov, (k, *cov.shape))


class DiagCovariance(_VarianceCovariance):
    """D variances per component: covariances (K, D)."""

    name = "diag"

    def shape(self, k, d):
        return (k, d)

    def n_parameters(self, k, d):
        return k * d

    def ml_covariance(self, scatter, nk, reg_covar):
        return jnp.maximum(scatter / nk[:, None], 0.0) + reg_covar

    def map_covariance(self, post, nk, psi0, nu0, reg_covar):
        # An inverse-gamma per dimension (NIW with D = 1).
        return (jnp.diagonal(psi0) + post) / (nu0 + nk + 3.0)[:, None] + reg_covar

    def variances(self, cov, k, d):
        return cov

    def dense(self, cov, k, d):
        return np.stack([np.diag(v) for v in np.asarray(cov)])


class SphericalCovariance(_VarianceCovariance):
    """One variance per component: covariances (K,)."""

    name = "spherical"

    def shape(self, k, d):
        return (k,)

    def n_parameters(self, k, d):
        return k

    def ml_covariance(self, scatter, nk, reg_covar):
        return jnp.mean(jnp.maximum(scatter / nk[:, None], 0.0), axis=-1) + reg_covar

    def map_covariance(self, post, nk, psi0, nu0, reg_covar):
        # One inverse-gamma(Dν0/2, tr Ψ0/2) per component over its D dimensions.
        d = post.shape[-1]
        psi_diag = jnp.diagonal(psi0)
        cov = (jnp.sum(psi_diag) + jnp.sum(post, axis=-1)) / (d * (nu0 + nk + 1.0) + 2.0)
        return cov + reg_covar

    def variances(self, cov, k, d):
        return jnp.broadcast_to(cov[:, None], (k, d))

    def dense(self, cov, k, d):
        return np.asarray(cov)[:, None, None] * np.eye(d)


COVARIANCES: dict[str, CovarianceType] = {
    c.name: c for c in (FullCovariance(), TiedCovariance(), DiagCovariance(),
                        SphericalCovariance())
}
COVARIANCE_TYPES = tuple(COVARIANCES)


def of(covariance_type: str) -> CovarianceType:
    """The `CovarianceType` named `covariance_type`.

    Args:
      covariance_type: one of `COVARIANCE_TYPES`: "full", "tied", "diag" or "spherical".

    Returns:
      Its `CovarianceType` object from `COVARIANCES`.

    Raises:
      KeyError: any other name (unchecked: `checks.check_covariance_type` checks).
    """
    return COVARIANCES[covariance_type]
