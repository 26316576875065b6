"""EM for Gaussian mixtures as coordinate ascent on the free energy.

F(θ, q) = Σ_z q(z) log p_θ(x, z) − Σ_z q(z) log q(z). The E step sets q = p_θ(z | x) (then
F = log p_θ(x)); the M step maximises F over θ in closed form from additive sufficient
statistics. The fit loop is built from three pure pieces that a sharded or streaming fit
reuses unchanged:

    stats, sum_ll = e_step_stats(x, gmm, shift)            # E step fused with Σr, Σr x, Σr x xᵀ
    stats, sum_ll = combine((stats, sum_ll))               # e.g. lax.psum over a mesh axis
    gmm = m_step_from_stats(stats, shift, covariance_type, reg_covar)

`Stats` are sums over points, so Stats from disjoint shards add up (`psum`); the second moments
are taken about a `shift` (the current model's mean Σ_k w_k μ_k in `fit`, identical on every
device) so that E[x xᵀ] − μ μᵀ does not cancel catastrophically for data far from the origin
(scikit-learn issue 30382).

The E step has no loop over components: log N(x_n; μ_k, Σ_k) for all (n, k) is one matmul of
per-point features [x_i x_j (i ≤ j), x_i] against per-component weights [−½Λ_k, Λ_k μ_k], and the
same features give the second moments as respᵀ @ features. Data are processed in chunks
(`lax.scan`), so memory stays O(chunk · D²) whatever N is.

Covariance layouts follow scikit-learn's `GaussianMixture`: full (K, D, D), tied (D, D),
diag (K, D), spherical (K,).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, xlogy

from jaxvi import _linalg, _validate

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INITS = ("kmeans++", "random", "random_from_data")
# Rows × features per chunk of the fused E step: ≈ 8 MB of float32 features on CPU (2¹⁸ to
# 2²³ measured on a 2-core EPYC: 2²¹ fastest for full/diag N = 100,000 and for digits), large
# on accelerators (few big kernels).
_CHUNK_ELEMENTS = {"cpu": 1 << 21}
_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26
# `fit` computes the features φ(x − c) once, before its loop, when they take at most this many
# bytes (x and c are fixed during a fit); larger data recompute them in every iteration.
_FEATURE_CACHE_BYTES = 1 << 30
_KMEANS_STEPS = 10
_PRECISION = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------
# Model and statistics


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weights", "means", "covariances", "scale_tril"],
    meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class GMM:
    """A Gaussian mixture. weights: (K,), means: (K, D), covariances: full (K, D, D),
    tied (D, D), diag (K, D) or spherical (K,), as scikit-learn stores them.
    `covariance_type` is static pytree metadata.

    scale_tril (full (K, D, D), tied (D, D); None for diag/spherical or when not known): the
    lower Cholesky factor of the covariances that the M step computed (like scikit-learn's
    `precisions_cholesky_`). When present, densities use it instead of refactoring
    `covariances`, which in float32 may be numerically singular (condition number beyond
    1/eps). `_replace(covariances=...)` drops it.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    covariance_type: str = "full"
    scale_tril: jax.Array | None = None

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    def _replace(self, **kwargs) -> GMM:
        if "covariances" in kwargs:
            kwargs.setdefault("scale_tril", None)
        return dataclasses.replace(self, **kwargs)


class Stats(NamedTuple):
    """Additive sufficient statistics of a batch, second moments about a shift c.

    count: () number of points; nk: (K,) Σ_n r_nk; sum_x: (K, D) Σ_n r_nk (x_n − c);
    sum_xx: Σ_n r_nk (x_n − c)(x_n − c)ᵀ, (K, D, D) for full/tied, its diagonal (K, D) for
    diag/spherical. Stats of disjoint batches with the same shift add (`lax.psum`).
    """

    count: jax.Array
    nk: jax.Array
    sum_x: jax.Array
    sum_xx: jax.Array


class Prior(NamedTuple):
    """Conjugate prior for MAP-EM: Dirichlet(α·1) on the weights and, per component,
    normal-inverse-Wishart NIW(m0, κ0, ν0, Ψ0) on (μ_k, Σ_k).

    weight_concentration α ≥ 1 (scalar); mean_prior m0: (D,); mean_precision κ0 > 0;
    degrees_of_freedom ν0 > D − 1; covariance_prior Ψ0: (D, D).
    MAP updates (joint posterior mode), with
    B_k = n_k S_k + κ0 n_k/(κ0 + n_k) (x̄_k − m0)(x̄_k − m0)ᵀ:
    w_k ∝ n_k + α − 1; μ_k = (n_k x̄_k + κ0 m0)/(n_k + κ0); and
    full: Σ_k = (Ψ0 + B_k)/(ν0 + n_k + D + 2);
    tied (one IW(ν0, Ψ0)): Σ = (Ψ0 + Σ_k B_k)/(ν0 + N + D + 1 + K);
    diag (inverse-gamma(ν0/2, Ψ0_dd/2) per dimension): σ²_kd = (Ψ0_dd + B_k,dd)/(ν0 + n_k + 3);
    spherical (inverse-gamma(Dν0/2, tr Ψ0/2)): σ²_k = (tr Ψ0 + tr B_k)/(D(ν0 + n_k + 1) + 2).
    `reg_covar` is added on top, as in the maximum-likelihood M step.
    """

    weight_concentration: jax.Array
    mean_prior: jax.Array
    mean_precision: jax.Array
    degrees_of_freedom: jax.Array
    covariance_prior: jax.Array


class FitResult(NamedTuple):
    """Result of `fit` / `fit_minibatch`.

    gmm: the fitted mixture (after the last M step). log_likelihood: () mean log-likelihood at
    the last E step, i.e. of the parameters before the last M step (scikit-learn's
    `lower_bound_`; EM never decreases it, so the returned gmm scores at least this).
    n_iter: () int, EM iterations run. converged: () bool, the last change was below `tol`.
    history: (max_iter,) mean log-likelihood at each E step; entries from `n_iter` on are NaN.
    """

    gmm: GMM
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    history: jax.Array


def default_prior(x: jax.Array, *, covariance_type: str = "full") -> Prior:
    """A weak data-dependent prior (like scikit-learn's BayesianGaussianMixture defaults):
    α = 1 (flat Dirichlet), m0 = mean(x), κ0 = 1, ν0 = D, Ψ0 = ν0 · cov(x) / 100.
    x: (N, D) with N ≥ 2."""
    _validate.check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    n, _ = _check_x(x)
    if n < 2:
        raise ValueError(f"`x` must have at least 2 samples for a covariance; got {n}.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    d = x.shape[-1]
    cov = jnp.atleast_2d(jnp.cov(x, rowvar=False))
    one = jnp.ones((), x.dtype)
    return Prior(one, jnp.mean(x, axis=0), one, d * one, d * cov / 100.0)


# ----------------------------------------------------------------------------------------------
# Densities


def _covariance_shape(covariance_type: str, k: int, d: int) -> tuple[int, ...]:
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
        covariance_type
    ]


def _diag_variances(gmm: GMM) -> jax.Array:
    """(K, D) variances for diag/spherical."""
    k, d = gmm.means.shape
    if gmm.covariance_type == "diag":
        return gmm.covariances
    return jnp.broadcast_to(gmm.covariances[:, None], (k, d))


def _with_scale_tril(gmm: GMM, floor=None) -> GMM:
    """`gmm` (any leading batch axes) with the Cholesky factors of its covariances stored
    (full/tied; unchanged when already known, and for diag/spherical).

    With `floor` (an M step's reg_covar, below which no eigenvalue is in exact arithmetic),
    factors that round-off broke are rebuilt with eigenvalues clipped at `floor` and the
    covariances replaced by their product (`_linalg.cholesky_floored`); without, only a failed
    Cholesky is rebuilt, with eigenvalues clipped at their dtype's resolution."""
    if gmm.covariance_type not in ("full", "tied") or gmm.scale_tril is not None:
        return gmm
    cov = gmm.covariances
    if floor is None:
        chol, _, _ = _linalg.cholesky_floored(cov, 0.0, _linalg.resolution_floor(cov))
        return dataclasses.replace(gmm, scale_tril=chol)
    chol, cov, _ = _linalg.cholesky_floored(cov, floor)
    return dataclasses.replace(gmm, covariances=cov, scale_tril=chol)


