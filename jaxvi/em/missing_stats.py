"""The E step fused with the expected sufficient statistics of data with missing entries
(`jaxvi.em.missing`), in a fast and a precise kernel, as for complete data (`jaxvi.em.stats`).

Both visit chunks of one missing pattern p each and sum, per component, the statistics of the
zero-filled residuals ũ = o ⊙ (x − μ_k): n_k, Σ r ũ and Σ r ũ ũᵀ; `expected_stats` turns
them into Stats about the means, Σ r (x̂ − μ_k) = T Σ r ũ and
Σ r E[(x − μ_k)(x − μ_k)ᵀ | x_o] = T (Σ r ũ ũᵀ) Tᵀ + n_k Cov[x | x_o]. The fast kernel reads
the features φ(y) of y = o ⊙ (x − c) about a fixed shift c (computed once per fit): log
densities are one matmul against per-(pattern, component) weights [−½Λ̃, Λ̃ m̃] (Λ̃ = Σ_oo⁻¹
embedded, m̃ = o ⊙ (μ_k − c)) and the moments respᵀ φ(y), whose expansion about c costs
round-off ∝ |m̃|ᵀ|Λ̃||m̃| (`missing_expansion_error`); the precise one uses whitened residuals
and sums ũ ũᵀ itself, at many times the cost on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvi import _linalg
from jaxvi.em import covariance
from jaxvi.em.missing import MissingData, PatternFactors, chunk_posterior, pattern_factors
from jaxvi.em.model import GMM, MATMUL_PRECISION, Stats
from jaxvi.em.stats import _FEATURE_CACHE_BYTES, _resp_and_log_prob, _sum_over_chunks


def expected_stats(nk, first, second, trans, cond):
    """Stats fields of one pattern about the means, from those of its zero-filled residuals.

    Args:
      nk: (K,) Σ r.
      first: (K, D) Σ r ũ.
      second: (K, D, D) or (K, D) Σ r ũ ũᵀ (or its diagonal).
      trans: the pattern's `PatternFactors.trans` (K, D, D), None for diag/spherical.
      cond: the pattern's `PatternFactors.cond` (K, D, D) or (K, D).

    Returns:
      (first, second): Σ r (x̂ − μ_k) (K, D) and Σ r E[(x − μ_k)(x − μ_k)ᵀ | x_o] (K, D, D),
      or its diagonal (K, D).
    """
    if trans is None:
        return first, second + nk[:, None] * cond
    first = jnp.einsum("kij,kj->ki", trans, first, precision=MATMUL_PRECISION)
    second = jnp.matmul(jnp.matmul(trans, second, precision=MATMUL_PRECISION),
                        jnp.swapaxes(trans, -1, -2), precision=MATMUL_PRECISION)
    return first, second + nk[:, None, None] * cond


def _over_chunks(one, data: MissingData):
    """Σ over chunks of one(i, mask row i) -> (Stats, Σ log p). The chunks are visited by
    index, so that each reads its own pattern's factors."""
    count, nk, first, second, sum_ll = _sum_over_chunks(
        one, jnp.arange(data.mask.shape[0]), data.mask)
    return Stats(count, nk, first, second), sum_ll


def e_step_stats_missing(data: MissingData, gmm: GMM, factors: PatternFactors | None = None):
    """The precise kernel: E step and statistics from whitened residuals.

    A traced primitive (one restart).

    Args:
      data: the `MissingData` layout.
      gmm: the mixture.
      factors: `pattern_factors(gmm, data.observed)` when already computed, else None.

    Returns:
      (stats, sum_ll): `Stats` about the component means gmm.means (K, D), and
      Σ_n log p(x_n,o) ().
    """
    f = pattern_factors(gmm, data.observed) if factors is None else factors
    matrix = f.trans is not None

    def one(i, m_rows):
        p = data.chunk_pattern[i]
        joint, diff = chunk_posterior(data.xb[i], data.observed[p], gmm, f.inv[p], f.norm[p])
        resp, lse = _resp_and_log_prob(joint, m_rows)
        weighted = resp[..., None] * diff
        nk = jnp.sum(resp, axis=0)
        if matrix:
            second = jnp.einsum("rkd,rke->kde", weighted, diff, precision=MATMUL_PRECISION)
        else:
            second = jnp.sum(weighted * diff, axis=0)
        first, second = expected_stats(nk, jnp.sum(weighted, axis=0), second,
                                       None if f.trans is None else f.trans[p], f.cond[p])
        return jnp.sum(m_rows), nk, first, second, jnp.sum(lse * m_rows)

    return _over_chunks(one, data)


def missing_feature_chunks(data: MissingData, covariance_type: str):
    """The fixed shift c of a fit and what the fast kernel iterates over.

    Features φ(o ⊙ (x − c)) when they fit in the feature cache, else the zero-filled
    y = o ⊙ (x − c) themselves.

    Args:
      data: the `MissingData` layout.
      covariance_type: "full", "tied", "diag" or "spherical".

    Returns:
      (chunks, c, featurized): (C, R, F + D) features or (C, R, D) rows, the shift (D,) (the
      observed mean of each coordinate), and whether chunks holds features.
    """
    kind = covariance.of(covariance_type)
    seen = data.observed[data.chunk_pattern][:, None, :] & (data.mask[..., None] > 0)
    count = jnp.sum(seen, axis=(0, 1))
    shift = jnp.sum(data.xb, axis=(0, 1)) / jnp.maximum(count, 1)
    y = jnp.where(seen, data.xb - shift, 0.0)
    n_feats = kind.n_point_features(y.shape[-1])
    if data.mask.size * n_feats * y.dtype.itemsize > _FEATURE_CACHE_BYTES:
        return y, shift, False
    return jax.vmap(kind.point_features)(y), shift, True


