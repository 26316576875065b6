"""The E step fused with sufficient statistics (the hot path): per-point features, chunking,
the fast and the precise statistics kernels and the round-off estimates that choose between
them, `e_step_stats` and `sufficient_stats`.

There is no loop over components: log N(x_n; μ_k, Σ_k) for all (n, k) is one matmul of
per-point features φ(x) = [x_i x_j (i ≤ j), x_i] against per-component weights
[−½Λ_k, Λ_k μ_k], and the same features give the second moments as respᵀ @ features. Data are
processed in chunks, so memory stays O(chunk · D²) whatever N is. `Stats` are sums over
points, so Stats from disjoint shards add up (`psum`); second moments are taken about a shift
(`model_shift`) so that E[x xᵀ] − μ μᵀ does not cancel catastrophically for data far from the
origin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvi import _linalg
from jaxvi.em import covariance
from jaxvi.em.kernels import joint_log_prob, whitening
from jaxvi.em.model import GMM, MATMUL_PRECISION, Stats, component_precisions

# Rows × features per chunk of the fused E step: small on CPU (cache-sized chunks), large on
# accelerators (few big kernels).
_CHUNK_ELEMENTS = {"cpu": 1 << 21}
_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26
# `fit` computes the features φ(x − c) once, before its loop, when they take at most this many
# bytes (x and c are fixed during a fit); larger data recompute them in every iteration.
_FEATURE_CACHE_BYTES = 1 << 30
# Largest `expansion_error` at which an EM iteration uses the fast kernel.
FAST_KERNEL_MAX_ERROR = 1e-2


def model_shift(gmm: GMM) -> jax.Array:
    """Σ_k w_k μ_k: the centre about which `fit` takes second moments.

    Replicated across devices, and equal to the data mean after any M step. A traced
    primitive.

    Args:
      gmm: the mixture.

    Returns:
      (D,) the mixture mean (gradient stopped).
    """
    return jax.lax.stop_gradient(gmm.weights @ gmm.means)


def chunk_layout(n: int, d: int, covariance_type: str, chunk_size: int | None):
    """The chunk layout of N points in D dimensions.

    Args:
      n: N points.
      d: D dimensions.
      covariance_type: "full", "tied", "diag" or "spherical" (the features per point).
      chunk_size: rows per chunk, or None: as many as the backend's feature budget allows.

    Returns:
      (n_chunks, rows per chunk).
    """
    feats = covariance.of(covariance_type).n_point_features(d)
    budget = _CHUNK_ELEMENTS.get(jax.default_backend(), _CHUNK_ELEMENTS_ACCELERATOR)
    max_rows = chunk_size or max(256, budget // feats)
    n_chunks = max(1, -(-n // max_rows))
    rows = -(-n // n_chunks)
    return n_chunks, rows


def to_chunks(x: jax.Array, n_chunks: int, rows: int, weights: jax.Array | None = None):
    """x as zero-padded chunks and each row's weight in every sum of the E step.

    Args:
      x: (N, D) points.
      n_chunks: C chunks.
      rows: R rows per chunk, C·R ≥ N.
      weights: (N,) sample weights, or None (1).

    Returns:
      (xb, mask): (C, R, D) zero-padded rows and (C, R) row weights, 0 on padding.
    """
    n, d = x.shape
    pad = n_chunks * rows - n
    mask = jnp.ones((n,), x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, d), x.dtype)])
        mask = jnp.concatenate([mask, jnp.zeros((pad,), x.dtype)])
    return x.reshape(n_chunks, rows, d), mask.reshape(n_chunks, rows)


def feature_chunks(xb, mask, covariance_type, combine):
    """The fixed shift c (the data mean) of a fit and what its loop iterates over.

    The features φ(x − c) when they fit in `_FEATURE_CACHE_BYTES`, else xb itself.

    Args:
      xb: (C, R, D) chunked rows.
      mask: (C, R) row weights.
      covariance_type: "full", "tied", "diag" or "spherical".
      combine: maps local to global sums (e.g. a `psum`).

    Returns:
      (chunks, c, featurized): (C, R, F + D) features or xb, c (D,), and whether featurized.
    """
    kind = covariance.of(covariance_type)
    total, count = combine((jnp.einsum("cr,crd->d", mask, xb), jnp.sum(mask)))
    shift = total / count
    n_feats = kind.n_point_features(xb.shape[-1])
    if mask.size * n_feats * xb.dtype.itemsize > _FEATURE_CACHE_BYTES:
        return xb, shift, False
    return jax.vmap(lambda c: kind.point_features(c - shift))(xb), shift, True


def _expanded_log_prob_params(gmm: GMM, shift: jax.Array, precisions=None):
    """W (K, F + D), bias (K,) with log w_k + log N(x; μ_k, Σ_k) = φ(x − c) · W_k + bias_k;
    `precisions`: `component_precisions(gmm)` when already computed."""
    d = gmm.n_features
    m = gmm.means - shift
    precision, logdet = component_precisions(gmm) if precisions is None else precisions
    if covariance.of(gmm.covariance_type).matrix:
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


def _resp_and_log_prob(joint: jax.Array, m_rows: jax.Array):
    """joint: (R, K) log w_k + log N(x_r; k), m_rows: (R,) row weights -> responsibilities
    times row weights (R, K) (zero on padding) and log p(x_r) (R,), with one exp pass:
    resp = e / Σe with e = exp(joint − max); log p(x) = max + log Σe."""
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


def e_step_stats_fast(xb, mask, gmm: GMM, shift, featurized: bool = False, precisions=None):
    """Fused E step + statistics over chunks (the fast kernel).

    log-densities are one matmul of φ(x − shift) against [−½Λ_k, Λ_k μ_k]: an expansion of the
    quadratic form whose round-off grows with |μ_k − shift|²·|Λ_k| (`expansion_error`); an EM
    iteration uses it only where that is negligible and `e_step_stats_precise` elsewhere.

    Args:
      xb: (C, R, D) rows, or with `featurized` the features φ(x − shift) (C, R, F + D)
        (`feature_chunks`).
      mask: (C, R) each row's weight: 1 or its sample weight, 0 = padding.
      gmm: the mixture.
      shift: (D,) the point the features and Stats are about.
      featurized: whether xb holds features.
      precisions: `component_precisions(gmm)` when already computed, else None.

    Returns:
      (stats, sum_ll): `Stats` about `shift`, and Σ_n w_n log p(x_n) ().
    """
    kind = covariance.of(gmm.covariance_type)
    w, bias = _expanded_log_prob_params(gmm, shift, precisions)
    f = w.shape[-1]
    d = gmm.n_features

    def one(xc_rows, m_rows):
        phi = xc_rows if featurized else kind.point_features(xc_rows - shift)
        joint = jnp.matmul(phi, w.T, precision=MATMUL_PRECISION) + bias
        resp, lse = _resp_and_log_prob(joint, m_rows)
        moments = jnp.matmul(resp.T, phi, precision=MATMUL_PRECISION)  # (K, F + D)
        return jnp.sum(m_rows), jnp.sum(resp, axis=0), moments, jnp.sum(lse * m_rows)

    count, nk, moments, sum_ll = _sum_over_chunks(one, xb, mask)
    second, first = moments[:, : f - d], moments[:, f - d :]
    return Stats(count, nk, first, kind.unpack(second, d)), sum_ll


def e_step_stats_precise(xb, mask, gmm: GMM, centres: jax.Array | None = None):
    """Fused E step + statistics over chunks (the precise kernel).

    log-densities from whitened residuals L_k⁻¹(x − μ_k) (`whitening`), second moments
    Σ_n r_nk (x_n − c_k)(x_n − c_k)ᵀ from the differences themselves: round-off is relative to
    each component's own spread (when c_k is near its new mean: an EM iteration makes a second
    pass about the new means when they moved far), not to its distance from a global shift
    (outliers, data far from the origin) nor to the covariance's condition number. About
    twice the FLOPs of `e_step_stats_fast`.

    Args:
      xb: (C, R, D) rows.
      mask: (C, R) row weights, as `e_step_stats_fast`.
      gmm: the mixture.
      centres: (K, D) the points c_k the Stats are about, default gmm.means.

    Returns:
      (stats, sum_ll): `Stats` about `centres`, and Σ_n log p(x_n) () (weighted).
    """
    centres = gmm.means if centres is None else centres
    params = whitening(gmm)
    matrix = covariance.of(gmm.covariance_type).matrix

    def one(x_rows, m_rows):
        joint = joint_log_prob(x_rows, gmm, params)
        resp, lse = _resp_and_log_prob(joint, m_rows)
        diff = x_rows[:, None, :] - centres  # (R, K, D)
        weighted = resp[..., None] * diff
        if matrix:
            second = jnp.einsum("rkd,rke->kde", weighted, diff, precision=MATMUL_PRECISION)
        else:
            second = jnp.sum(weighted * diff, axis=0)
        return (jnp.sum(m_rows), jnp.sum(resp, axis=0), jnp.sum(weighted, axis=0), second,
                jnp.sum(lse * m_rows))

    count, nk, first, second, sum_ll = _sum_over_chunks(one, xb, mask)
    return Stats(count, nk, first, second), sum_ll


def log_likelihood_sum(xb, mask, gmm: GMM) -> jax.Array:
    """Σ_n w_n log p(x_n) over chunks, by the precise kernel (whitened residuals about each mean).

    Args:
      xb: (C, R, D) rows.
      mask: (C, R) row weights (0 = padding).
      gmm: the mixture.

    Returns:
      () the weighted sum.
    """
    params = whitening(gmm)

    def one(x_rows, m_rows):
        lse = jax.nn.logsumexp(joint_log_prob(x_rows, gmm, params), axis=-1)
        return jnp.sum(jnp.where(m_rows > 0, lse * m_rows, 0.0))

    return _sum_over_chunks(one, xb, mask)


def cancellation_error(m: jax.Array, precision: jax.Array) -> jax.Array:
    """The relative round-off of second moments taken about points m_k off the component means.

    eps·max_k |m_k|ᵀ|Λ_k||m_k|, in the metric of Σ_k.

    Args:
      m: (K, D) the offsets from the component means.
      precision: Λ_k (K, D, D), or 1/σ²_k (K, D) for diag/spherical (`component_precisions`).

    Returns:
      () the error.
    """
    if precision.ndim == 3:
        rho = jnp.einsum("ki,kij,kj->k", jnp.abs(m), jnp.abs(precision), jnp.abs(m))
    else:
        rho = jnp.sum(m * m * precision, axis=-1)
    return jnp.finfo(m.dtype).eps * jnp.max(rho)


def expansion_error(gmm: GMM, shift: jax.Array, precision: jax.Array | None = None):
    """The scale, in nats, of the round-off of `e_step_stats_fast`'s expanded quadratic forms.

    ρ = max_k eps·(|μ_k − c|ᵀ|Λ_k||μ_k − c| + Σ_ij |Λ_k,ij Σ_k,ij|), about c = `shift`, for the
    points of each component, and (relative to Σ_k) of its second moments about c.

    Args:
      gmm: the mixture.
      shift: (D,) c.
      precision: `component_precisions(gmm)[0]` when already computed, else None.

    Returns:
      () ρ.
    """
    precision = component_precisions(gmm)[0] if precision is None else precision
    m = gmm.means - shift
    eps = jnp.finfo(m.dtype).eps
    if covariance.of(gmm.covariance_type).matrix:
        cov = jnp.broadcast_to(gmm.covariances, precision.shape)
        a = jnp.abs(precision)
        rho = jnp.einsum("ki,kij,kj->k", jnp.abs(m), a, jnp.abs(m)) + jnp.sum(
            a * jnp.abs(cov), axis=(-2, -1)
        )
    else:
        rho = jnp.sum(m * m * precision, axis=-1) + gmm.n_features
    return eps * jnp.max(rho)


def e_step_stats(
    x: jax.Array, gmm: GMM, shift: jax.Array | None = None, *,
    sample_weight: jax.Array | None = None, chunk_size: int | None = None,
) -> tuple[Stats, jax.Array]:
    """E step fused with sufficient statistics.

    `sample_weight` multiplies each point's contribution to every sum (count = Σ w_n,
    n_k = Σ w_n r_nk, ...), so integer weights equal repeating rows. Pure and jit/vmap-able;
    processes x in chunks of `chunk_size` rows (default ≈ 2¹⁹/D² rows on CPU, 2²⁷/D² on
    accelerators), so no (N, D²) array is formed. The fast kernel (`e_step_stats_fast`):
    exact in exact arithmetic, in float32 only as accurate as `expansion_error` says
    (`em_step` and `fit` choose between it and the precise kernel). A traced primitive: no
    argument checks; `fit` validates.

    Args:
      x: (N, D) points.
      gmm: the mixture of the E step.
      shift: (D,) the point second moments are taken about, default `model_shift(gmm)`.
      sample_weight: (N,) ≥ 0, default 1.
      chunk_size: rows per chunk (default: from the backend's budget).

    Returns:
      (stats, sum_ll): `Stats` about `shift` and Σ_n w_n log p(x_n) ().
    """
    if shift is None:
        shift = model_shift(gmm)
    n_chunks, rows = chunk_layout(x.shape[0], gmm.n_features, gmm.covariance_type, chunk_size)
    xb, mask = to_chunks(x, n_chunks, rows, sample_weight)
    return e_step_stats_fast(xb, mask, gmm, shift)


def sufficient_stats(
    x: jax.Array, resp: jax.Array, shift: jax.Array | None = None, *,
    covariance_type: str = "full", sample_weight: jax.Array | None = None,
) -> Stats:
    """Sufficient statistics of x under given responsibilities.

    Second moments as matmuls: respᵀ @ [x_i x_j]. A traced primitive: no argument checks
    (`m_step` is the checked entry point).

    Args:
      x: (N, D) points.
      resp: (N, K) responsibilities.
      shift: (D,) the point moments are about, default the weighted mean of x.
      covariance_type: "full", "tied", "diag" or "spherical" (which second moments to keep).
      sample_weight: (N,) ≥ 0, default 1.

    Returns:
      `Stats` about `shift`.
    """
    kind = covariance.of(covariance_type)
    x = jnp.asarray(x)
    if sample_weight is None:
        count = jnp.asarray(x.shape[0], x.dtype)
    else:
        sample_weight = jnp.asarray(sample_weight, x.dtype)
        resp = resp * sample_weight[:, None]
        count = jnp.sum(sample_weight)
    if shift is None:
        shift = weighted_mean(x, sample_weight)
    xc = x - shift
    d = x.shape[-1]
    phi = kind.point_features(xc)
    moments = resp.T @ phi
    second, first = moments[:, :-d], moments[:, -d:]
    return Stats(count, jnp.sum(resp, axis=0), first, kind.unpack(second, d))


def weighted_mean(x: jax.Array, sample_weight: jax.Array | None = None) -> jax.Array:
    """Σ_n w_n x_n / Σ_n w_n, or the plain mean for sample_weight None.

    Args:
      x: (N, D) points.
      sample_weight: (N,) weights, or None.

    Returns:
      (D,) the mean.
    """
    if sample_weight is None:
        return jnp.mean(x, axis=0)
    w = jnp.asarray(sample_weight, x.dtype)
    return (w @ x) / jnp.sum(w)


def weighted_covariance(x: jax.Array, sample_weight: jax.Array | None = None) -> jax.Array:
    """The covariance of x with ddof 1, the rows as frequency weights (`jnp.cov` for None).

    That of x with row n repeated w_n times: divided by Σ w − 1.

    Args:
      x: (N, D) points.
      sample_weight: (N,) frequency weights, or None.

    Returns:
      (D, D) the covariance.
    """
    if sample_weight is None:
        return jnp.atleast_2d(jnp.cov(x.T))
    w = jnp.asarray(sample_weight, x.dtype)
    xc = x - weighted_mean(x, w)
    return (xc.T * w) @ xc / (jnp.sum(w) - 1.0)