def _scale_tril(gmm: GMM) -> jax.Array:
    """(K, D, D) lower Cholesky factors of the covariances (full/tied; tied broadcast):
    `gmm.scale_tril` when known, else as `_with_scale_tril` computes them."""
    k, d = gmm.n_components, gmm.n_features
    chol = _with_scale_tril(gmm).scale_tril
    return jnp.broadcast_to(chol, (k, d, d)) if gmm.covariance_type == "tied" else chol


def _component_precisions(gmm: GMM) -> tuple[jax.Array, jax.Array]:
    """Per-component precisions through Cholesky factors, and log|Σ_k| (K,): Λ_k (K, D, D)
    for full/tied, 1/σ²_k (K, D) for diag/spherical."""
    if gmm.covariance_type in ("full", "tied"):
        chol = _scale_tril(gmm)
        return _linalg.precision_from_tril(chol), _linalg.logdet_tril(chol)
    var = _diag_variances(gmm)
    return 1.0 / var, jnp.sum(jnp.log(var), axis=-1)


def _whitening(gmm: GMM):
    """The precise kernel's parameters: (c (D,), W, b, log-normaliser (K,)) with the
    whitened residual z_nk = L_k⁻¹(x_n − μ_k) = W_k (x_n − c) − b_k about c = the
    coordinate-wise median of the means (robust to a few far components), so that
    log w_k + log N(x_n; μ_k, Σ_k) = −½|z_nk|² + log-normaliser_k.
    full/tied: W (K·D, D), b (K·D,); diag/spherical: W = 1/σ (K, D), b (K, D)."""
    k, d = gmm.n_components, gmm.n_features
    centre = jax.lax.stop_gradient(jnp.median(gmm.means, axis=0))
    m = gmm.means - centre
    if gmm.covariance_type in ("full", "tied"):
        chol = _scale_tril(gmm)
        inv = _linalg.tril_inverse(chol)
        w = inv.reshape(k * d, d)
        b = jnp.einsum("kij,kj->ki", inv, m, precision=_PRECISION).reshape(k * d)
        logdet = _linalg.logdet_tril(chol)
    else:
        var = _diag_variances(gmm)
        w = jax.lax.rsqrt(var)
        b = m * w
        logdet = jnp.sum(jnp.log(var), axis=-1)
    norm = jnp.log(gmm.weights) - 0.5 * (logdet + d * _linalg.LOG_2PI)
    return centre, w, b, norm


def _whitened_sq_norms(x: jax.Array, gmm: GMM, params) -> jax.Array:
    """|z_nk|² (N, K) of the precise kernel, from `_whitening`'s params. x: (N, D)."""
    centre, w, b, _ = params
    k, d = gmm.n_components, gmm.n_features
    xc = x - centre
    if gmm.covariance_type in ("full", "tied"):
        z = (jnp.matmul(xc, w.T, precision=_PRECISION) - b).reshape(x.shape[0], k, d)
    else:
        z = xc[:, None, :] * w - b
    return jnp.sum(z * z, axis=-1)


def component_log_prob(x: jax.Array, gmm: GMM) -> jax.Array:
    """log N(x_n; μ_k, Σ_k) for all pairs. x: (N, D) -> (N, K). Through whitened residuals
    L_k⁻¹(x_n − μ_k) (one (N, D)×(D, K·D) matmul), accurate in float32 also for
    ill-conditioned covariances and far-apart components. A traced primitive: `log_prob`
    and `e_step` validate."""
    return _joint_log_prob(x, gmm) - jnp.log(gmm.weights)


def _joint_log_prob(x: jax.Array, gmm: GMM, params=None) -> jax.Array:
    """log w_k + log N(x_n; μ_k, Σ_k) (N, K) by the precise kernel; `params`: `_whitening(gmm)`
    when already computed."""
    params = _whitening(gmm) if params is None else params
    return -0.5 * _whitened_sq_norms(x, gmm, params) + params[3]


@jax.jit
def _log_prob(x, gmm):
    return logsumexp(_joint_log_prob(x, gmm), axis=-1)


def log_prob(x: jax.Array, gmm: GMM) -> jax.Array:
    """Mixture log density log p(x_n). x: (N, D) -> (N,)."""
    _check_gmm(gmm)
    _check_x(x, gmm.n_features)
    return _log_prob(_as_float(x, gmm), gmm)


@jax.jit
def _e_step(x, gmm):
    joint = _joint_log_prob(x, gmm)
    lse = logsumexp(joint, axis=-1, keepdims=True)
    return joint - lse, jnp.mean(lse)


def e_step(x: jax.Array, gmm: GMM) -> tuple[jax.Array, jax.Array]:
    """E step: log q(z_n = k) = log p(z = k | x_n) and the mean log-likelihood.
    x: (N, D) -> (log_resp (N, K), ()). Through Cholesky factors and log-sum-exp."""
    _check_x(x, gmm.n_features)
    _check_gmm(gmm)
    return _e_step(jnp.asarray(x), gmm)


@jax.jit
def _free_energy(x, gmm, resp):
    joint = _joint_log_prob(x, gmm)
    # Σ_k q log p(x, z) − Σ_k q log q, with 0·log 0 = 0 and 0·(−∞) = 0.
    energy = jnp.sum(jnp.where(resp > 0, resp * joint, 0.0), axis=-1)
    entropy = -jnp.sum(xlogy(resp, resp), axis=-1)
    return jnp.mean(energy + entropy)


def free_energy(x: jax.Array, gmm: GMM, resp: jax.Array) -> jax.Array:
    """Mean free energy (1/N) Σ_n [Σ_k q_nk log p(x_n, k) − Σ_k q_nk log q_nk].
    x: (N, D), resp q: (N, K) -> (). Equals the mean log-likelihood when q is the E step's."""
    _check_x(x, gmm.n_features)
    _check_gmm(gmm)
    _check_resp(resp, np.shape(x)[0], gmm.n_components)
    return _free_energy(jnp.asarray(x), gmm, jnp.asarray(resp))


@functools.partial(jax.jit, static_argnums=2)
def _sample(key, gmm, n):
    key_z, key_e = jax.random.split(key)
    z = jax.random.categorical(key_z, jnp.log(gmm.weights), shape=(n,))
    eps = jax.random.normal(key_e, (n, gmm.n_features), gmm.means.dtype)
    if gmm.covariance_type in ("full", "tied"):
        noise = jnp.einsum("nij,nj->ni", _scale_tril(gmm)[z], eps)
    else:
        noise = eps * jnp.sqrt(_diag_variances(gmm))[z]
    return gmm.means[z] + noise, z


def sample(key: jax.Array, gmm: GMM, n: int) -> tuple[jax.Array, jax.Array]:
    """Draw n points: returns (x (n, D), component labels z (n,))."""
    _check_gmm(gmm)
    if int(n) < 1:
        raise ValueError(f"`n` must be a positive integer; got {n!r}.")
    return _sample(key, gmm, int(n))


# ----------------------------------------------------------------------------------------------
# E step fused with sufficient statistics (the hot path)


def _n_features_phi(covariance_type: str, d: int) -> int:
    return d * (d + 1) // 2 if covariance_type in ("full", "tied") else d


def _features(xc: jax.Array, covariance_type: str) -> jax.Array:
    """Per-point features [second-moment part, x]: (n, F + D)."""
    if covariance_type in ("full", "tied"):
        second = _linalg.sym_outer_features(xc)
    else:
        second = xc * xc
    return jnp.concatenate([second, xc], axis=-1)


