"""Fitting a distribution q by either direction of the KL divergence.

* exclusive (reverse) KL, KL(q ‖ p) = E_q[log q − log p]: mode seeking; estimated with
  reparameterised samples from q, so p may be an unnormalised log density (the loss is then
  KL − log Z, with the same gradient);
* inclusive (forward) KL, KL(p ‖ q) = E_p[log p − log q]: mass covering; estimated from
  samples of p when p can be sampled, else by self-normalised importance sampling (SNIS) from
  q itself or from a proposal.

A *target* is anything with `log_prob(x)` for one point x: (D,) (a distrax or TFP
distribution with event shape (D,), e.g. `distrax.MixtureSameFamily`), or a plain callable
`log_prob(x) -> ()`. Sampling targets follow the distrax/TFP convention
`sample(seed=key, sample_shape=(n,)) -> (n, D)`.

A *family* is a small NamedTuple of static sizes whose methods take unconstrained parameters
(a NamedTuple of arrays): `FullCovGaussian`, `DiagGaussian`, `GaussianMixtureFamily`.

`fit(target, family, direction, *, key, steps, optimizer)` runs an optax loop in `lax.scan`
under `jit` and raises `NonFiniteFitError` if it diverged (NaN/Inf parameters: checked once,
on device, after the loop); `fit_many` vmaps the same loop over initialisations and learning
rates (one compile) and returns diverged runs as they are, for the caller to filter;
`snis_forward_kl_surrogate` is the encoder objective of reweighted wake-sleep for an
amortised q(z | x).

Validation: the public entry points (`fit`, `fit_many`, `run`, the two losses, the families'
`init`, `gaussian_mixture_target`, `mixture_moments`, `nearest_mode`,
`snis_forward_kl_surrogate`) check shapes and configuration statically (free under jit) and
values (finite, positive scales) on concrete arrays, raising `ValueError` naming the argument.
The families' other methods (`log_prob`, `sample`, `weighted_rsample`, `moments`,
`scale_tril`, ...) and `GaussianMixtureTarget`'s are traced primitives: they are called with
parameters that the losses and `fit` have checked against `param_shapes()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvi import _linalg
from jaxvi import _validate as v
from jaxvi.training.step import TrainState, init_state, make_step

Array = jax.Array

REVERSE = "reverse"
FORWARD = "forward"
_DIRECTIONS = {
    "reverse": REVERSE, "exclusive": REVERSE, "forward": FORWARD, "inclusive": FORWARD,
}
_ESTIMATORS = ("auto", "target-samples", "snis")
_FAMILY_NAMES = ("full", "diag", "mixture")


# --------------------------------------------------------------------------------------------
# Families of q.
# --------------------------------------------------------------------------------------------


def _inverse_softplus(y):
    y = jnp.asarray(y)
    return y + jnp.log(-jnp.expm1(-y))


def _init_loc_scale(family: str, loc, scale, loc_shape: tuple[int, ...]):
    """Checked (loc, scale) of a family's `init`: loc of `loc_shape`, finite; scale positive,
    finite, not subnormal and broadcastable to `loc_shape` (a scale of 0 would give a raw
    parameter of −inf). -> (loc, scale broadcast to loc_shape)."""
    loc = jnp.zeros(loc_shape) if loc is None else jnp.asarray(loc, dtype=float)
    if tuple(loc.shape) != tuple(loc_shape):
        raise ValueError(f"`loc` must have shape {tuple(loc_shape)} for {family}; got "
                         f"{tuple(loc.shape)}.")
    v.check_finite("loc", loc)
    sd = jnp.asarray(scale, dtype=loc.dtype)
    try:
        sd = jnp.broadcast_to(sd, loc_shape)
    except ValueError:
        raise ValueError(f"`scale` must be a scalar or broadcast to {tuple(loc_shape)} for "
                         f"{family}; got shape {tuple(sd.shape)}.") from None
    v.check_positive("scale", sd)
    v.check_normal_range("scale", sd, sd.dtype)
    return loc, sd


def _tril_from_raw(raw: Array) -> Array:
    """Lower-triangular factor with softplus diagonal from an unconstrained (..., D, D)."""
    diag = jax.nn.softplus(jnp.diagonal(raw, axis1=-2, axis2=-1))
    return jnp.tril(raw, -1) + diag[..., None] * jnp.eye(raw.shape[-1], dtype=raw.dtype)


class GaussianParams(NamedTuple):
    loc: Array  # (D,)
    raw_scale: Array  # (D, D) unconstrained lower factor (full) or (D,) (diag)


class MixtureParams(NamedTuple):
    logits: Array  # (K,)
    loc: Array  # (K, D)
    raw_scale: Array  # (K, D, D) unconstrained lower factors


class FullCovGaussian(NamedTuple):
    """N(loc, L Lᵀ), L lower-triangular with a softplus diagonal."""

    dim: int

    def init(self, *, key: Array | None = None, loc=None, scale=1.0) -> GaussianParams:
        """loc: (D,) or None (zeros); scale: positive scalar or (D,) standard deviations."""
        del key  # deterministic; kept for a uniform signature
        loc, sd = _init_loc_scale(repr(self), loc, scale, (self.dim,))
        return GaussianParams(loc, jnp.diag(_inverse_softplus(sd)))

    def scale_tril(self, params: GaussianParams) -> Array:
        return _tril_from_raw(params.raw_scale)

    def log_prob(self, params: GaussianParams, x: Array) -> Array:
        """x: (..., D) -> (...)."""
        l = self.scale_tril(params)
        flat = x.reshape((-1, self.dim))
        maha = _linalg.pairwise_sq_mahalanobis_full(
            flat, params.loc[None], _linalg.precision_from_tril(l)[None])[:, 0]
        lp = -0.5 * (maha + self.dim * _linalg.LOG_2PI + _linalg.logdet_tril(l))
        return lp.reshape(x.shape[:-1])

    def sample(self, params: GaussianParams, *, key: Array, n: int) -> Array:
        """Reparameterised draws: (n, D)."""
        eps = jax.random.normal(key, (n, self.dim), dtype=params.loc.dtype)
        return params.loc + eps @ self.scale_tril(params).T

    def weighted_rsample(self, params, *, key: Array, n: int) -> tuple[Array, Array]:
        """(x: (M, D), w: (M,)) with E_q[f] ≈ Σ w f(x), differentiable in params."""
        return self.sample(params, key=key, n=n), jnp.full((n,), 1.0 / n, params.loc.dtype)

    def moments(self, params: GaussianParams) -> tuple[Array, Array]:
        """(mean: (D,), cov: (D, D))."""
        l = self.scale_tril(params)
        return params.loc, l @ l.T

    def param_shapes(self) -> GaussianParams:
        return GaussianParams((self.dim,), (self.dim, self.dim))


class DiagGaussian(NamedTuple):
    """N(loc, diag(s²)), s = softplus(raw_scale)."""

    dim: int

    def init(self, *, key: Array | None = None, loc=None, scale=1.0) -> GaussianParams:
        """loc: (D,) or None (zeros); scale: positive scalar or (D,) standard deviations."""
        del key
        loc, sd = _init_loc_scale(repr(self), loc, scale, (self.dim,))
        return GaussianParams(loc, _inverse_softplus(sd))

    def scale(self, params: GaussianParams) -> Array:
        return jax.nn.softplus(params.raw_scale)

    def log_prob(self, params: GaussianParams, x: Array) -> Array:
        return _linalg.diag_normal_log_prob(x, params.loc, self.scale(params))

    def sample(self, params: GaussianParams, *, key: Array, n: int) -> Array:
        eps = jax.random.normal(key, (n, self.dim), dtype=params.loc.dtype)
        return params.loc + eps * self.scale(params)

    def weighted_rsample(self, params, *, key: Array, n: int) -> tuple[Array, Array]:
        return self.sample(params, key=key, n=n), jnp.full((n,), 1.0 / n, params.loc.dtype)

    def moments(self, params: GaussianParams) -> tuple[Array, Array]:
        return params.loc, jnp.diag(jnp.square(self.scale(params)))

    def param_shapes(self) -> GaussianParams:
        return GaussianParams((self.dim,), (self.dim,))


class GaussianMixtureFamily(NamedTuple):
    """Σ_k softmax(logits)_k N(loc_k, L_k L_kᵀ) with full-covariance components."""

    dim: int
    num_components: int

    def init(self, *, key: Array | None = None, loc=None, scale=1.0) -> MixtureParams:
        """loc: (K, D), or None: draws N(0, 1) locations from `key` (required then);
        scale: positive, broadcastable to (K, D)."""
        d, k = self.dim, self.num_components
        if loc is None:
            if key is None:
                raise ValueError("`key` is required to initialise mixture locations when "
                                 "`loc` is None; got None.")
            loc = jax.random.normal(key, (k, d))
        loc, sd = _init_loc_scale(repr(self), loc, scale, (k, d))
        raw = _inverse_softplus(sd)[..., None] * jnp.eye(d, dtype=loc.dtype)
        return MixtureParams(jnp.zeros((k,), loc.dtype), loc, raw)

    def scale_tril(self, params: MixtureParams) -> Array:
        return _tril_from_raw(params.raw_scale)

    def component_log_prob(self, params: MixtureParams, x: Array) -> Array:
        """log w_k + log N(x; m_k, Σ_k). x: (..., D) -> (..., K)."""
        l = self.scale_tril(params)
        batch = x.shape[:-1]
        flat = x.reshape((-1, self.dim))
        maha = _linalg.pairwise_sq_mahalanobis_full(flat, params.loc,
                                                     _linalg.precision_from_tril(l))
        comp = -0.5 * (maha + self.dim * _linalg.LOG_2PI + _linalg.logdet_tril(l))
        comp = comp + jax.nn.log_softmax(params.logits)
        return comp.reshape(batch + (self.num_components,))

    def log_prob(self, params: MixtureParams, x: Array) -> Array:
        return jax.nn.logsumexp(self.component_log_prob(params, x), axis=-1)

    def sample(self, params: MixtureParams, *, key: Array, n: int) -> Array:
        """Ancestral draws (not differentiable through the weights): (n, D)."""
        k_idx, k_eps = jax.random.split(key)
        idx = jax.random.categorical(k_idx, params.logits, shape=(n,))
        eps = jax.random.normal(k_eps, (n, self.dim), dtype=params.loc.dtype)
        l = self.scale_tril(params)[idx]
        return params.loc[idx] + jnp.einsum("nij,nj->ni", l, eps)

    def weighted_rsample(self, params, *, key: Array, n: int) -> tuple[Array, Array]:
        """n reparameterised draws per component, weighted w_k / n: (K·n, D), (K·n,).

        Σ_k w_k E_{q_k}[f] is then differentiable in the weights as well as in the components.
        """
        k, d = self.num_components, self.dim
        eps = jax.random.normal(key, (k, n, d), dtype=params.loc.dtype)
        x = params.loc[:, None, :] + jnp.einsum("kij,knj->kni", self.scale_tril(params), eps)
        w = jnp.repeat(jax.nn.softmax(params.logits) / n, n)
        return x.reshape((k * n, d)), w

    def moments(self, params: MixtureParams) -> tuple[Array, Array]:
        l = self.scale_tril(params)
        cov = l @ jnp.swapaxes(l, -1, -2)
        return mixture_moments(jax.nn.softmax(params.logits), params.loc, cov)

    def param_shapes(self) -> MixtureParams:
        d, k = self.dim, self.num_components
        return MixtureParams((k,), (k, d), (k, d, d))


Family = FullCovGaussian | DiagGaussian | GaussianMixtureFamily


def make_family(name: str, dim: int, num_components: int = 2) -> Family:
    """"full" | "diag" | "mixture" (with `num_components`) of dimension `dim`."""
    v.check_choice("family", name, _FAMILY_NAMES)
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer; got {dim!r}.")
    if name == "full":
        return FullCovGaussian(int(dim))
    if name == "diag":
        return DiagGaussian(int(dim))
    if not isinstance(num_components, (int, np.integer)) or num_components < 1:
        raise ValueError(f"`num_components` must be a positive integer; got {num_components!r}.")
    return GaussianMixtureFamily(int(dim), int(num_components))


def mixture_moments(weights: Array, loc: Array, cov: Array) -> tuple[Array, Array]:
    """Mean (D,) and covariance (D, D) of Σ_k w_k N(loc_k, cov_k).

    weights: (K,), loc: (K, D), cov: (K, D, D). The second moment is formed about the mean
    (Σ_k w_k [cov_k + (m_k − μ)(m_k − μ)ᵀ]), which does not cancel in float32.
    Shapes are checked (statically); `weights` should be non-negative and sum to 1.
    """
    weights, loc, cov = (jnp.asarray(a) for a in (weights, loc, cov))
    _check_mixture_shapes(weights, loc, cov)
    mean = weights @ loc
    c = loc - mean
    cov = jnp.einsum("k,kij->ij", weights, cov) + jnp.einsum("k,ki,kj->ij", weights, c, c)
    return mean, _linalg.symmetrize(cov)


class GaussianMixtureTarget(NamedTuple):
    """A Gaussian-mixture target p(x) = Σ_k w_k N(x; loc_k, cov_k) as a plain pytree.

    weights: (K,), loc: (K, D), cov: (K, D, D). Same interface as a distrax
    `MixtureSameFamily` of full-covariance normals (`event_shape`, `log_prob`,
    `sample(seed=, sample_shape=)`), but its log density is one matmul kernel per call
    (`_linalg.pairwise_sq_mahalanobis_full`) instead of K triangular solves per point.
    """

    weights: Array
    loc: Array
    cov: Array

    @property
    def event_shape(self) -> tuple[int]:
        return (self.loc.shape[-1],)

    def log_prob(self, x: Array) -> Array:
        """x: (..., D) -> (...)."""
        d = self.loc.shape[-1]
        v.check_min_ndim("x", x, 1, "(..., D)")
        v.check_same_size("x", x.shape[-1], "loc", d, "event size D (last axis)")
        l = _linalg.cholesky(self.cov)
        flat = x.reshape((-1, d))
        maha = _linalg.pairwise_sq_mahalanobis_full(flat, self.loc, _linalg.precision_from_tril(l))
        comp = -0.5 * (maha + d * _linalg.LOG_2PI + _linalg.logdet_tril(l)) + jnp.log(self.weights)
        return jax.nn.logsumexp(comp, axis=-1).reshape(x.shape[:-1])

    def sample(self, *, seed: Array, sample_shape=()) -> Array:
        """sample_shape + (D,) draws."""
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        k_idx, k_eps = jax.random.split(seed)
        idx = jax.random.categorical(k_idx, jnp.log(self.weights), shape=shape)
        eps = jax.random.normal(k_eps, shape + self.loc.shape[-1:], dtype=self.loc.dtype)
        l = _linalg.cholesky(self.cov)[idx]
        return self.loc[idx] + jnp.einsum("...ij,...j->...i", l, eps)

    def moments(self) -> tuple[Array, Array]:
        return mixture_moments(self.weights, self.loc, self.cov)


def _check_mixture_shapes(weights, loc, cov) -> None:
    """weights (K,), loc (K, D), cov (K, D, D), K ≥ 1."""
    v.check_ndim("weights", weights, 1, "(K,)")
    v.check_ndim("loc", loc, 2, "(K, D)")
    v.check_ndim("cov", cov, 3, "(K, D, D)")
    if weights.shape[0] < 1:
        raise ValueError(f"`weights` must have at least one component (K ≥ 1); got shape "
                         f"{weights.shape}.")
    v.check_same_size("weights", weights.shape[0], "loc", loc.shape[0], "number of components")
    v.check_same_size("loc", loc.shape[0], "cov", cov.shape[0], "number of components")
    if cov.shape[1:] != (loc.shape[1],) * 2:
        want = (loc.shape[0],) + (loc.shape[1],) * 2
        raise ValueError(f"`cov` must have shape (K, D, D) = {want}"
                         f"; got {cov.shape}.")


def gaussian_mixture_target(weights, loc, cov) -> GaussianMixtureTarget:
    """Checked constructor: weights (K,) positive summing to 1, loc (K, D), cov (K, D, D) SPD
    (and resolvable by a Cholesky factorisation in its dtype, see `jaxvi.kl.mvn`)."""
    weights, loc, cov = (jnp.asarray(a, dtype=float) for a in (weights, loc, cov))
    _check_mixture_shapes(weights, loc, cov)
    v.check_positive("weights", weights)
    if abs(float(jnp.sum(weights)) - 1.0) > 1e-5:
        raise ValueError(f"`weights` must sum to 1; got {float(jnp.sum(weights))!r}.")
    v.check_finite("loc", loc)
    v.check_positive_definite("cov", cov)
    v.check_cholesky_resolvable("cov", cov, cov.dtype)
    return GaussianMixtureTarget(weights, loc, cov)


# --------------------------------------------------------------------------------------------
# Validation helpers (static: shapes and configuration, so they also run at trace time).
# --------------------------------------------------------------------------------------------


def _resolve_family(family, target) -> Family:
    if isinstance(family, (FullCovGaussian, DiagGaussian, GaussianMixtureFamily)):
        return family
    if isinstance(family, str):
        v.check_choice("family", family, _FAMILY_NAMES)
        dim = _target_dim(target)
        if dim is None:
            raise ValueError(
                f"`family` given by name ({family!r}) needs a target with an `event_shape` to "
                "infer the dimension; pass a family instance such as FullCovGaussian(dim) "
                "instead.")
        return make_family(family, dim)
    raise ValueError(
        "`family` must be a FullCovGaussian, DiagGaussian or GaussianMixtureFamily instance or "
        f"one of {list(_FAMILY_NAMES)}; got {family!r}.")


def _resolve_direction(direction) -> str:
    if direction not in _DIRECTIONS:
        raise ValueError(f"`direction` must be one of {sorted(_DIRECTIONS)}; got {direction!r}.")
    return _DIRECTIONS[direction]


def _target_dim(target) -> int | None:
    shape = getattr(target, "event_shape", None)
    if shape is None:
        return None
    shape = tuple(shape)
    if len(shape) != 1:
        raise ValueError(f"`target` must have event shape (D,); got event shape {shape}.")
    return int(shape[0])


def _target_log_prob(target) -> Callable[[Array], Array]:
    if hasattr(target, "log_prob"):
        return target.log_prob
    if callable(target):
        return target
    raise ValueError(f"`target` must have a `log_prob` method or be callable; got {target!r}.")


def _check_compatible(family: Family, target, params=None, name: str = "params") -> None:
    dim = _target_dim(target)
    if dim is not None and dim != family.dim:
        raise ValueError(
            f"`family` has dimension {family.dim} but `target` has event shape ({dim},).")
    if params is not None:
        want = family.param_shapes()
        if not isinstance(params, type(want)):
            raise ValueError(f"`{name}` must be a {type(want).__name__} for {family!r}; got "
                             f"{type(params).__name__}.")
        for field, shape, leaf in zip(want._fields, want, params, strict=True):
            if tuple(np.shape(leaf)) != tuple(shape):
                raise ValueError(f"`{name}.{field}` must have shape {tuple(shape)} for "
                                 f"{family!r}; got {tuple(np.shape(leaf))}.")


def _check_proposal(proposal) -> None:
    if proposal is not None and not (hasattr(proposal, "sample") and hasattr(proposal, "log_prob")):
        raise ValueError("`proposal` must have `sample(seed=, sample_shape=)` and `log_prob` "
                         f"methods, or be None; got {type(proposal).__name__}.")


# --------------------------------------------------------------------------------------------
# The two losses.
# --------------------------------------------------------------------------------------------


def reverse_kl_loss(params, target, *, family: Family, key: Array, num_samples: int = 64
                    ) -> Array:
    """Exclusive KL(q ‖ p) ≈ Σ_i w_i [log q(x_i) − log p(x_i)], x_i reparameterised from q.

    Unbiased for KL(q ‖ p) when `target` is normalised; for an unnormalised log density p̃ it
    estimates KL − log Z (same gradient). Returns a scalar.
    """
    family = _resolve_family(family, target)
    _check_compatible(family, target, params)
    num_samples = v.check_int("num_samples", num_samples, 1)
    log_p = jax.vmap(_target_log_prob(target))
    x, w = family.weighted_rsample(params, key=key, n=num_samples)
    return jnp.sum(w * (family.log_prob(params, x) - log_p(x)))


def forward_kl_loss(params, target, *, family: Family, key: Array, num_samples: int = 64,
                    estimator: str = "auto", proposal=None) -> Array:
    """Inclusive KL(p ‖ q). Returns a scalar whose gradient is −E_p[∇ log q].

    estimator:
      "target-samples": x_i ~ p (`target.sample`); (1/n) Σ [log p(x_i) − log q(x_i)], unbiased
        for a normalised target.
      "snis": x_i from `proposal` (a distribution with `sample`/`log_prob`), or from q itself
        with its parameters held fixed when `proposal` is None; self-normalised weights
        w̄ = softmax(log p̃ − log r) give Σ w̄_i [log p̃(x_i) − log Ẑ − log q(x_i)] with
        Ẑ = mean exp(log p̃ − log r): consistent (biased for finite n), and valid for an
        unnormalised target.
      "auto": "target-samples" when the target has `sample` and no proposal is given, else
        "snis".
    """
    family = _resolve_family(family, target)
    _check_compatible(family, target, params)
    num_samples = v.check_int("num_samples", num_samples, 1)
    v.check_choice("estimator", estimator, _ESTIMATORS)
    _check_proposal(proposal)
    if estimator == "auto":
        estimator = "target-samples" if (proposal is None and hasattr(target, "sample")) else "snis"
    log_p = jax.vmap(_target_log_prob(target))
    if estimator == "target-samples":
        if not hasattr(target, "sample"):
            raise ValueError("`target` must have a `sample(seed=, sample_shape=)` method for "
                             "estimator='target-samples'; use estimator='snis'.")
        x = jax.lax.stop_gradient(target.sample(seed=key, sample_shape=(num_samples,)))
        return jnp.mean(log_p(x) - family.log_prob(params, x))
    if proposal is None:
        fixed = jax.lax.stop_gradient(params)
        x = jax.lax.stop_gradient(family.sample(fixed, key=key, n=num_samples))
        log_r = family.log_prob(fixed, x)
    else:
        x = jax.lax.stop_gradient(proposal.sample(seed=key, sample_shape=(num_samples,)))
        log_r = jax.vmap(proposal.log_prob)(x)
    lp = log_p(x)
    log_w = jax.lax.stop_gradient(lp - log_r)
    w = jax.nn.softmax(log_w)
    log_z = jax.nn.logsumexp(log_w) - jnp.log(num_samples)
    return jnp.sum(w * (jax.lax.stop_gradient(lp) - log_z - family.log_prob(params, x)))


def snis_forward_kl_surrogate(log_q: Array, log_weights: Array, axis: int = -1) -> Array:
    """Encoder objective of reweighted wake-sleep for an amortised q(z | x).

    log_q: (..., S) log q(z_s | x) under the parameters being trained; log_weights: (..., S)
    log p(x, z_s) − log q(z_s | x) (any proposal density in place of q works). The z_s must be
    held fixed (`stop_gradient` on reparameterised draws), so only the density is
    differentiated. Returns (...): −Σ_s w̄_s log q(z_s | x), w̄ = softmax(log_weights) with no
    gradient, whose gradient estimates ∇ KL(p(z | x) ‖ q(z | x)) = −E_{p(z|x)}[∇ log q(z | x)]
    (consistently, as S grows; exactly when the z_s enumerate a discrete latent under a
    uniform proposal). Its value is the cross-entropy, KL + H[p(z | x)].
    """
    log_q = jnp.asarray(log_q)
    log_weights = jnp.asarray(log_weights)
    if log_q.shape != log_weights.shape:
        raise ValueError(f"`log_q` and `log_weights` must have the same shape; got "
                         f"{log_q.shape} and {log_weights.shape}.")
    w = jax.nn.softmax(jax.lax.stop_gradient(log_weights), axis=axis)
    return -jnp.sum(w * log_q, axis=axis)


# --------------------------------------------------------------------------------------------
# The fitting loop.
# --------------------------------------------------------------------------------------------


class NonFiniteFitError(FloatingPointError):
    """`fit` diverged: its parameters became NaN or Inf. `losses` holds the per-step losses
    (steps,) of the run, as a NumPy array, to see where it went wrong."""

    def __init__(self, message: str, losses=None):
        super().__init__(message)
        self.losses = losses


class FitResult(NamedTuple):
    params: Any  # fitted family parameters
    losses: Array  # (steps,) loss estimate at each step (before its update)


def _loss_fn(target, family, direction, num_samples, estimator, proposal):
    if direction == REVERSE:
        return lambda p, k: reverse_kl_loss(p, target, family=family, key=k,
                                            num_samples=num_samples)
    return lambda p, k: forward_kl_loss(p, target, family=family, key=k, num_samples=num_samples,
                                        estimator=estimator, proposal=proposal)


def run(params, target, family: Family, direction: str, *, key: Array, steps: int,
        optimizer: optax.GradientTransformation, num_samples: int = 64,
        estimator: str = "auto", proposal=None) -> FitResult:
    """The pure loop behind `fit`: `steps` optax updates in `lax.scan`, one key per step.

    Traceable (jit/vmap over `params`, `key`); `family`, `direction`, `steps`,
    `num_samples` are static. `family` must be a family instance and `direction` one of
    "reverse"/"exclusive"/"forward"/"inclusive". Configuration and parameter shapes are checked
    (statically); no value checks and no divergence guard (`fit` has one): a diverged run
    returns non-finite parameters.
    """
    if not isinstance(family, (FullCovGaussian, DiagGaussian, GaussianMixtureFamily)):
        raise ValueError("`family` must be a FullCovGaussian, DiagGaussian or "
                         f"GaussianMixtureFamily instance; got {family!r}.")
    _check_compatible(family, target, params)
    steps = v.check_int("steps", steps, 1)
    direction = _resolve_direction(direction)
    loss = _loss_fn(target, family, direction, num_samples, estimator, proposal)
    step = make_step(lambda p, batch, k: (loss(p, k), {}), optimizer)

    def body(state: TrainState, k):
        state, metrics = step(state, None, k)
        return state, metrics["loss"]

    final, losses = jax.lax.scan(body, init_state(params, optimizer),
                                 jax.random.split(key, steps))
    return FitResult(final.params, losses)


def _check_fit_args(target, family, direction, steps, optimizer, num_samples, init_params):
    _target_log_prob(target)
    family = _resolve_family(family, target)
    direction = _resolve_direction(direction)
    steps = v.check_int("steps", steps, 1)
    num_samples = v.check_int("num_samples", num_samples, 1)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise ValueError(f"`optimizer` must be an optax GradientTransformation; got {optimizer!r}.")
    _check_compatible(family, target, init_params, name="init_params")
    if init_params is not None:
        for name, leaf in zip(init_params._fields, init_params, strict=True):
            v.check_finite(f"init_params.{name}", leaf)
    return family, direction, steps, num_samples


def fit(target, family, direction: str, *, key: Array, steps: int,
        optimizer: optax.GradientTransformation, num_samples: int = 64, init_params=None,
        estimator: str = "auto", proposal=None) -> FitResult:
    """Minimise KL(q ‖ p) ("reverse"/"exclusive") or KL(p ‖ q) ("forward"/"inclusive").

    target: distribution with `log_prob` (and `sample` for the forward direction's default
    estimator) or an unnormalised log-density callable, over points (D,).
    family: a family instance, or "full" | "diag" (dimension from `target.event_shape`).
    init_params: starting parameters; default `family.init(key=...)` (zeros mean, unit scale
    for Gaussians; N(0, 1) locations for a mixture). Returns `FitResult(params, losses)`,
    losses: (steps,).

    Raises `NonFiniteFitError` if the run diverged (a learning rate too large for the target,
    or a start far from it): the final parameters are checked on device after the loop (one
    scalar comes back, no per-step host check), and the message names the first step whose
    loss was not finite. The error's `losses` attribute holds the run's losses.
    """
    family, direction, steps, num_samples = _check_fit_args(
        target, family, direction, steps, optimizer, num_samples, init_params)
    v.check_choice("estimator", estimator, _ESTIMATORS)
    k_init, k_run = jax.random.split(key)
    if init_params is None:
        init_params = family.init(key=k_init)

    @jax.jit
    def go(params, k):
        res = run(params, target, family, direction, key=k, steps=steps, optimizer=optimizer,
                  num_samples=num_samples, estimator=estimator, proposal=proposal)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf))
                                    for leaf in jax.tree_util.tree_leaves(res.params)]))
        bad = ~jnp.isfinite(res.losses)
        first_bad = jnp.where(jnp.any(bad), jnp.argmax(bad), -1)
        return res, finite, first_bad

    result, finite, first_bad = go(init_params, k_run)
    if not bool(finite):
        _raise_diverged(result.losses, int(first_bad), steps)
    return result


def _raise_diverged(losses, first_bad: int, steps: int):
    losses = np.asarray(losses)
    if first_bad == 0:
        raise NonFiniteFitError(
            f"`fit` diverged: the loss at the initial parameters is already {float(losses[0])}, "
            "so the parameters became NaN or Inf at the first update: the target is too far "
            f"from the start for {losses.dtype.name} (or its log density is not finite there). "
            "Pass `init_params` nearer the target, rescale the problem, or use float64 "
            "(inside `jax.enable_x64(True)`).", losses)
    if first_bad > 0:
        where = (f"the loss first became {float(losses[first_bad])} at step {first_bad + 1} "
                 f"of {steps}")
    else:
        where = f"the loss stayed finite, but the last update (step {steps}) was not"
    raise NonFiniteFitError(
        f"`fit` diverged: the parameters are NaN or Inf after {steps} steps ({where}). Try a "
        "smaller learning rate for the optimizer, or `init_params` nearer the target.",
        losses)


def fit_many(target, family, direction: str, init_params, *, key: Array, steps: int,
             learning_rates, num_samples: int = 64,
             make_optimizer: Callable[[Array, int], optax.GradientTransformation] | None = None,
             estimator: str = "auto", proposal=None) -> FitResult:
    """`fit` for every (learning rate, initialisation) pair, vmapped: one compile.

    init_params: the family's parameters with a leading batch axis (B, ...);
    learning_rates: (L,). make_optimizer(lr, steps) builds the optimizer from a traced
    learning rate; default Adam (b2 = 0.9) with a cosine decay from lr to 0 over `steps`.
    Returns FitResult with params (L, B, ...) and losses (L, B, steps). Each fit gets its own
    key. Unlike `fit`, a diverged run does not raise (a sweep is expected to contain learning
    rates that are too large): its parameters come back NaN/Inf; filter with `jnp.isfinite`.
    """
    lrs = jnp.asarray(learning_rates, dtype=float)
    v.check_ndim("learning_rates", lrs, 1, "(L,)")
    v.check_positive("learning_rates", lrs)
    leaves = jax.tree_util.tree_leaves(init_params)
    if not leaves or any(np.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("`init_params` must be family parameters with a leading batch axis.")
    batch = int(np.shape(leaves[0])[0])
    if any(np.shape(leaf)[0] != batch for leaf in leaves):
        raise ValueError("`init_params` leaves must share the leading batch size; got shapes "
                         f"{[np.shape(leaf) for leaf in leaves]}.")
    first = jax.tree_util.tree_map(lambda a: a[0], init_params)
    if make_optimizer is None:
        def make_optimizer(lr, n):
            # b2 = 0.9: the second-moment estimate forgets the huge first gradients of a
            # forward fit started far from the target, which would freeze Adam's step size.
            return optax.adam(optax.cosine_decay_schedule(lr, n), b2=0.9)
    family, direction, steps, num_samples = _check_fit_args(
        target, family, direction, steps, make_optimizer(1.0, 1), num_samples, first)
    v.check_choice("estimator", estimator, _ESTIMATORS)
    keys = jax.random.split(key, (lrs.shape[0], batch))

    def one(lr, params, k):
        return run(params, target, family, direction, key=k, steps=steps,
                   optimizer=make_optimizer(lr, steps), num_samples=num_samples,
                   estimator=estimator, proposal=proposal)

    over_inits = jax.vmap(one, in_axes=(None, 0, 0))
    over_lrs = jax.vmap(over_inits, in_axes=(0, None, 0))
    return jax.jit(over_lrs)(lrs, init_params, keys)


# --------------------------------------------------------------------------------------------
# Reading off where a fit ended.
# --------------------------------------------------------------------------------------------


def nearest_mode(mean: Array, mode_locs: Array, mode_covs: Array, radius: float = 1.0
                 ) -> tuple[Array, Array]:
    """Index of the mode whose Mahalanobis distance to `mean` is smallest, or −1 when none is
    within `radius` (the fit sits between modes), and that distance.

    mean: (..., D), mode_locs: (K, D), mode_covs: (K, D, D) -> ((...) int, (...) float).
    """
    mean, mode_locs, mode_covs = (jnp.asarray(a) for a in (mean, mode_locs, mode_covs))
    v.check_min_ndim("mean", mean, 1, "(..., D)")
    _check_mixture_shapes(jnp.zeros(mode_locs.shape[:1]), mode_locs, mode_covs)
    v.check_same_size("mean", mean.shape[-1], "mode_locs", mode_locs.shape[-1],
                      "event size D (last axis)")
    if not (isinstance(radius, (int, float, np.integer, np.floating)) and radius >= 0):
        raise ValueError(f"`radius` must be a non-negative number; got {radius!r}.")
    v.check_finite("mean", mean)
    v.check_finite("mode_locs", mode_locs)
    v.check_positive_definite("mode_covs", mode_covs)
    l = _linalg.cholesky(mode_covs)
    flat = mean.reshape((-1, mean.shape[-1]))
    d2 = _linalg.pairwise_sq_mahalanobis_full(flat, mode_locs, _linalg.precision_from_tril(l))
    dist = jnp.sqrt(jnp.min(d2, axis=-1))
    idx = jnp.where(dist <= radius, jnp.argmin(d2, axis=-1), -1)
    return idx.reshape(mean.shape[:-1]), dist.reshape(mean.shape[:-1])
