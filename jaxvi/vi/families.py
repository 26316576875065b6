"""Families of q: small NamedTuples of static sizes whose methods take unconstrained parameters.

`FullCovGaussian(dim)` and `DiagGaussian(dim)` take `GaussianParams`;
`GaussianMixtureFamily(dim, num_components)` takes `MixtureParams` and evaluates its density
with `jaxvi.mixture`'s kernel. `init` checks its arguments (shapes, finite locations, positive
normal-range scales) and raises `ValueError` naming them; the other methods (`log_prob`,
`sample`, `weighted_rsample`, `moments`, `scale_tril`, ...) are traced primitives, called with
parameters that the losses and `fit` have checked against `param_shapes()`. The parameter
NamedTuples and the checks of `init` are `jaxvi.vi.family_params` (importable from here too).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, mixture
from jaxvi import _validate as v
from jaxvi.vi.family_params import (  # also re-exported: their former home
    GaussianParams,
    MixtureParams,
    _init_loc_scale,
    _tril_from_raw,
)

Array = jax.Array

FAMILY_NAMES = ("full", "diag", "mixture")


def _equal_weights(n: int, dtype) -> Array:
    """(n,) weights 1/n of n plain draws, for `weighted_rsample`."""
    return jnp.full((n,), 1.0 / n, dtype)


class FullCovGaussian(NamedTuple):
    """N(loc, L Lᵀ), L lower-triangular with a softplus diagonal.

    Attributes:
      dim: D, the dimension.
    """

    dim: int

    def init(self, *, key: Array | None = None, loc=None, scale=1.0) -> GaussianParams:
        """Initial parameters: N(loc, diag scale²).

        Args:
          key: unused (deterministic); kept for a uniform signature.
          loc: (D,) mean, or None (zeros).
          scale: positive scalar or (D,) standard deviations.

        Returns:
          `GaussianParams` with loc (D,) and raw_scale (D, D).

        Raises:
          ValueError: loc not finite or not (D,); scale not positive, normal-range and
            broadcastable to (D,).
        """
        del key  # deterministic; kept for a uniform signature
        loc, sd = _init_loc_scale(repr(self), loc, scale, (self.dim,))
        return GaussianParams(loc, jnp.diag(_linalg.inverse_softplus(sd)))

    def scale_tril(self, params: GaussianParams) -> Array:
        """The lower-triangular factor L of the covariance.

        Args:
          params: the family's parameters.

        Returns:
          (D, D) L, with a positive diagonal.
        """
        return _tril_from_raw(params.raw_scale)

    def log_prob(self, params: GaussianParams, x: Array) -> Array:
        """log q(x).

        Args:
          params: the family's parameters.
          x: (..., D) points.

        Returns:
          (...) log densities.
        """
        l = self.scale_tril(params)
        flat = x.reshape((-1, self.dim))
        maha = _linalg.pairwise_sq_mahalanobis_full(
            flat, params.loc[None], _linalg.precision_from_tril(l)[None])[:, 0]
        lp = -0.5 * (maha + self.dim * _linalg.LOG_2PI + _linalg.logdet_tril(l))
        return lp.reshape(x.shape[:-1])

    def sample(self, params: GaussianParams, *, key: Array, n: int) -> Array:
        """Reparameterised draws x = loc + L ε.

        Args:
          params: the family's parameters.
          key: PRNG key.
          n: number of draws.

        Returns:
          (n, D) draws.
        """
        eps = jax.random.normal(key, (n, self.dim), dtype=params.loc.dtype)
        return params.loc + eps @ self.scale_tril(params).T

    def weighted_rsample(self, params, *, key: Array, n: int) -> tuple[Array, Array]:
        """Weighted draws with E_q[f] ≈ Σ w f(x), differentiable in params: n draws, weights 1/n.

        Args:
          params: the family's parameters.
          key: PRNG key.
          n: number of draws.

        Returns:
          (x, w): points (n, D) and their weights (n,).
        """
        return self.sample(params, key=key, n=n), _equal_weights(n, params.loc.dtype)

    def moments(self, params: GaussianParams) -> tuple[Array, Array]:
        """Mean and covariance of q.

        Args:
          params: the family's parameters.

        Returns:
          (mean, cov): (D,) and (D, D).
        """
        l = self.scale_tril(params)
        return params.loc, l @ l.T

    def param_shapes(self) -> GaussianParams:
        """The parameters' shapes, which the losses and `fit` check parameters against.

        Returns:
          `GaussianParams` of shape tuples: loc (D,), raw_scale (D, D).
        """
        return GaussianParams((self.dim,), (self.dim, self.dim))


class DiagGaussian(NamedTuple):
    """N(loc, diag(s²)), s = softplus(raw_scale).

    Attributes:
      dim: D, the dimension.
    """

    dim: int

    def init(self, *, key: Array | None = None, loc=None, scale=1.0) -> GaussianParams:
        """Initial parameters: N(loc, diag scale²).

        Args:
          key: unused (deterministic); kept for a uniform signature.
          loc: (D,) mean, or None (zeros).
          scale: positive scalar or (D,) standard deviations.

        Returns:
          `GaussianParams` with loc (D,) and raw_scale (D,).

        Raises:
          ValueError: loc not finite or not (D,); scale not positive, normal-range and
            broadcastable to (D,).
        """
        del key
        loc, sd = _init_loc_scale(repr(self), loc, scale, (self.dim,))
        return GaussianParams(loc, _linalg.inverse_softplus(sd))

    def scale(self, params: GaussianParams) -> Array:
        """The standard deviations s = softplus(raw_scale).

        Args:
          params: the family's parameters.

        Returns:
          (D,) standard deviations.
        """
        return jax.nn.softplus(params.raw_scale)

    def log_prob(self, params: GaussianParams, x: Array) -> Array:
        """log q(x).

        Args:
          params: the family's parameters.
          x: (..., D) points.

        Returns:
          (...) log densities.
        """
        return _linalg.diag_normal_log_prob(x, params.loc, self.scale(params))

    def sample(self, params: GaussianParams, *, key: Array, n: int) -> Array:
        """Reparameterised draws x = loc + s ε.

        Args:
          params: the family's parameters.
          key: PRNG key.
          n: number of draws.

        Returns:
          (n, D) draws.
        """
        eps = jax.random.normal(key, (n, self.dim), dtype=params.loc.dtype)
        return params.loc + eps * self.scale(params)

    def weighted_rsample(self, params, *, key: Array, n: int) -> tuple[Array, Array]:
        """Weighted draws with E_q[f] ≈ Σ w f(x), differentiable in params: n draws, weights 1/n.

        Args:
          params: the family's parameters.
          key: PRNG key.
          n: number of draws.

        Returns:
          (x, w): points (n, D) and their weights (n,).
        """
        return self.sample(params, key=key, n=n), _equal_weights(n, params.loc.dtype)

    def moments(self, params: GaussianParams) -> tuple[Array, Array]:
        """Mean and covariance of q.

        Args:
          params: the family's parameters.

        Returns:
          (mean, cov): (D,) and (D, D), diagonal.
        """
        return params.loc, jnp.diag(jnp.square(self.scale(params)))

    def param_shapes(self) -> GaussianParams:
        """The parameters' shapes, which the losses and `fit` check parameters against.

        Returns:
          `GaussianParams` of shape tuples: loc (D,), raw_scale (D,).
        """
        return GaussianParams((self.dim,), (self.dim,))


class GaussianMixtureFamily(NamedTuple):
    """Σ_k softmax(logits)_k N(loc_k, L_k L_kᵀ) with full-covariance components.

    Attributes:
      dim: D, the dimension.
      num_components: K, the number of components.
    """

    dim: int
    num_components: int

    def init(self, *, key: Array | None = None, loc=None, scale=1.0) -> MixtureParams:
        """Initial parameters: equal weights, components N(loc_k, diag scale_k²).

        Args:
          key: PRNG key of the locations; required when `loc` is None.
          loc: (K, D) locations, or None: N(0, 1) locations drawn from `key`.
          scale: positive standard deviations, broadcastable to (K, D).

        Returns:
          `MixtureParams` with logits (K,) zeros, loc (K, D) and raw_scale (K, D, D).

        Raises:
          ValueError: no `key` when `loc` is None; loc not finite or of another shape; scale
            not positive, normal and broadcastable to (K, D).
        """
        d, k = self.dim, self.num_components
        if loc is None:
            if key is None:
                raise ValueError("`key` is required to initialise mixture locations when "
                                 "`loc` is None; got None.")
            loc = jax.random.normal(key, (k, d))
        loc, sd = _init_loc_scale(repr(self), loc, scale, (k, d))
        raw = _linalg.inverse_softplus(sd)[..., None] * jnp.eye(d, dtype=loc.dtype)
        return MixtureParams(jnp.zeros((k,), loc.dtype), loc, raw)

    def scale_tril(self, params: MixtureParams) -> Array:
        """The components' lower-triangular factors L_k.

        Args:
          params: the family's parameters.

        Returns:
          (K, D, D) factors with positive diagonals.
        """
        return _tril_from_raw(params.raw_scale)

    def component_log_prob(self, params: MixtureParams, x: Array) -> Array:
        """log w_k + log N(x; m_k, Σ_k) for every component.

        Args:
          params: the family's parameters.
          x: (..., D) points.

        Returns:
          (..., K) weighted component log densities.
        """
        comp = mixture.gaussian_log_prob(x, params.loc, self.scale_tril(params))
        return comp + jax.nn.log_softmax(params.logits)

    def log_prob(self, params: MixtureParams, x: Array) -> Array:
        """log q(x).

        Args:
          params: the family's parameters.
          x: (..., D) points.

        Returns:
          (...) log densities.
        """
        return jax.nn.logsumexp(self.component_log_prob(params, x), axis=-1)

    def sample(self, params: MixtureParams, *, key: Array, n: int) -> Array:
        """Ancestral draws (not differentiable through the weights).

        Args:
          params: the family's parameters.
          key: PRNG key.
          n: number of draws.

        Returns:
          (n, D) draws.
        """
        q = mixture.Mixture(params.logits, params.loc, self.scale_tril(params))
        return q.sample(seed=key, sample_shape=(n,))

    def weighted_rsample(self, params, *, key: Array, n: int) -> tuple[Array, Array]:
        """n reparameterised draws per component, weighted w_k / n.

        Σ_k w_k E_{q_k}[f] is then differentiable in the weights as well as in the components.

        Args:
          params: the family's parameters.
          key: PRNG key.
          n: draws per component.

        Returns:
          (x, w): points (K·n, D) and their weights (K·n,), summing to 1.
        """
        k, d = self.num_components, self.dim
        eps = jax.random.normal(key, (k, n, d), dtype=params.loc.dtype)
        x = params.loc[:, None, :] + jnp.einsum("kij,knj->kni", self.scale_tril(params), eps)
        w = jnp.repeat(jax.nn.softmax(params.logits) / n, n)
        return x.reshape((k * n, d)), w

    def moments(self, params: MixtureParams) -> tuple[Array, Array]:
        """Mean and covariance of the mixture.

        Args:
          params: the family's parameters.

        Returns:
          (mean, cov): (D,) and (D, D).
        """
        l = self.scale_tril(params)
        cov = l @ jnp.swapaxes(l, -1, -2)
        return mixture.moments(jax.nn.softmax(params.logits), params.loc, cov)

    def param_shapes(self) -> MixtureParams:
        """The parameters' shapes, which the losses and `fit` check parameters against.

        Returns:
          `MixtureParams` of shape tuples: logits (K,), loc (K, D), raw_scale (K, D, D).
        """
        d, k = self.dim, self.num_components
        return MixtureParams((k,), (k, d), (k, d, d))


Family = FullCovGaussian | DiagGaussian | GaussianMixtureFamily
FAMILY_TYPES = (FullCovGaussian, DiagGaussian, GaussianMixtureFamily)


def make_family(name: str, dim: int, num_components: int = 2) -> Family:
    """A family by name: "full" | "diag" | "mixture" (with `num_components`) of dimension `dim`.

    Args:
      name: "full" (`FullCovGaussian`), "diag" (`DiagGaussian`) or "mixture"
        (`GaussianMixtureFamily`).
      dim: D ≥ 1.
      num_components: K ≥ 1, for "mixture".

    Returns:
      The family instance.

    Raises:
      ValueError: an unknown name, or `dim` or `num_components` not a positive integer.
    """
    v.check_choice("family", name, FAMILY_NAMES)
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer; got {dim!r}.")
    if name == "full":
        return FullCovGaussian(int(dim))
    if name == "diag":
        return DiagGaussian(int(dim))
    if not isinstance(num_components, (int, np.integer)) or num_components < 1:
        raise ValueError(f"`num_components` must be a positive integer; got {num_components!r}.")
    return GaussianMixtureFamily(int(dim), int(num_components))