def _linear_log_prob_params(gmm: GMM, shift: jax.Array, precisions=None):
    """W (K, F + D), bias (K,) with log w_k + log N(x; μ_k, Σ_k) = φ(x − c) · W_k + bias_k;
    `precisions`: `_component_precisions(gmm)` when already computed."""
    d = gmm.n_features
    m = gmm.means - shift
    precision, logdet = _component_precisions(gmm) if precisions is None else precisions
    if gmm.covariance_type in ("full", "tied"):
        quad = _linalg.pack_sym(precision, 2.0)
        lam_m = jnp.einsum("kij,kj->ki", precision, m)
    else:
        quad = precision
        lam_m = m * precision
    w = jnp.concatenate([-0.5 * quad, lam_m], axis=-1)
    bias = (
        jnp.log(gmm.weights)
        - 0.5 * (logdet + d * _linalg.LOG_2PI)
        - 0.5 * jnp.sum(m * lam_m, axis=-1)
    )
    return w, bias


def _chunk_layout(n: int, d: int, covariance_type: str, chunk_size: int | None):
    feats = _n_features_phi(covariance_type, d) + d
    budget = _CHUNK_ELEMENTS.get(jax.default_backend(), _CHUNK_ELEMENTS_ACCELERATOR)
    max_rows = chunk_size or max(256, budget // feats)
    n_chunks = max(1, -(-n // max_rows))
    rows = -(-n // n_chunks)
    return n_chunks, rows


def _to_chunks(x: jax.Array, n_chunks: int, rows: int):
    """x: (N, D) -> xb (n_chunks, rows, D) zero-padded, mask (n_chunks, rows)."""
    n, d = x.shape
    pad = n_chunks * rows - n
    mask = jnp.ones((n,), x.dtype)
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, d), x.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((pad,), x.dtype)])
    return x.reshape(n_chunks, rows, d), mask.reshape(n_chunks, rows)


def _resp_and_log_prob(joint: jax.Array, m_rows: jax.Array):
    """joint: (R, K) log w_k + log N(x_r; k), m_rows: (R,) 1 = real point -> responsibilities
    (R, K) (zero on padding) and log p(x_r) (R,), with one exp pass: resp = e / Σe with
    e = exp(joint − max); log p(x) = max + log Σe."""
    top = jax.lax.stop_gradient(jnp.max(joint, axis=-1, keepdims=True))
    e = jnp.exp(joint - top)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e * (m_rows[:, None] / total), (top + jnp.log(total))[:, 0]


def _sum_over_chunks(one, xb, mask):
    """Σ over chunks i of one(xb[i], mask[i]) (a pytree). The first chunk seeds the sum
    (rather than zeros), so the carry has the same type as the chunks' stats, also inside
    `shard_map` where they vary across devices. A loop over indices (not a scan over xb[1:])
    reads the chunks in place, without copying xb."""

    def body(i, carry):
        return jax.tree_util.tree_map(jnp.add, carry, one(xb[i], mask[i]))

    return jax.lax.fori_loop(1, xb.shape[0], body, one(xb[0], mask[0]))


def _stats_chunked(xb, mask, gmm: GMM, shift, featurized: bool = False, precisions=None):
    """Fused E step + statistics over chunks (the fast kernel). xb: (C, R, D), mask: (C, R)
    (1 = real point), or with `featurized` the features xb = φ(x − shift): (C, R, F + D)
    (`_feature_chunks`). Returns (Stats about `shift` (D,), Σ_n log p(x_n)).

    log-densities are one matmul of φ(x − shift) against [−½Λ_k, Λ_k μ_k]: an expansion of the
    quadratic form whose round-off grows with |μ_k − shift|²·|Λ_k| (`_expansion_error`);
    `_em_update` uses it only where that is negligible and `_stats_precise` elsewhere.
    `precisions`: `_component_precisions(gmm)` when already computed."""
    w, bias = _linear_log_prob_params(gmm, shift, precisions)
    f = w.shape[-1]
    d = gmm.n_features

    def one(xc_rows, m_rows):
        phi = xc_rows if featurized else _features(xc_rows - shift, gmm.covariance_type)
        # Full float32 precision on accelerators (no TF32): the expanded quadratic form
        # needs it. No effect on CPU.
        joint = jnp.matmul(phi, w.T, precision=_PRECISION) + bias
        resp, lse = _resp_and_log_prob(joint, m_rows)
        moments = jnp.matmul(resp.T, phi, precision=_PRECISION)  # (K, F + D)
        return jnp.sum(m_rows), jnp.sum(resp, axis=0), moments, jnp.sum(lse * m_rows)

    count, nk, moments, sum_ll = _sum_over_chunks(one, xb, mask)
    second, first = moments[:, : f - d], moments[:, f - d :]
    if gmm.covariance_type in ("full", "tied"):
        second = _linalg.unpack_sym(second, d)
    return Stats(count, nk, first, second), sum_ll


def _stats_precise(xb, mask, gmm: GMM, centres: jax.Array | None = None):
    """Fused E step + statistics over chunks (the precise kernel). xb: (C, R, D), mask: (C, R).
    Returns (Stats about `centres` (K, D), default each component's own mean gmm.means;
    Σ_n log p(x_n)).

    log-densities from whitened residuals L_k⁻¹(x − μ_k) (`_whitening`), second moments
    Σ_n r_nk (x_n − c_k)(x_n − c_k)ᵀ from the differences themselves: round-off is relative to
    each component's own spread (when c_k is near its new mean: `_em_update` makes a second
    pass about the new means when they moved far), not to its distance from a global shift
    (outliers, data far from the origin) nor to the covariance's condition number. About
    twice the FLOPs of `_stats_chunked`."""
    centres = gmm.means if centres is None else centres
    params = _whitening(gmm)
    full = gmm.covariance_type in ("full", "tied")

    def one(x_rows, m_rows):
        joint = _joint_log_prob(x_rows, gmm, params)
        resp, lse = _resp_and_log_prob(joint, m_rows)
        diff = x_rows[:, None, :] - centres  # (R, K, D)
        weighted = resp[..., None] * diff
        if full:
            second = jnp.einsum("rkd,rke->kde", weighted, diff, precision=_PRECISION)
        else:
            second = jnp.sum(weighted * diff, axis=0)
        return (jnp.sum(m_rows), jnp.sum(resp, axis=0), jnp.sum(weighted, axis=0), second,
                jnp.sum(lse * m_rows))

    count, nk, first, second, sum_ll = _sum_over_chunks(one, xb, mask)
    return Stats(count, nk, first, second), sum_ll


# Largest `_expansion_error` at which an EM iteration uses the fast kernel. Measured (float32,
# responsibility-weighted error of log w_k N(x; k) against float64): about ρ/5 on average and
# 2ρ at most (synthetic N = 20,000, D = 16, K = 16: ρ = 5e-5; digits, reg_covar 1e-3: 6e-3;
# digits, reg_covar 1e-6: 5.3, errors up to 9 nats; three unit clusters + 30 points at 1e7: 60).
_FAST_KERNEL_MAX_ERROR = 1e-2


def _cancellation_error(m: jax.Array, precision: jax.Array) -> jax.Array:
    """eps·max_k |m_k|ᵀ|Λ_k||m_k| (): the relative round-off, in the metric of Σ_k, of second
    moments taken about points m_k: (K, D) away from the component means. precision: Λ_k
    (K, D, D), or 1/σ²_k (K, D) for diag/spherical (`_component_precisions`)."""
    if precision.ndim == 3:
        rho = jnp.einsum("ki,kij,kj->k", jnp.abs(m), jnp.abs(precision), jnp.abs(m))
    else:
        rho = jnp.sum(m * m * precision, axis=-1)
    return jnp.finfo(m.dtype).eps * jnp.max(rho)


def _expansion_error(gmm: GMM, shift: jax.Array, precision: jax.Array | None = None):
    """ρ = max_k eps·(|μ_k − c|ᵀ|Λ_k||μ_k − c| + Σ_ij |Λ_k,ij Σ_k,ij|) (): the scale, in nats,
    of the round-off of `_stats_chunked`'s expanded quadratic forms about c = `shift` for the
    points of each component, and (relative to Σ_k) of its second moments about c.
    `precision`: `_component_precisions(gmm)[0]` when already computed."""
    precision = _component_precisions(gmm)[0] if precision is None else precision
    m = gmm.means - shift
    eps = jnp.finfo(m.dtype).eps
    if gmm.covariance_type in ("full", "tied"):
        cov = jnp.broadcast_to(gmm.covariances, precision.shape)
        a = jnp.abs(precision)
        rho = jnp.einsum("ki,kij,kj->k", jnp.abs(m), a, jnp.abs(m)) + jnp.sum(
            a * jnp.abs(cov), axis=(-2, -1)
        )
    else:
        rho = jnp.sum(m * m * precision, axis=-1) + gmm.n_features
    return eps * jnp.max(rho)


def _per_restart(fn, *args):
    """fn mapped over axis 0 of its (pytree) args: `vmap`, or for a single restart a plain
    call (XLA:CPU runs the batched matmuls of a size-1 `vmap` 1.5x slower than plain ones:
    7.4 against 4.9 ms per diag iteration at N = 100,000, D = 16, K = 16)."""
    if jax.tree_util.tree_leaves(args)[0].shape[0] == 1:
        out = fn(*jax.tree_util.tree_map(lambda a: a[0], args))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(fn)(*args)


def _em_update(gmms: GMM, xb, mask, chunks, shift, featurized, reg_covar, prior, combine):
    """One EM iteration of restarts batched along axis 0: (new GMMs with their factors, mean
    log-likelihood (B,) of `gmms`).

    xb: (C, R, D), mask: (C, R); chunks: what the fast kernel reads (xb, or its features about
    `shift` (D,) when `featurized`). The E step runs the fast kernel where its round-off is
    negligible for every restart (`_expansion_error` < `_FAST_KERNEL_MAX_ERROR`) and the
    precise one otherwise: one `lax.cond`, so only one runs. `combine` maps local to global
    (Stats, Σ log p) (e.g. a `psum`). The covariances are factored with eigenvalues floored at
    reg_covar, positive definite by construction (`_with_scale_tril`)."""
    cov_type = gmms.covariance_type
    precisions = _per_restart(_component_precisions, gmms)
    errors = _per_restart(lambda g, p: _expansion_error(g, shift, p[0]), gmms, precisions)
    use_fast = jnp.all(errors < _FAST_KERNEL_MAX_ERROR)

    def fast(_):
        stats, sum_ll = combine(_per_restart(
            lambda g, p: _stats_chunked(chunks, mask, g, shift, featurized, p), gmms, precisions
        ))
        return stats, sum_ll, jnp.broadcast_to(shift, gmms.means.shape)

    def precise(_):
        stats, sum_ll = combine(_per_restart(lambda g: _stats_precise(xb, mask, g), gmms))
        # Second moments about the old means lose eps·|δ|ᵀ|Λ||δ| (relative, in the old
        # metric) when the means move by δ; past `_FAST_KERNEL_MAX_ERROR`/10, take them again
        # about the new means (the same responsibilities, so the same E step). Early
        # iterations pay it, rarely later ones.
        eps = 10.0 * jnp.finfo(stats.nk.dtype).eps
        moved = gmms.means + stats.sum_x / (stats.nk + eps)[..., None]
        drift = _per_restart(lambda dm, p: _cancellation_error(dm, p[0]), moved - gmms.means,
                             precisions)

        def again(_):
            local = _per_restart(lambda g, c: _stats_precise(xb, mask, g, c)[0], gmms, moved)
            return combine(local), moved

        stats, shifts = jax.lax.cond(jnp.any(drift > 0.1 * _FAST_KERNEL_MAX_ERROR), again,
                                     lambda _: (stats, gmms.means), None)
        return stats, sum_ll, shifts

    stats, sum_ll, shifts = jax.lax.cond(use_fast, fast, precise, None)
    new = _per_restart(
        lambda st, c: m_step_from_stats(st, c, covariance_type=cov_type, reg_covar=reg_covar,
                                        prior=prior),
        stats, shifts,
    )
    return _with_scale_tril(new, reg_covar), sum_ll / stats.count


def model_shift(gmm: GMM) -> jax.Array:
    """Σ_k w_k μ_k: the centre about which `fit` takes second moments (replicated across
    devices, and equal to the data mean after any M step). A traced primitive."""
    return jax.lax.stop_gradient(gmm.weights @ gmm.means)


def e_step_stats(
    x: jax.Array, gmm: GMM, shift: jax.Array | None = None, *, chunk_size: int | None = None
) -> tuple[Stats, jax.Array]:
    """E step fused with sufficient statistics: (Stats about `shift`, Σ_n log p(x_n)).

    x: (N, D); shift: (D,), default `model_shift(gmm)`. Pure and jit/vmap-able; processes x in
    chunks of `chunk_size` rows (default ≈ 2¹⁹/D² rows on CPU, 2²⁷/D² on accelerators), so
    no (N, D²) array is formed. The fast kernel (`_stats_chunked`): exact in exact arithmetic,
    in float32 only as accurate as `_expansion_error` says (`em_step` and `fit` choose between
    it and the precise kernel). A traced primitive: no argument checks; `fit` validates.
    """
    if shift is None:
        shift = model_shift(gmm)
    n_chunks, rows = _chunk_layout(x.shape[0], gmm.n_features, gmm.covariance_type, chunk_size)
    xb, mask = _to_chunks(x, n_chunks, rows)
    return _stats_chunked(xb, mask, gmm, shift)


def sufficient_stats(
    x: jax.Array, resp: jax.Array, shift: jax.Array | None = None, *,
    covariance_type: str = "full",
) -> Stats:
    """Stats of x: (N, D) under responsibilities resp: (N, K), about shift (D,) (default the
    mean of x). Second moments as matmuls: respᵀ @ [x_i x_j]. A traced primitive: no argument
    checks (`m_step` is the checked entry point)."""
    x = jnp.asarray(x)
    if shift is None:
        shift = jnp.mean(x, axis=0)
    xc = x - shift
    d = x.shape[-1]
    phi = _features(xc, covariance_type)
    moments = resp.T @ phi
    second, first = moments[:, :-d], moments[:, -d:]
    if covariance_type in ("full", "tied"):
        second = _linalg.unpack_sym(second, d)
    return Stats(jnp.asarray(x.shape[0], x.dtype), jnp.sum(resp, axis=0), first, second)


def _flush_roundoff(scatter, sum_xx, full):
    """Zero the scatter S − n δδᵀ of every dimension whose variance is below the round-off of
    that difference (64 eps · S_ii), with its row and column for full matrices (which keeps
    them positive semi-definite). A component on duplicated points then has an exactly
    singular covariance (caught as such) whatever the shift, not a tiny random one.
    scatter, sum_xx: (K, D, D) if `full` else (K, D)."""
    eps = jnp.finfo(scatter.dtype).eps
    var = jnp.diagonal(scatter, axis1=-2, axis2=-1) if full else scatter
    second = jnp.diagonal(sum_xx, axis1=-2, axis2=-1) if full else sum_xx
    keep = var > 64.0 * eps * second
    if full:
        keep = keep[..., :, None] & keep[..., None, :]
    return jnp.where(keep, scatter, 0.0)


def m_step_from_stats(
    stats: Stats, shift: jax.Array, *, covariance_type: str = "full",
    reg_covar: float = 1e-6, prior: Prior | None = None,
) -> GMM:
    """Closed-form M step (maximum likelihood, or MAP under `prior`) from `Stats` about `shift`.

    stats: one restart's Stats (K leading); shift: (D,), or (K, D) for statistics taken about
    per-component points (`_stats_precise`). Guards empty components like scikit-learn:
    n_k + 10·eps, so they get the prior/zero mean offset and `reg_covar` covariance instead of
    NaN. A traced primitive (no argument checks; it returns covariances only: `em_step` and
    `fit` add their floored Cholesky factors, `_with_scale_tril`).
    """
    dt = stats.sum_x.dtype
    d = stats.sum_x.shape[-1]
    eps = 10.0 * jnp.finfo(dt).eps
    nk = stats.nk + eps
    delta = stats.sum_x / nk[:, None]  # x̄_k − c
    full = covariance_type in ("full", "tied")
    if full:
        scatter = stats.sum_xx - nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
    else:
        scatter = stats.sum_xx - nk[:, None] * delta * delta
    scatter = _flush_roundoff(scatter, stats.sum_xx, full)
    eye = jnp.eye(d, dtype=dt)

    if prior is None:
        weights = nk / jnp.sum(nk)
        means = shift + delta
        if covariance_type == "full":
            cov = _linalg.symmetrize(scatter / nk[:, None, None]) + reg_covar * eye
        elif covariance_type == "tied":
            cov = _linalg.symmetrize(jnp.sum(scatter, axis=0) / jnp.sum(nk)) + reg_covar * eye
        elif covariance_type == "diag":
            cov = jnp.maximum(scatter / nk[:, None], 0.0) + reg_covar
        else:
            cov = jnp.mean(jnp.maximum(scatter / nk[:, None], 0.0), axis=-1) + reg_covar
        return GMM(weights, means, cov, covariance_type)

    alpha, m0, kappa0, nu0, psi0 = (jnp.asarray(p, dt) for p in prior)
    unnorm = nk + alpha - 1.0
    weights = unnorm / jnp.sum(unnorm)
    d0 = m0 - shift  # prior mean about the shift
    kappa_n = kappa0 + nk
    means = shift + (stats.sum_x + kappa0 * d0) / kappa_n[:, None]
    dev = delta - d0  # x̄_k − m0
    shrink = kappa0 * nk / kappa_n
    if covariance_type in ("full", "tied"):
        post = scatter + shrink[:, None, None] * dev[:, :, None] * dev[:, None, :]
        if covariance_type == "full":
            cov = (psi0 + post) / (nu0 + nk + d + 2.0)[:, None, None]
        else:  # one inverse-Wishart shared by all components, K normal priors on the means
            cov = (psi0 + jnp.sum(post, axis=0)) / (nu0 + jnp.sum(nk) + d + 1.0 + nk.shape[0])
        cov = _linalg.symmetrize(cov) + reg_covar * eye
    else:
        post = jnp.maximum(scatter, 0.0) + shrink[:, None] * dev * dev
        psi_diag = jnp.diagonal(psi0)
        if covariance_type == "diag":  # inverse-gamma per dimension (NIW with D = 1)
            cov = (psi_diag + post) / (nu0 + nk + 3.0)[:, None] + reg_covar
        else:  # one inverse-gamma(Dν0/2, tr Ψ0/2) per component over its D dimensions
            cov = (jnp.sum(psi_diag) + jnp.sum(post, axis=-1)) / (d * (nu0 + nk + 1.0) + 2.0)
            cov = cov + reg_covar
    return GMM(weights, means, cov, covariance_type)


def m_step(
    x: jax.Array, resp: jax.Array, covariance_type: str = "full", reg_covar: float = 1e-6,
    *, prior: Prior | None = None,
) -> GMM:
    """M step: the GMM maximising F(θ, q) for responsibilities q = resp.
    x: (N, D), resp: (N, K) rows summing to 1. Equals `sufficient_stats` + `m_step_from_stats`."""
    _check_x(x)
    _validate.check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    _check_resp(resp, np.shape(x)[0], None)
    _validate.check_number("reg_covar", reg_covar)
    return _m_step(jnp.asarray(x), jnp.asarray(resp), covariance_type, reg_covar, prior)


def _stats_about_means(x, resp, covariance_type: str) -> tuple[Stats, jax.Array]:
    """Stats of x: (N, D) under resp: (N, K) about the weighted means themselves (two passes:
    the means, then Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ one component at a time, so memory
    stays O(N·D)). -> (Stats, means (K, D))."""
    dt = x.dtype
    nk = jnp.sum(resp, axis=0)
    means = jnp.matmul(resp.T, x, precision=_PRECISION) / (nk + 10.0 * jnp.finfo(dt).eps)[:, None]

    def about(args):
        r, mu = args
        diff = x - mu
        weighted = r[:, None] * diff
        if covariance_type in ("full", "tied"):
            second = jnp.matmul(weighted.T, diff, precision=_PRECISION)
        else:
            second = jnp.sum(weighted * diff, axis=0)
        return jnp.sum(weighted, axis=0), second

    first, second = jax.lax.map(about, (resp.T, means))
    return Stats(jnp.asarray(x.shape[0], dt), nk, first, second), means


@functools.partial(jax.jit, static_argnums=(2,))
def _m_step(x, resp, covariance_type, reg_covar, prior):
    stats, means = _stats_about_means(x, resp.astype(x.dtype), covariance_type)
    gmm = m_step_from_stats(
        stats, means, covariance_type=covariance_type, reg_covar=reg_covar, prior=prior
    )
    return _with_scale_tril(gmm, reg_covar)


def _identity(t):
    return t


def em_step(
    x: jax.Array, gmm: GMM, *, reg_covar: float = 1e-6, prior: Prior | None = None,
    combine: Callable = _identity, chunk_size: int | None = None,
) -> tuple[GMM, jax.Array]:
    """One EM iteration: (new gmm, mean log-likelihood of `gmm` on x). x: (N, D).

    The iteration `fit` runs (`_em_update`): the fast or the precise E step kernel, whichever
    float32 round-off allows, then the M step and its covariances' floored factors. `combine`
    maps the local (Stats, Σ log p), batched along a leading axis of size 1, to the global
    one, e.g. `lambda t: jax.lax.psum(t, "data")` inside `shard_map`; the fast kernel's shift
    is `model_shift(gmm)`, the same on every device. A traced primitive: pure, no argument
    checks; jit it (or call it inside jit).
    """
    gmm = _with_scale_tril(gmm)
    n_chunks, rows = _chunk_layout(x.shape[0], gmm.n_features, gmm.covariance_type, chunk_size)
    xb, mask = _to_chunks(x, n_chunks, rows)
    batched = jax.tree_util.tree_map(lambda a: a[None], gmm)
    new, ll = _em_update(batched, xb, mask, xb, model_shift(gmm), False, reg_covar, prior,
                         combine)
    return jax.tree_util.tree_map(lambda a: a[0], new), ll[0]


# ----------------------------------------------------------------------------------------------
# Initialisation


def _sq_dists(x, centres):
    return _linalg.pairwise_sq_mahalanobis_diag(x, centres, jnp.ones_like(centres))


def kmeans_plusplus(key: jax.Array, x: jax.Array, n_components: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): centres (K, D) drawn from the rows of
    x: (N, D), each with probability ∝ squared distance to the nearest centre chosen so far.
    A traced primitive: no argument checks (`initialize` and `fit` validate)."""
    n = x.shape[0]
    keys = jax.random.split(key, n_components)
    first = jax.random.randint(keys[0], (), 0, n)
    centres = jnp.zeros((n_components, x.shape[1]), x.dtype).at[0].set(x[first])
    d2 = _sq_dists(x, centres[:1])[:, 0]

    def body(i, carry):
        centres, d2 = carry
        total = jnp.sum(d2)
        # All points on the chosen centres (duplicated data): fall back to uniform.
        logits = jnp.where(total > 0, jnp.log(jnp.maximum(d2, 0.0)), 0.0)
        idx = jax.random.categorical(keys[i], logits)
        centres = centres.at[i].set(x[idx])
        d2 = jnp.minimum(d2, _sq_dists(x, x[idx][None])[:, 0])
        return centres, d2

    centres, _ = jax.lax.fori_loop(1, n_components, body, (centres, d2))
    return centres


def _nearest_resp(x, centres):
    labels = jnp.argmin(_sq_dists(x, centres), axis=-1)
    return jax.nn.one_hot(labels, centres.shape[0], dtype=x.dtype)


def _kmeans(x, centres, steps):
    def body(_, c):
        resp = _nearest_resp(x, c)
        counts = jnp.sum(resp, axis=0)
        new = (resp.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, new, c)

    return jax.lax.fori_loop(0, steps, body, centres)


def _init_resp(key, x, n_components, init):
    if init == "kmeans++":
        centres = _kmeans(x, kmeans_plusplus(key, x, n_components), _KMEANS_STEPS)
        return _nearest_resp(x, centres)
    if init == "random_from_data":
        idx = jax.random.choice(key, x.shape[0], (n_components,), replace=False)
        return _nearest_resp(x, x[idx])
    resp = jax.random.uniform(key, (x.shape[0], n_components), x.dtype)
    return resp / jnp.sum(resp, axis=1, keepdims=True)


def initialize(
    key: jax.Array, x: jax.Array, n_components: int, *, covariance_type: str = "full",
    init: str = "kmeans++", reg_covar: float = 1e-6, prior: Prior | None = None,
) -> GMM:
    """Initial GMM: responsibilities from `init` ("kmeans++": k-means++ seeding + 10 Lloyd
    steps, hard assignment; "random_from_data": K random points as centres; "random": uniform
    random responsibilities, as scikit-learn) followed by one M step (MAP under `prior`).
    x: (N, D) -> GMM with K = n_components. Validates its arguments (traced x skips the value
    checks)."""
    n, d = _check_x(x)
    k = _check_n_components(n_components, n)
    _validate.check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    _validate.check_choice("init", init, INITS)
    _validate.check_number("reg_covar", reg_covar)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if prior is not None:
        prior = _check_prior(prior, d, x.dtype)
    resp = _init_resp(key, x, k, init)
    return _m_step(x, resp, covariance_type, reg_covar, prior)


# ----------------------------------------------------------------------------------------------
# Fit


def _feature_chunks(xb, mask, covariance_type, combine=_identity):
    """The fixed shift c (the data mean) of a fit and what its loop iterates over: the
    features φ(x − c): (C, R, F + D) when they fit in `_FEATURE_CACHE_BYTES`, else xb itself.
    Returns (chunks, c, featurized)."""
    total, count = combine((jnp.einsum("cr,crd->d", mask, xb), jnp.sum(mask)))
    shift = total / count
    n_feats = _n_features_phi(covariance_type, xb.shape[-1]) + xb.shape[-1]
    if mask.size * n_feats * xb.dtype.itemsize > _FEATURE_CACHE_BYTES:
        return xb, shift, False
    return jax.vmap(lambda c: _features(c - shift, covariance_type))(xb), shift, True


def _fit_batched(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine=_identity):
    """The on-device EM loop (`lax.while_loop`) of restarts batched along axis 0 of `gmm0s`,
    on chunked data xb: (C, R, D), mask: (C, R); `combine` goes to every step (e.g. a `psum`
    over a mesh axis inside `shard_map`). Returns a FitResult batched along axis 0.

    The restarts step together, each frozen once it has converged (what `vmap` of one loop
    would do); batching them by hand keeps the choice of E step kernel and the factor repair
    real `lax.cond`s, which under `vmap` would run both branches. The features φ(x − c) do not
    change during a fit, so (when they fit in memory) they are computed once and a fast-kernel
    iteration is two matmuls and a softmax per chunk."""
    dt = xb.dtype
    n_restarts = gmm0s.means.shape[0]
    chunks, shift, featurized = _feature_chunks(xb, mask, gmm0s.covariance_type, combine)
    gmm0s = _with_scale_tril(gmm0s)
    history = jnp.full((n_restarts, max_iter), jnp.nan, dt)
    neg_inf = jnp.full((n_restarts,), -jnp.inf, dt)
    it = jnp.zeros((n_restarts,), jnp.int32)
    done = jnp.zeros((n_restarts,), bool)
    if max_iter == 0:  # scikit-learn: the initial parameters, lower bound −∞
        return FitResult(gmm0s, neg_inf, it, done, history)

    def cond(state):
        _, _, _, done, _, step = state
        return (step < max_iter) & ~jnp.all(done)

    def body(state):
        gmms, ll, it, done, history, step = state
        new, new_ll = _em_update(gmms, xb, mask, chunks, shift, featurized, reg_covar, prior,
                                 combine)
        active = ~done

        def keep(n, o):
            return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

        gmms = jax.tree_util.tree_map(keep, new, gmms)
        history = history.at[:, step].set(jnp.where(active, new_ll, history[:, step]))
        done = done | (active & (jnp.abs(new_ll - ll) < tol))
        return gmms, keep(new_ll, ll), it + active, done, history, step + 1

    state = (gmm0s, neg_inf, it, done, history, jnp.zeros((), jnp.int32))
    gmms, ll, it, converged, history, _ = jax.lax.while_loop(cond, body, state)
    return FitResult(gmms, ll, it, converged, history)


def _initial_gmms(x, keys, k, cov, init, reg_covar, prior):
    """One initial GMM per key (batched along axis 0)."""
    return jax.vmap(lambda key: _m_step(x, _init_resp(key, x, k, init), cov, reg_covar, prior))(
        keys
    )


def _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine=_identity):
    """Run the EM loop from each of the batched initial GMMs and keep the best restart by
    final log-likelihood (a NaN fit never wins; ties go to the first)."""
    results = _fit_batched(xb, mask, gmm0s, max_iter, tol, reg_covar, prior, combine)
    ok = _all_finite(results.gmm) & ~jnp.isnan(results.log_likelihood)
    score = jnp.where(ok, results.log_likelihood, -jnp.inf)
    best = jnp.argmax(score)
    return jax.tree_util.tree_map(lambda a: a[best], results)


@functools.partial(jax.jit, static_argnames=("max_iter", "n_chunks", "rows", "init", "k", "cov"))
def _fit_from_keys(x, keys, *, k, cov, init, max_iter, tol, reg_covar, prior, n_chunks, rows):
    xb, mask = _to_chunks(x, n_chunks, rows)
    gmm0s = _initial_gmms(x, keys, k, cov, init, reg_covar, prior)
    return _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior)


def _fit_sharded(x, gmm0s, mesh, *, max_iter, tol, reg_covar, prior, chunk_size):
    """`_fit_restarts` with the rows of x split over the mesh's "data" axis: each device runs
    the fused E step on its rows and the Stats are `psum`-ed before every M step."""
    from jaxvi import distributed

    gmm0s = distributed.same_on_every_process(gmm0s)
    xb, mask = distributed.shard_chunks(
        x, mesh, lambda n: _chunk_layout(n, gmm0s.n_features, gmm0s.covariance_type, chunk_size)
    )
    return _sharded_fit_fn(mesh, max_iter)(xb, mask, gmm0s, tol, reg_covar, prior)


@functools.lru_cache(maxsize=16)
def _sharded_fit_fn(mesh, max_iter):
    """The jitted `shard_map` of the EM loop for one mesh (compiled once per shapes)."""
    from jaxvi import distributed

    def local(xb, mask, gmm0s, tol, reg_covar, prior):
        return _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior,
                             distributed.psum_data)

    return jax.jit(distributed.shard_map_data(local, mesh, 2, 4))


@functools.lru_cache(maxsize=16)
def _sharded_minibatch_fn(mesh):
    from jaxvi import distributed

    update = functools.partial(_minibatch_update, combine=distributed.psum_data)
    return jax.jit(distributed.shard_map_data(update, mesh, 2, 5))


def _all_finite(gmm):
    leaves = jax.tree_util.tree_leaves(gmm)
    n_batch = gmm.means.ndim - 2
    return functools.reduce(
        jnp.logical_and,
        [jnp.all(jnp.isfinite(a), axis=tuple(range(n_batch, a.ndim))) for a in leaves],
    )


def _raise_if_not_finite(result: FitResult) -> FitResult:
    if _validate.is_concrete(*jax.tree_util.tree_leaves(result)) and not bool(
        _all_finite(result.gmm)
    ):
        raise ValueError(
            "Fitting the mixture failed: some components have an ill-defined (singular) "
            "covariance, e.g. from collapsed or duplicated points. Increase `reg_covar`, "
            "pass a `prior`, decrease `n_components` or rescale `x`."
        )
    return result


@functools.partial(jax.jit, static_argnames=("max_iter", "n_chunks", "rows"))
def _fit_from_gmm(x, gmm, *, max_iter, tol, reg_covar, prior, n_chunks, rows):
    xb, mask = _to_chunks(x, n_chunks, rows)
    gmm0s = jax.tree_util.tree_map(lambda a: a[None], gmm)
    return _fit_restarts(xb, mask, gmm0s, max_iter, tol, reg_covar, prior)


def _lapack_scoped(fn):
    """Run `fn` with single-threaded LAPACK on CPU (`_linalg.single_threaded_lapack`) and
    wait for its result inside that scope."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _linalg.single_threaded_lapack():
            return jax.block_until_ready(fn(*args, **kwargs))

    return wrapper


@_lapack_scoped
def fit(
    x: jax.Array,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    init: str | GMM = "kmeans++",
    reg_covar: float = 1e-6,
    prior: Prior | None = None,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Fit a Gaussian mixture by EM. x: (N, D).

    The loop runs on device (`lax.while_loop`) until |Δ mean log-likelihood| < tol or
    `max_iter` iterations (tol = 0 runs exactly max_iter). `n_init` restarts from independent
    keys run batched (`vmap`) and the one with the highest final log-likelihood is kept.
    `init` is "kmeans++", "random", "random_from_data" or a `GMM` (warm start; then `n_init`
    is ignored). `prior` turns ML-EM into MAP-EM (see `Prior`). Returns a `FitResult`
    (computed; on CPU LAPACK runs single-threaded meanwhile, see `_linalg.single_threaded_lapack`).

    Memory: the per-point features φ(x − mean(x)) (D(D+1)/2 + D values per point for full and
    tied, 2D for diag and spherical) are computed once per fit when they take at most 1 GiB
    (`_FEATURE_CACHE_BYTES`), so each iteration is only matmuls and a softmax over them;
    beyond that they are recomputed chunk by chunk in every iteration.

    With a `mesh` (see `jaxvi.distributed.data_mesh`), the rows of x are split over its "data"
    axis and the sufficient statistics summed across devices (`psum`) before each M step: the
    result equals the single-device fit. The initial parameters are computed from x as given
    (with several processes, x is each process's own rows and the first process's
    initialisation is used everywhere).
    """
    n, d = _check_x(x)
    k = _check_n_components(n_components, n)
    _validate.check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    _validate.check_int("max_iter", max_iter, 0)
    _validate.check_number("tol", tol)
    _validate.check_number("reg_covar", reg_covar)
    if chunk_size is not None:
        _validate.check_int("chunk_size", chunk_size, 1)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if prior is not None:
        prior = _check_prior(prior, d, x.dtype)
    n_chunks, rows = _chunk_layout(n, d, covariance_type, chunk_size)
    common = dict(max_iter=int(max_iter), tol=jnp.asarray(tol, x.dtype),
                  reg_covar=jnp.asarray(reg_covar, x.dtype), prior=prior,
                  n_chunks=n_chunks, rows=rows)
    if isinstance(init, GMM):
        if init.covariance_type != covariance_type:
            raise ValueError(
                f"`init` has covariance_type {init.covariance_type!r} but `covariance_type` "
                f"is {covariance_type!r}."
            )
        _check_gmm(init, n_components=k, n_features=d, name="init")
        init = jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype), init)
        if mesh is None:
            return _raise_if_not_finite(_fit_from_gmm(x, init, **common))
        gmm0s = jax.tree_util.tree_map(lambda a: a[None], init)
    else:
        _validate.check_choice("init", init, INITS)
        _validate.check_int("n_init", n_init, 1)
        keys = jax.random.split(key, int(n_init))
        if mesh is None:
            return _raise_if_not_finite(
                _fit_from_keys(x, keys, k=k, cov=covariance_type, init=init, **common)
            )
        gmm0s = jax.jit(_initial_gmms, static_argnums=(2, 3, 4))(
            x, keys, k, covariance_type, init, common["reg_covar"], prior
        )
    from jaxvi import distributed

    distributed.check_mesh(mesh)
    return _raise_if_not_finite(_fit_sharded(
        x, gmm0s, mesh, max_iter=common["max_iter"], tol=common["tol"],
        reg_covar=common["reg_covar"], prior=prior, chunk_size=chunk_size,
    ))


# ----------------------------------------------------------------------------------------------
# Stepwise (online) EM


def _minibatch_update(xb, mask, gmm, running, shift, rho, reg_covar, combine=_identity):
    """One stepwise-EM update from a chunked batch xb: (C, R, D), mask: (C, R)."""
    stats, sum_ll = combine(_stats_chunked(xb, mask, gmm, shift))
    # Per-point stats, so batches of different sizes weigh the same per point.
    normalised = jax.tree_util.tree_map(lambda a: a / stats.count, stats)
    running = jax.tree_util.tree_map(lambda r, s: (1 - rho) * r + rho * s, running, normalised)
    new = m_step_from_stats(running, shift, covariance_type=gmm.covariance_type,
                            reg_covar=reg_covar)
    return _with_scale_tril(new, reg_covar), running, sum_ll / stats.count


_minibatch_step = jax.jit(_minibatch_update)


@_lapack_scoped
def fit_minibatch(
    batches: Iterable,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    kappa: float = 0.6,
    max_steps: int | None = None,
    tol: float = 0.0,
    init: str | GMM = "kmeans++",
    reg_covar: float = 1e-6,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Stepwise EM (Cappé & Moulines 2009) on running averages of per-point `Stats`.

    `batches` yields arrays (B_t, D) (any iterable, e.g. a generator over files; B_t may vary).
    Step t ≥ 1 sets s ← (1 − ρ_t) s + ρ_t ŝ(batch_t; θ) with ρ_t = (t + 2)^(−κ), κ ∈ (0.5, 1],
    then θ ← M step(s); s starts from the first batch's statistics under the initial θ
    (from `init` on the first batch, or a given GMM). Each step is jitted; the loop over
    batches is host-side. Returns a `FitResult` whose `history` (length = steps taken, no
    padding) holds each batch's mean log-likelihood before its update, `log_likelihood` the
    last one, `n_iter` the number of batches, and `converged` whether the last change of the
    batch log-likelihood was below `tol` (never with the default tol = 0).
    With a `mesh`, each batch's rows are split over its "data" axis and the batch statistics
    summed across devices, as in `fit`.
    """
    if not 0.5 < float(kappa) <= 1.0:
        raise ValueError(f"`kappa` must be in (0.5, 1]; got {kappa!r}.")
    _validate.check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    if max_steps is not None:
        _validate.check_int("max_steps", max_steps, 1)
    _validate.check_number("tol", tol)
    _validate.check_number("reg_covar", reg_covar)
    iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("`batches` must yield at least one batch; got none.") from None
    n, d = _check_x(first, name="batches")
    first = jnp.asarray(first)
    if isinstance(init, GMM):
        _check_gmm(init, n_components=n_components, n_features=d, name="init")
        gmm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, first.dtype), init)
    else:
        k = _check_n_components(n_components, n)
        _validate.check_choice("init", init, INITS)
        gmm = initialize(key, first, k, covariance_type=covariance_type, init=init,
                         reg_covar=reg_covar)
    shift = jnp.mean(first, axis=0)
    reg = jnp.asarray(reg_covar, first.dtype)
    gmm = _with_scale_tril(gmm)  # the same pytree structure in every step
    # Zero running statistics of the right shapes (shapes only: no E step is run for them).
    shapes, _ = jax.eval_shape(lambda: e_step_stats(first, gmm, shift, chunk_size=chunk_size))
    running = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

    def layout(n_rows):
        return _chunk_layout(n_rows, d, gmm.covariance_type, chunk_size)

    if mesh is None:
        step = _minibatch_step

        def chunks(batch):
            return _to_chunks(batch, *layout(batch.shape[0]))
    else:
        from jaxvi import distributed

        distributed.check_mesh(mesh)
        gmm, shift = distributed.same_on_every_process((gmm, shift))
        step = _sharded_minibatch_fn(mesh)

        def chunks(batch):
            return distributed.shard_chunks(batch, mesh, layout)
    history = []
    t = 0
    batch = first
    while True:
        rho = jnp.asarray(1.0 if t == 0 else (t + 2.0) ** (-float(kappa)), first.dtype)
        gmm, running, ll = step(*chunks(batch), gmm, running, shift, rho, reg)
        history.append(ll)
        t += 1
        if max_steps is not None and t >= max_steps:
            break
        try:
            batch = next(iterator)
        except StopIteration:
            break
        _check_x(batch, d, name="batches")
        batch = jnp.asarray(batch, first.dtype)
    hist = jnp.stack(history)
    converged = (
        jnp.abs(hist[-1] - hist[-2]) < tol if len(history) > 1 else jnp.zeros((), bool)
    )
    return FitResult(gmm, hist[-1], jnp.asarray(t), converged, hist)


