"""Exact EM with missing values (Ghahramani & Jordan 1994): NaN entries of x are missing at
random, each point is scored by its marginal over its observed coordinates, and the M step
reads the expected sufficient statistics E[x | x_o, z] and E[x xᵀ | x_o, z].

For a point with observed coordinates o and missing ones m, under component k:

    log p(x_o | k) = log N(x_o; μ_o, Σ_oo)
    E[x_m | x_o, k] = μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)
    Cov[x_m | x_o, k] = Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om

Rows are grouped by missing pattern on the host (`missing_layout`): every chunk holds rows of
one pattern, so one Cholesky factor per (pattern, component) serves all of them. Σ_oo is
embedded as a D×D matrix with the missing rows and columns replaced by the identity, so one
batched Cholesky of shape (P, K, D, D) gives every marginal factor, and the conditional means
and covariances come from the same factors (`pattern_factors`). With x̂_nk = E[x_n | x_o, k],
x̂_nk − μ_k = T_pk ũ_nk, where ũ_nk is x_n − μ_k with its missing entries set to 0 and
T_pk = diag(o) + Σ_mo Σ_oo⁻¹ (embedded): the statistics about the means are T applied to the
zero-filled residuals' statistics, plus n_k times the conditional covariance
(`jaxvi.em.missing_stats`). They are the same `Stats` as complete-data EM's, so
`m_step_from_stats` (and any psum of them) is unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _linalg, _validate
from jaxvi.em import checks, covariance
from jaxvi.em.model import GMM, MATMUL_PRECISION, component_variances
from jaxvi.em.stats import _resp_and_log_prob, chunk_layout

# Chunk rows tried below the backend's budget, and the padding one more chunk is worth.
_MIN_ROWS = 8
_CHUNK_OVERHEAD_ROWS = 128


class MissingData(NamedTuple):
    """Rows of x grouped by missing pattern, chunked so that a chunk holds one pattern.

    xb: (C, R, D) rows with missing entries set to 0, zero-padded; mask: (C, R) 1 = real row;
    chunk_pattern: (C,) int the pattern of each chunk; observed: (P, D) bool, the distinct
    patterns (True = observed); slot: (N,) int, the position of row n in xb.reshape(C·R, D).
    """

    xb: jax.Array
    mask: jax.Array
    chunk_pattern: jax.Array
    observed: jax.Array
    slot: jax.Array


def _chunk_rows(counts: np.ndarray, max_rows: int) -> int:
    """Rows per chunk for pattern groups of `counts` rows (each group padded to whole chunks):
    of max_rows (capped at the largest group) halved 0 to 11 times, the one with the fewest
    padded rows plus `_CHUNK_OVERHEAD_ROWS` per chunk."""
    top = int(min(max_rows, counts.max()))
    best = None
    for r in sorted({min(top, max(_MIN_ROWS, top >> i)) for i in range(12)}, reverse=True):
        n_chunks = int(np.sum(-(-counts // r)))
        cost = n_chunks * r + _CHUNK_OVERHEAD_ROWS * n_chunks
        if best is None or cost < best[0]:
            best = (cost, r)
    return best[1]


def missing_layout(x, covariance_type: str = "full", chunk_size: int | None = None,
                   name: str = "x", sample_weight=None) -> MissingData:
    """Group the rows of x by missing pattern into chunks of one pattern each.

    Host-side, outside jit; `check_x_missing` checks x first. Each row's mask is its weight.

    Args:
      x: (N, D) data, NaN = missing.
      covariance_type: "full", "tied", "diag" or "spherical" (sizes the chunks).
      chunk_size: rows per chunk, or None (from the backend's budget).
      name: the argument's name in the error message.
      sample_weight: (N,) checked row weights, or None (1).

    Returns:
      The `MissingData` layout: C chunks of R rows, P patterns.

    Raises:
      ValueError: naming the first row whose entries are all missing.
    """
    x = np.asarray(x)
    n, d = x.shape
    observed = ~np.isnan(x)
    _validate.check_rows_observed(name, observed)
    patterns, index = np.unique(observed, axis=0, return_inverse=True)
    index = index.reshape(-1)
    counts = np.bincount(index, minlength=len(patterns))
    _, max_rows = chunk_layout(max(int(counts.max()), 1), d, covariance_type, chunk_size)
    rows = _chunk_rows(counts, chunk_size or max_rows)
    per = -(-counts // rows)
    first_chunk = np.concatenate([[0], np.cumsum(per)[:-1]])
    order = np.argsort(index, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.concatenate([[0], np.cumsum(counts)[:-1]])[index[order]]
    slot = first_chunk[index] * rows + rank
    n_chunks = int(per.sum())
    xb = np.zeros((n_chunks * rows, d), x.dtype)
    xb[slot] = np.where(observed, x, 0)
    mask = np.zeros(n_chunks * rows, x.dtype)
    mask[slot] = 1 if sample_weight is None else np.asarray(sample_weight, x.dtype)
    return MissingData(jnp.asarray(xb.reshape(n_chunks, rows, d)),
                       jnp.asarray(mask.reshape(n_chunks, rows)),
                       jnp.asarray(np.repeat(np.arange(len(patterns)), per)),
                       jnp.asarray(patterns), jnp.asarray(slot))


class PatternFactors(NamedTuple):
    """Per (pattern, component) quantities of a GMM (`pattern_factors`).

    inv: L⁻¹ of the embedded Σ_oo, (P, K, D, D) for full/tied, or 1/σ on observed
    coordinates (0 on missing) (P, K, D) for diag/spherical; norm: (P, K) log w_k −
    ½(log|Σ_oo| + |o| log 2π); trans: T = diag(o) + Σ_mo Σ_oo⁻¹ embedded (P, K, D, D), None
    for diag/spherical (T = diag(o)); cond: Σ_mm − Σ_mo Σ_oo⁻¹ Σ_om on the missing block, 0
    elsewhere: (P, K, D, D), or its diagonal (P, K, D).
    """

    inv: jax.Array
    norm: jax.Array
    trans: jax.Array | None
    cond: jax.Array


def pattern_factors(gmm: GMM, observed: jax.Array) -> PatternFactors:
    """The marginal and conditional factors of `gmm` for each missing pattern.

    A traced primitive.

    Args:
      gmm: the mixture.
      observed: (P, D) bool, True = observed.

    Returns:
      The `PatternFactors` (P, K, ...).
    """
    k, d = gmm.n_components, gmm.n_features
    o = observed
    n_obs = jnp.sum(o, axis=-1).astype(gmm.means.dtype)
    log_w = jnp.log(gmm.weights)
    if not covariance.of(gmm.covariance_type).matrix:
        var = component_variances(gmm)[None]  # (1, K, D)
        oo = o[:, None, :]
        inv = jnp.where(oo, jax.lax.rsqrt(var), 0.0)
        logdet = jnp.sum(jnp.where(oo, jnp.log(var), 0.0), axis=-1)
        cond = jnp.where(oo, 0.0, var)
        return PatternFactors(inv, log_w - 0.5 * (logdet + n_obs[:, None] * _linalg.LOG_2PI),
                              None, cond)
    cov = jnp.broadcast_to(gmm.covariances, (k, d, d))[None]  # (1, K, D, D)
    row_o = o[:, None, :, None]
    col_o = o[:, None, None, :]
    eye = jnp.eye(d, dtype=cov.dtype)
    embedded = jnp.where(row_o & col_o, cov, eye)
    chol, _, _ = _linalg.cholesky_floored(embedded, 0.0, _linalg.resolution_floor(embedded))
    inv = _linalg.tril_inverse(chol)
    # V = L⁻¹ Σ_o· (rows o of Σ): Σ_·o Σ_oo⁻¹ Σ_o· = VᵀV and Σ_·o Σ_oo⁻¹ = Vᵀ L⁻¹ (cols o).
    v = jnp.matmul(inv, jnp.where(row_o, cov, 0.0), precision=MATMUL_PRECISION)
    vt = jnp.swapaxes(v, -1, -2)
    miss_r, miss_c = ~row_o, ~col_o
    cond = jnp.where(miss_r & miss_c,
                     cov - jnp.matmul(vt, v, precision=MATMUL_PRECISION), 0.0)
    regress = jnp.where(miss_r & col_o, jnp.matmul(vt, inv, precision=MATMUL_PRECISION), 0.0)
    trans = regress + jnp.where(row_o & col_o, eye, 0.0)
    norm = log_w - 0.5 * (_linalg.logdet_tril(chol) + n_obs[:, None] * _linalg.LOG_2PI)
    return PatternFactors(inv, norm, trans, cond)


def chunk_posterior(x_rows, o, gmm: GMM, inv, norm):
    """Joint log densities and zero-filled residuals of one chunk of rows of one pattern.

    Args:
      x_rows: (R, D) rows, missing entries 0.
      o: (D,) bool, the pattern (True = observed).
      gmm: the mixture.
      inv: that pattern's `PatternFactors.inv`, (K, D, D) or (K, D).
      norm: that pattern's `PatternFactors.norm`, (K,).

    Returns:
      (joint, diff): log w_k + log N(x_o; μ_o, Σ_oo) (R, K) and the zero-filled residuals
      ũ (R, K, D).
    """
    k, d = gmm.n_components, gmm.n_features
    diff = jnp.where(o, x_rows[:, None, :] - gmm.means, 0.0)
    if inv.ndim == 3:  # full/tied: whitened residuals as one matmul about a central point
        centre = jax.lax.stop_gradient(jnp.median(gmm.means, axis=0))
        xc = jnp.where(o, x_rows - centre, 0.0)
        b = jnp.einsum("kij,kj->ki", inv, jnp.where(o, gmm.means - centre, 0.0),
                       precision=MATMUL_PRECISION)
        z = jnp.matmul(xc, inv.reshape(k * d, d).T, precision=MATMUL_PRECISION)
        z = z.reshape(-1, k, d) - b
    else:
        z = diff * inv
    return -0.5 * jnp.sum(z * z, axis=-1) + norm, diff


@jax.jit
def _posterior_rows(data: MissingData, gmm: GMM):
    """Per-row (log p(k | x_o) (N, K), log p(x_o) (N,), E[x | x_o] (N, D)) in x's order."""
    f = pattern_factors(gmm, data.observed)

    def one(args):
        x_rows, p = args
        o = data.observed[p]
        joint, diff = chunk_posterior(x_rows, o, gmm, f.inv[p], f.norm[p])
        resp, lse = _resp_and_log_prob(joint, jnp.ones(x_rows.shape[:1], x_rows.dtype))
        if f.trans is not None:
            diff = jnp.einsum("kij,rkj->rki", f.trans[p], diff, precision=MATMUL_PRECISION)
        # E[x_m | x_o, k] = μ_k + T ũ on the missing coordinates; x_o itself elsewhere.
        mean = jnp.einsum("rk,rkd->rd", resp, gmm.means + diff, precision=MATMUL_PRECISION)
        return joint - lse[:, None], lse, jnp.where(o, x_rows, mean)

    log_resp, lse, filled = jax.lax.map(one, (data.xb, data.chunk_pattern))
    take = lambda a: a.reshape(-1, *a.shape[2:])[data.slot]  # noqa: E731
    return take(log_resp), take(lse), take(filled)


def check_x_missing(x, n_features: int | None = None, name: str = "x") -> np.ndarray:
    """Data x: (N, D) whose NaN entries are missing: `checks.check_x` on its observed entries.

    Rows all NaN fail in `missing_layout`.

    Args:
      x: (N, D) data, NaN = missing.
      n_features: the columns required, or None.
      name: the argument's name in the error messages.

    Returns:
      (N, D) x as a NumPy float array.

    Raises:
      ValueError: not 2-D, complex, ±Inf, empty, or the wrong number of columns.
    """
    _validate.check_ndim(name, x, 2, "(n_samples, n_features)")
    x = np.asarray(checks.as_float_data(x, name))
    checks.check_x(np.where(np.isnan(x), 0.0, x), n_features, name)
    return x


def marginal_posterior(x: np.ndarray, gmm: GMM):
    """Per-row posteriors, marginal densities and conditional means under a GMM a fit produced.

    No checks of the GMM (x: checked data).

    Args:
      x: (N, D) data, NaN = missing.
      gmm: the mixture.

    Returns:
      (log p(k | x_o) (N, K), log p(x_o) (N,), E[x | x_o] (N, D)).

    Raises:
      ValueError: a row with every entry missing (`missing_layout`).
    """
    x = np.asarray(x).astype(np.asarray(gmm.means).dtype)
    return _posterior_rows(missing_layout(x, gmm.covariance_type), gmm)


def _posterior(x, gmm: GMM):
    checks.check_gmm(gmm)
    return marginal_posterior(check_x_missing(x, gmm.n_features), gmm)


def marginal_log_prob(x, gmm: GMM) -> jax.Array:
    """log p(x_n,o), each row's mixture density over its observed coordinates.

    Args:
      x: (N, D) points, NaN = missing.
      gmm: the mixture.

    Returns:
      (N,) observed-data log densities.

    Raises:
      ValueError: a row with every entry missing.
    """
    return _posterior(x, gmm)[1]


def marginal_e_step(x, gmm: GMM) -> tuple[jax.Array, jax.Array]:
    """E step on rows with missing entries (NaN).

    Args:
      x: (N, D) points, NaN = missing.
      gmm: the mixture.

    Returns:
      (log_resp, mean_ll): log p(z_n = k | x_n,o) (N, K) and the mean observed-data
      log-likelihood ().
    """
    log_resp, lse, _ = _posterior(x, gmm)
    return log_resp, jnp.mean(lse)


def impute(x, gmm: GMM) -> jax.Array:
    """x with each missing entry (NaN) replaced by its conditional mean.

    E[x_m | x_o] = Σ_k p(k | x_o) (μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o − μ_k,o)).

    Args:
      x: (N, D) points, NaN = missing.
      gmm: the mixture.

    Returns:
      (N, D) x with its missing entries filled in.
    """
    return _posterior(x, gmm)[2]
