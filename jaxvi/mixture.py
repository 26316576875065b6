"""One Gaussian mixture for the whole package: p(x) = Σ_k softmax(logits)_k N(x; loc_k, L_k L_kᵀ).

`Mixture` is a plain pytree (a NamedTuple of arrays, batch axes leading) with the interface of a
distrax distribution (`event_shape`, `log_prob`, `sample(seed=, sample_shape=)`) and its moments.
`gaussian_log_prob` is the one log-density kernel behind it (log N(x; loc_k, L_k L_kᵀ) per
component; `Mixture.component_log_prob` adds the log weights): `jaxvi.kl` (mixture bounds and
Monte Carlo), `jaxvi.vi` (mixture targets and families), the command line and the examples use
it. (`jaxvi.em.GMM` is EM's parametrisation, with a covariance type, and has its own float32-
hardened kernels.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, _validate


def gaussian_log_prob(x: jax.Array, loc: jax.Array, scale_tril: jax.Array) -> jax.Array:
    """log N(x; loc_k, L_k L_kᵀ) for every component.

    Whitened residuals L_k⁻¹(x − loc_k), with each factor inverted once and applied as a matmul
    (a triangular solve per point is far slower on CPU); no expanded quadratic form, so no
    cancellation in float32.

    Args:
      x: (..., D) points, broadcasting against the batch shape.
      loc: (..., K, D) component means.
      scale_tril: (..., K, D, D) lower-triangular factors L_k.

    Returns:
      (..., K) component log densities (without the log weights).
    """
    tril = _linalg.tril_only(scale_tril)
    d = loc.shape[-1]
    z = jnp.einsum("...kij,...kj->...ki", _linalg.tril_inverse(tril), x[..., None, :] - loc)
    return -0.5 * (jnp.sum(jnp.square(z), axis=-1) + d * _linalg.LOG_2PI
                   + _linalg.logdet_tril(tril))


def moments(weights: jax.Array, loc: jax.Array, cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and covariance of the mixture Σ_k w_k N(loc_k, cov_k).

    The second moment is formed about the mean (Σ_k w_k [cov_k + (m_k − μ)(m_k − μ)ᵀ]), which
    does not cancel in float32.

    Args:
      weights: (..., K) non-negative weights, summing to 1.
      loc: (..., K, D) component means.
      cov: (..., K, D, D) component covariances.

    Returns:
      (mean, cov): the mixture's mean (..., D) and covariance (..., D, D).
    """
    mean = jnp.einsum("...k,...kd->...d", weights, loc)
    c = loc - mean[..., None, :]
    cov = (jnp.einsum("...k,...kij->...ij", weights, cov)
           + jnp.einsum("...k,...ki,...kj->...ij", weights, c, c))
    return mean, _linalg.symmetrize(cov)