def _expanded_params(gmm: GMM, f: PatternFactors, observed, shift):
    """(W (P, K, F + D), bias (P, K), m̃ (P, K, D), Λ̃: (P, K, D, D) or (P, K, D)) with
    log w_k + log N(x_o; μ_o, Σ_oo) = φ(y) · W_pk + bias_pk for y = o ⊙ (x − shift)."""
    o = observed[:, None, :]
    m = jnp.where(o, gmm.means - shift, 0.0)
    if f.trans is not None:
        lam = jnp.where(o[..., :, None] & o[..., None, :],
                        jnp.matmul(jnp.swapaxes(f.inv, -1, -2), f.inv,
                                   precision=MATMUL_PRECISION), 0.0)
        quad = _linalg.pack_sym(lam, 2.0)
        lam_m = jnp.einsum("pkij,pkj->pki", lam, m, precision=MATMUL_PRECISION)
    else:
        lam = quad = f.inv * f.inv
        lam_m = m * lam
    w = jnp.concatenate([-0.5 * quad, lam_m], axis=-1)
    return w, f.norm - 0.5 * jnp.sum(m * lam_m, axis=-1), m, lam


def missing_expansion_error(gmm: GMM, f: PatternFactors, observed, shift) -> jax.Array:
    """The fast kernel's round-off scale in nats.

    max over (pattern, component) of eps·(|m̃|ᵀ|Λ̃||m̃| + Σ_ij |Λ̃_ij Σ_oo,ij|)
    (`jaxvi.em.stats.expansion_error` on each pattern's marginal).

    Args:
      gmm: the mixture.
      f: its `PatternFactors`.
      observed: (P, D) bool patterns.
      shift: (D,) the fast kernel's shift c.

    Returns:
      () the error scale.
    """
    _, _, m, lam = _expanded_params(gmm, f, observed, shift)
    eps = jnp.finfo(m.dtype).eps
    if f.trans is None:
        rho = jnp.sum(m * m * lam, axis=-1) + jnp.sum(observed, axis=-1)[:, None]
    else:
        cov = jnp.broadcast_to(gmm.covariances, lam.shape[1:])
        a = jnp.abs(lam)
        rho = jnp.einsum("pki,pkij,pkj->pk", jnp.abs(m), a, jnp.abs(m)) + jnp.sum(
            a * jnp.abs(cov), axis=(-2, -1))
    return eps * jnp.max(rho)


def e_step_stats_missing_fast(data: MissingData, gmm: GMM, chunks, shift, featurized: bool,
                              factors: PatternFactors | None = None):
    """The fast kernel: E step and statistics from the chunks of `missing_feature_chunks`.

    As exact as `e_step_stats_missing` in exact arithmetic; in float32 as accurate as
    `missing_expansion_error` says. A traced primitive (one restart).

    Args:
      data: the `MissingData` layout.
      gmm: the mixture.
      chunks: (C, R, F + D) features φ(y) when `featurized`, else (C, R, D) rows y.
      shift: (D,) the shift c the chunks are about.
      featurized: whether `chunks` holds features.
      factors: `pattern_factors(gmm, data.observed)` when already computed, else None.

    Returns:
      (stats, sum_ll): `Stats` about gmm.means (K, D), and Σ_n log p(x_n,o) ().
    """
    kind = covariance.of(gmm.covariance_type)
    d = gmm.n_features
    f = pattern_factors(gmm, data.observed) if factors is None else factors
    w, bias, m, _ = _expanded_params(gmm, f, data.observed, shift)
    n_second = kind.n_second_moments(d)

    def one(i, m_rows):
        p = data.chunk_pattern[i]
        phi = chunks[i] if featurized else kind.point_features(chunks[i])
        joint = jnp.matmul(phi, w[p].T, precision=MATMUL_PRECISION) + bias[p]
        resp, lse = _resp_and_log_prob(joint, m_rows)
        moments = jnp.matmul(resp.T, phi, precision=MATMUL_PRECISION)  # (K, F + D)
        nk = jnp.sum(resp, axis=0)
        s1, s2 = moments[:, n_second:], kind.unpack(moments[:, :n_second], d)
        # About the means: ũ = y − m̃, so Σ r ũ = s1 − n m̃, Σ r ũũᵀ = s2 − s1 m̃ᵀ − m̃ s1ᵀ + n m̃m̃ᵀ.
        mp = m[p]
        first = s1 - nk[:, None] * mp
        if kind.matrix:
            cross = s1[:, :, None] * mp[:, None, :]
            second = s2 - cross - jnp.swapaxes(cross, -1, -2) + kind.outer(nk, mp)
        else:
            second = s2 - 2.0 * s1 * mp + kind.outer(nk, mp)
        first, second = expected_stats(nk, first, second,
                                       None if f.trans is None else f.trans[p], f.cond[p])
        return jnp.sum(m_rows), nk, first, second, jnp.sum(lse * m_rows)

    return _over_chunks(one, data)