# ----------------------------------------------------------------------------------------------
# Information criteria


def n_parameters(gmm: GMM) -> int:
    """Free parameters: K−1 weights, K·D means and the covariances (scikit-learn's count)."""
    _check_gmm(gmm)
    k, d = gmm.n_components, gmm.n_features
    cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
           "spherical": k}[gmm.covariance_type]
    return int(cov + k * d + k - 1)


def bic(x: jax.Array, gmm: GMM) -> jax.Array:
    """Bayesian information criterion −2 log L + p log N (lower is better). x: (N, D)."""
    n = np.shape(x)[0] if np.ndim(x) == 2 else 0
    return -2.0 * jnp.sum(log_prob(x, gmm)) + n_parameters(gmm) * math.log(max(n, 1))


def aic(x: jax.Array, gmm: GMM) -> jax.Array:
    """Akaike information criterion −2 log L + 2p (lower is better). x: (N, D)."""
    return -2.0 * jnp.sum(log_prob(x, gmm)) + 2 * n_parameters(gmm)


# ----------------------------------------------------------------------------------------------
# Validation (public boundary, outside jit)


def _as_float(x, gmm: GMM) -> jax.Array:
    """x as a JAX array, cast to the mixture's float dtype when it is not floating."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(gmm.means.dtype)


def _check_x(x, n_features: int | None = None, name: str = "x") -> tuple[int, int]:
    _validate.check_ndim(name, x, 2, "(n_samples, n_features)")
    n, d = np.shape(x)
    if n < 1 or d < 1:
        raise ValueError(f"`{name}` must have at least one sample and one feature; "
                         f"got shape {np.shape(x)}.")
    if n_features is not None and d != n_features:
        raise ValueError(f"`{name}` must have {n_features} features (columns) to match the "
                         f"model; got {d}.")
    _validate.check_finite(name, x)
    return n, d


def _check_n_components(n_components, n_samples: int) -> int:
    if isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1:
        raise ValueError(f"`n_components` must be a positive integer; got {n_components!r}.")
    if n_components > n_samples:
        raise ValueError(
            f"`n_components` must be at most n_samples = {n_samples}; got {n_components}."
        )
    return int(n_components)


def _check_resp(resp, n_samples: int, n_components: int | None) -> None:
    _validate.check_ndim("resp", resp, 2, "(n_samples, n_components)")
    if np.shape(resp)[0] != n_samples:
        raise ValueError(f"`resp` must have one row per sample ({n_samples}); "
                         f"got shape {np.shape(resp)}.")
    if n_components is not None and np.shape(resp)[1] != n_components:
        raise ValueError(f"`resp` must have {n_components} columns; got shape {np.shape(resp)}.")
    _validate.check_finite("resp", resp)
    if _validate.is_concrete(resp):
        r = np.asarray(resp)
        tol = 1e-4 if r.dtype == np.float32 else 1e-8
        if np.any(r < 0) or not np.allclose(r.sum(axis=1), 1.0, rtol=0, atol=tol):
            worst = float(np.max(np.abs(r.sum(axis=1) - 1.0)))
            raise ValueError(
                f"`resp` must be non-negative with rows summing to 1; got a row sum off by "
                f"{worst:.3g} (min entry {float(r.min()):.3g})."
            )


def _check_gmm(gmm, n_components=None, n_features=None, name="gmm") -> None:
    if not isinstance(gmm, GMM):
        raise ValueError(f"`{name}` must be a jaxvi.em.GMM; got {type(gmm).__name__}.")
    _validate.check_choice(f"{name}.covariance_type", gmm.covariance_type, COVARIANCE_TYPES)
    _validate.check_ndim(f"{name}.means", gmm.means, 2, "(n_components, n_features)")
    k, d = np.shape(gmm.means)
    if n_components is not None and k != n_components:
        raise ValueError(f"`{name}` must have {n_components} components; got {k}.")
    if n_features is not None and d != n_features:
        raise ValueError(f"`{name}` must have {n_features} features; got {d}.")
    if np.shape(gmm.weights) != (k,):
        raise ValueError(f"`{name}.weights` must have shape ({k},); "
                         f"got {np.shape(gmm.weights)}.")
    want = _covariance_shape(gmm.covariance_type, k, d)
    if np.shape(gmm.covariances) != want:
        raise ValueError(f"`{name}.covariances` must have shape {want} for covariance_type "
                         f"{gmm.covariance_type!r}; got {np.shape(gmm.covariances)}.")
    _validate.check_positive(f"{name}.weights", gmm.weights)
    if _validate.is_concrete(gmm.weights):
        w = np.asarray(gmm.weights, np.float64)
        tol = 1e-4 if np.asarray(gmm.weights).dtype == np.float32 else 1e-6
        if abs(float(w.sum()) - 1.0) > tol:
            raise ValueError(f"`{name}.weights` must sum to 1; got {float(w.sum())!r}.")
    _validate.check_finite(f"{name}.means", gmm.means)
    if gmm.covariance_type not in ("full", "tied"):
        _validate.check_positive(f"{name}.covariances", gmm.covariances)
    elif gmm.scale_tril is None:
        _validate.check_positive_definite(f"{name}.covariances", gmm.covariances)
    else:  # the factors are what densities use (a float32 product may round to singular)
        _validate.check_finite(f"{name}.covariances", gmm.covariances)
    if gmm.scale_tril is not None:
        if gmm.covariance_type not in ("full", "tied"):
            raise ValueError(f"`{name}.scale_tril` must be None for covariance_type "
                             f"{gmm.covariance_type!r}; got shape {np.shape(gmm.scale_tril)}.")
        if np.shape(gmm.scale_tril) != want:
            raise ValueError(f"`{name}.scale_tril` must have shape {want} (the covariances' "
                             f"Cholesky factors); got {np.shape(gmm.scale_tril)}.")
        _validate.check_tril_scale(f"{name}.scale_tril", gmm.scale_tril)


def _check_prior(prior: Prior, d: int, dtype) -> Prior:
    if not isinstance(prior, Prior):
        raise ValueError(f"`prior` must be a jaxvi.em.Prior; got {type(prior).__name__}.")
    prior = Prior(*(jnp.asarray(p, dtype) for p in prior))
    if prior.mean_prior.shape != (d,):
        raise ValueError(f"`prior.mean_prior` must have shape ({d},); "
                         f"got {prior.mean_prior.shape}.")
    if prior.covariance_prior.shape != (d, d):
        raise ValueError(f"`prior.covariance_prior` must have shape ({d}, {d}); "
                         f"got {prior.covariance_prior.shape}.")
    if float(prior.weight_concentration) < 1:
        raise ValueError("`prior.weight_concentration` must be >= 1 (a MAP mode exists); "
                         f"got {float(prior.weight_concentration)!r}.")
    _validate.check_positive("prior.mean_precision", prior.mean_precision)
    if float(prior.degrees_of_freedom) <= d - 1:
        raise ValueError(f"`prior.degrees_of_freedom` must be > n_features − 1 = {d - 1}; "
                         f"got {float(prior.degrees_of_freedom)!r}.")
    _validate.check_positive_definite("prior.covariance_prior", prior.covariance_prior)
    return prior