class Mixture(NamedTuple):
    """A mixture of K full-covariance Gaussians in D dimensions (batch axes lead).

    Build from covariances with `Mixture.from_covariance(logits, loc, cov)`.

    Attributes:
      logits: (..., K) unnormalised log weights.
      loc: (..., K, D) component means.
      scale_tril: (..., K, D, D) lower-triangular factors with positive diagonals
        (Σ_k = L_kL_kᵀ).
    """

    logits: jax.Array
    loc: jax.Array
    scale_tril: jax.Array

    @classmethod
    def from_covariance(cls, logits, loc, cov) -> Mixture:
        """Build from covariances (Cholesky-factored here).

        Args:
          logits: (..., K) unnormalised log weights.
          loc: (..., K, D) component means.
          cov: (..., K, D, D) covariances, positive definite and resolvable by a Cholesky
            factorisation in their dtype (see `jaxvi.kl.mvn`).

        Returns:
          The `Mixture`, arrays in the arguments' common float dtype.

        Raises:
          ValueError: shapes that do not match, or covariances that are not positive definite
            or not resolvable by a Cholesky factorisation.
        """
        dtype = _validate.float_dtype(logits, loc, cov)
        logits, loc, cov = _validate.as_float(dtype, logits, loc, cov)
        _validate.check_min_ndim("cov", cov, 3, "(..., K, D, D)")
        k, d = cov.shape[-3], cov.shape[-1]
        if cov.shape[-2] != d:
            raise ValueError(f"`cov` must be square in its last two axes (..., K, D, D); got "
                             f"shape {cov.shape}.")
        _validate.check_min_ndim("loc", loc, 2, "(..., K, D)")
        if loc.shape[-2:] != (k, d):
            raise ValueError(f"`loc` must have shape (..., {k}, {d}) to match `cov` "
                             f"{cov.shape}; got {loc.shape}.")
        _validate.check_min_ndim("logits", logits, 1, "(..., K)")
        _validate.check_same_size("logits", logits.shape[-1], "cov", k, "number of components K")
        _validate.check_positive_definite("cov", cov)
        _validate.check_cholesky_resolvable("cov", cov, dtype)
        return cls(logits, loc, _linalg.cholesky(cov))

    @property
    def event_shape(self) -> tuple[int]:
        """(D,), the shape of one point (as a distrax distribution's)."""
        return (self.loc.shape[-1],)

    @property
    def log_weights(self) -> jax.Array:
        """(..., K) normalised log weights."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def covariance(self) -> jax.Array:
        """(..., K, D, D) component covariances L_k L_kᵀ."""
        tril = _linalg.tril_only(self.scale_tril)
        return tril @ jnp.swapaxes(tril, -1, -2)

    def component_log_prob(self, x: jax.Array) -> jax.Array:
        """log w_k + log N(x; loc_k, Σ_k) for every component.

        Args:
          x: (..., D) points, broadcasting against the batch shape.

        Returns:
          (..., K) weighted component log densities.

        Raises:
          ValueError: x of rank 0 or of another event size D.
        """
        _validate.check_min_ndim("x", x, 1, "(..., D)")
        _validate.check_same_size("x", x.shape[-1], "loc", self.loc.shape[-1],
                                  "event size D (last axis)")
        return self.log_weights + gaussian_log_prob(x, self.loc, self.scale_tril)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """The log density log Σ_k w_k N(x; loc_k, Σ_k).

        Args:
          x: (..., D) points, broadcasting against the batch shape.

        Returns:
          (...) log densities.

        Raises:
          ValueError: x of rank 0 or of another event size D.
        """
        return jax.nn.logsumexp(self.component_log_prob(x), axis=-1)

    def sample(self, seed: jax.Array, sample_shape=()) -> jax.Array:
        """Ancestral draws of shape `(*sample_shape, *batch, D)` (not differentiable through the
        weights).

        Args:
          seed: PRNG key.
          sample_shape: leading shape of the draws, an int or a tuple (default: one draw).

        Returns:
          `(*sample_shape, *batch, D)` points.
        """
        sample_shape = tuple(np.atleast_1d(sample_shape).astype(int)) if sample_shape else ()
        batch = self.logits.shape[:-1]
        d = self.loc.shape[-1]
        key_k, key_z = jax.random.split(seed)
        comp = jax.random.categorical(key_k, self.logits, shape=(*sample_shape, *batch))
        eps = jax.random.normal(key_z, (*sample_shape, *batch, d), dtype=self.loc.dtype)
        loc = jnp.take_along_axis(
            jnp.broadcast_to(self.loc, (*sample_shape, *self.loc.shape)),
            comp[..., None, None], axis=-2)[..., 0, :]
        tril = jnp.broadcast_to(_linalg.tril_only(self.scale_tril),
                                (*sample_shape, *self.scale_tril.shape))
        tril = jnp.take_along_axis(tril, comp[..., None, None, None], axis=-3)[..., 0, :, :]
        return loc + jnp.einsum("...ij,...j->...i", tril, eps)

    def moments(self) -> tuple[jax.Array, jax.Array]:
        """Mean and covariance of the mixture.

        Returns:
          (mean, cov): the mean (..., D) and covariance (..., D, D).
        """
        return moments(jnp.exp(self.log_weights), self.loc, self.covariance)
