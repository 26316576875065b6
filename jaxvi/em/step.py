"""The M step and one EM iteration.

An iteration is built from three pure pieces that a sharded or streaming fit reuses unchanged:

    stats, sum_ll = e_step_stats(x, gmm, shift)            # E step fused with Σr, Σr x, Σr x xᵀ
    stats, sum_ll = combine((stats, sum_ll))               # e.g. lax.psum over a mesh axis
    gmm = m_step_from_stats(stats, shift, covariance_type, reg_covar)

`em_update` is the iteration `fit` and `em_step` run, on restarts batched along axis 0: the
fast or the precise E-step kernel, whichever float32 round-off allows, then `factored_m_step`
(the M step and its covariances' floored Cholesky factors), which `fit_minibatch` shares.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi import _validate
from jaxvi.em import checks, covariance
from jaxvi.em.model import (
    GMM,
    MATMUL_PRECISION,
    Prior,
    Stats,
    component_precisions,
    with_scale_tril,
)
from jaxvi.em.stats import (
    FAST_KERNEL_MAX_ERROR,
    cancellation_error,
    chunk_layout,
    e_step_stats_fast,
    e_step_stats_precise,
    expansion_error,
    model_shift,
    to_chunks,
)


def flush_roundoff(scatter, sum_xx, matrix: bool):
    """Zero the scatter S − n δδᵀ of every dimension whose variance is below its round-off.

    That round-off is 64 eps · S_ii; for matrices the row and column are zeroed too (which
    keeps them positive semi-definite). A component on duplicated points then has an exactly
    singular covariance (caught as such) whatever the shift, not a tiny random one.

    Args:
      scatter: (K, D, D) if `matrix` else (K, D), S − n δδᵀ.
      sum_xx: the second moments S, scatter's shape.
      matrix: whether the covariances are matrices (full/tied).

    Returns:
      The flushed scatter, scatter's shape.
    """
    eps = jnp.finfo(scatter.dtype).eps
    var = jnp.diagonal(scatter, axis1=-2, axis2=-1) if matrix else scatter
    second = jnp.diagonal(sum_xx, axis1=-2, axis2=-1) if matrix else sum_xx
    keep = var > 64.0 * eps * second
    if matrix:
        keep = keep[..., :, None] & keep[..., None, :]
    return jnp.where(keep, scatter, 0.0)


def component_scatter(stats: Stats, kind) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Counts, mean offsets and round-off-flushed scatters from `Stats` about a shift c.

    Args:
      stats: `Stats` about c.
      kind: a `covariance.CovarianceType`.

    Returns:
      (nk, delta, scatter): n_k + 10 eps (K,) (empty components stay finite), δ_k = x̄_k − c
      (K, D), and each component's scatter Σ_n r_nk (x_n − x̄_k)(x_n − x̄_k)ᵀ (K, D, D), its
      diagonal (K, D) for diag/spherical (`flush_roundoff`).
    """
    nk = stats.nk + 10.0 * jnp.finfo(stats.sum_x.dtype).eps
    delta = stats.sum_x / nk[:, None]
    scatter = flush_roundoff(stats.sum_xx - kind.outer(nk, delta), stats.sum_xx, kind.matrix)
    return nk, delta, scatter


def m_step_from_stats(
    stats: Stats, shift: jax.Array, *, covariance_type: str = "full",
    reg_covar: float = 1e-6, prior: Prior | None = None, fixed: jax.Array | None = None,
    current: GMM | None = None,
) -> GMM:
    """Closed-form M step (maximum likelihood, or MAP under `prior`) from `Stats` about `shift`.

    Guards empty components like scikit-learn: n_k + 10·eps, so they get the prior/zero mean
    offset and `reg_covar` covariance instead of NaN. With `fixed`, the fixed parameters are
    kept at `current`'s values and the rest maximised given them: with the means fixed, the
    covariances are the scatter about those means (plus the prior's
    κ0 (μ_k − m0)(μ_k − m0)ᵀ under MAP); the other updates do not depend on what is fixed.
    A traced mask, so one compiled fit serves every subset. A traced primitive (no argument
    checks; it returns covariances only: `factored_m_step` adds their floored Cholesky
    factors).

    Args:
      stats: one restart's `Stats` (K leading), e.g. from `e_step_stats`.
      shift: (D,) the point the statistics' moments are about, or (K, D) for statistics
        taken about per-component points (`e_step_stats_precise`).
      covariance_type: "full", "tied", "diag" or "spherical".
      reg_covar: added to the covariances' diagonal.
      prior: a `Prior` for MAP, None for maximum likelihood.
      fixed: None, or (3,) bool (`checks.fixed_mask`: weights, means, covariances).
      current: the GMM whose fixed parameters are kept (needed with `fixed`).

    Returns:
      The new `GMM` (covariances without factors).
    """
    kind = covariance.of(covariance_type)
    nk, delta, scatter = component_scatter(stats, kind)

    if prior is None:
        weights = nk / jnp.sum(nk)
        means = shift + delta
        if fixed is not None:  # with the means fixed, the scatter about them
            about = kind.posterior_scatter(scatter, nk, delta - (current.means - shift))
            scatter = jnp.where(fixed[1], about, scatter)
        new = GMM(weights, means, kind.ml_covariance(scatter, nk, reg_covar), covariance_type)
        return keep_fixed(new, current, fixed)

    alpha, m0, kappa0, nu0, psi0 = (jnp.asarray(p, stats.sum_x.dtype) for p in prior)
    unnorm = nk + alpha - 1.0
    weights = unnorm / jnp.sum(unnorm)
    d0 = m0 - shift  # prior mean about the shift
    kappa_n = kappa0 + nk
    means = shift + (stats.sum_x + kappa0 * d0) / kappa_n[:, None]
    dev = delta - d0  # x̄_k − m0
    shrink = kappa0 * nk / kappa_n
    post = kind.posterior_scatter(scatter, shrink, dev)
    if fixed is not None:  # B_k = Σ r (x − μ_k)(x − μ_k)ᵀ + κ0 (μ_k − m0)(μ_k − m0)ᵀ
        mu = current.means - shift
        about = kind.posterior_scatter(scatter, nk, delta - mu)
        about = about + kind.outer(jnp.broadcast_to(kappa0, nk.shape), mu - d0)
        post = jnp.where(fixed[1], about, post)
    new = GMM(weights, means, kind.map_covariance(post, nk, psi0, nu0, reg_covar),
              covariance_type)
    return keep_fixed(new, current, fixed)


def keep_fixed(new: GMM, current: GMM | None, fixed: jax.Array | None) -> GMM:
    """`new` with the parameters that `fixed` marks taken from `current`.

    Args:
      new: the updated `GMM` (any leading batch axes).
      current: the `GMM` whose fixed parameters are kept (None when fixed is None).
      fixed: None, or (3,) bool over (weights, means, covariances).

    Returns:
      The `GMM` (the covariances with their Cholesky factors, when both have them); `new`
      itself for fixed None.
    """
    if fixed is None:
        return new
    kept = dict(weights=jnp.where(fixed[0], current.weights, new.weights),
                means=jnp.where(fixed[1], current.means, new.means),
                covariances=jnp.where(fixed[2], current.covariances, new.covariances))
    if new.scale_tril is not None and current.scale_tril is not None:
        kept["scale_tril"] = jnp.where(fixed[2], current.scale_tril, new.scale_tril)
    return dataclasses.replace(new, **kept)


def per_restart(fn, *args):
    """fn mapped over axis 0 of its (pytree) args: `vmap`, or for a single restart a plain call.

    XLA:CPU runs the batched matmuls of a size-1 `vmap` slower than plain ones.

    Args:
      fn: the per-restart function.
      *args: pytrees batched along axis 0 (B, ...).

    Returns:
      fn's outputs batched along axis 0 (B, ...).
    """
    if jax.tree_util.tree_leaves(args)[0].shape[0] == 1:
        out = fn(*jax.tree_util.tree_map(lambda a: a[0], args))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(fn)(*args)


def factored_m_step(stats: Stats, shifts: jax.Array, *, covariance_type: str, reg_covar,
                    prior: Prior | None = None, fixed: jax.Array | None = None,
                    current: GMM | None = None) -> GMM:
    """`m_step_from_stats` of restarts batched along axis 0, with the covariances factored.

    Eigenvalues floored at reg_covar, positive definite by construction (`with_scale_tril`,
    outside the `vmap`, so that its repair stays a real `lax.cond`; fixed covariances keep
    their factors).

    Args:
      stats: `Stats` (B, ...).
      shifts: (B, D) or (B, K, D) the points the Stats are about.
      covariance_type: "full", "tied", "diag" or "spherical".
      reg_covar: added to the covariances' diagonal; the eigenvalue floor.
      prior: a `Prior` for MAP, or None.
      fixed: None, or (3,) bool (`checks.fixed_mask`).
      current: the GMMs (B, ...) whose `fixed` parameters are kept.

    Returns:
      The new GMMs batched along axis 0 (B, ...), with their factors.
    """
    new = per_restart(
        lambda st, c, g: m_step_from_stats(st, c, covariance_type=covariance_type,
                                           reg_covar=reg_covar, prior=prior, fixed=fixed,
                                           current=g),
        stats, shifts, None if fixed is None else current,
    )
    return keep_fixed(with_scale_tril(new, reg_covar), current, fixed)


def _stats_about_means(x, resp, covariance_type: str) -> tuple[Stats, jax.Array]:
    """Stats of x: (N, D) under resp: (N, K) about the weighted means themselves (two passes:
    the means, then Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ one component at a time, so memory
    stays O(N·D)). -> (Stats, means (K, D))."""
    dt = x.dtype
    matrix = covariance.of(covariance_type).matrix
    nk = jnp.sum(resp, axis=0)
    means = (jnp.matmul(resp.T, x, precision=MATMUL_PRECISION)
             / (nk + 10.0 * jnp.finfo(dt).eps)[:, None])

    def about(args):
        r, mu = args
        diff = x - mu
        weighted = r[:, None] * diff
        if matrix:
            second = jnp.matmul(weighted.T, diff, precision=MATMUL_PRECISION)
        else:
            second = jnp.sum(weighted * diff, axis=0)
        return jnp.sum(weighted, axis=0), second

    first, second = jax.lax.map(about, (resp.T, means))
    return Stats(jnp.asarray(x.shape[0], dt), nk, first, second), means


@functools.partial(jax.jit, static_argnums=(2,))
def m_step_from_resp(x, resp, covariance_type, reg_covar, prior):
    """The M step of `m_step` and of initialisation, with its covariances' floored factors.
    x: (N, D), resp: (N, K). A traced primitive."""
    stats, means = _stats_about_means(x, resp.astype(x.dtype), covariance_type)
    batched = jax.tree_util.tree_map(lambda a: a[None], (stats, means))
    gmms = factored_m_step(*batched, covariance_type=covariance_type, reg_covar=reg_covar,
                           prior=prior)
    return jax.tree_util.tree_map(lambda a: a[0], gmms)


def m_step(
    x: jax.Array, resp: jax.Array, covariance_type: str = "full", reg_covar: float = 1e-6,
    *, prior: Prior | None = None,
) -> GMM:
    """M step: the GMM maximising F(θ, q) for responsibilities q = resp.

    Equals `sufficient_stats` + `m_step_from_stats`.

    Args:
      x: (N, D) points.
      resp: (N, K) responsibilities, rows summing to 1.
      covariance_type: "full", "tied", "diag" or "spherical".
      reg_covar: added to the covariances' diagonal.
      prior: a `Prior` for MAP, None for maximum likelihood.

    Returns:
      The new `GMM`.
    """
    checks.check_x(x)
    checks.check_covariance_type(covariance_type)
    checks.check_resp(resp, np.shape(x)[0], None)
    _validate.check_number("reg_covar", reg_covar)
    return m_step_from_resp(jnp.asarray(x), jnp.asarray(resp), covariance_type, reg_covar, prior)


def e_step_batched(gmms: GMM, xb, mask, chunks, shift, featurized, combine):
    """The E step of `em_update`, fast or precise kernel by round-off, on batched restarts.

    Args:
      gmms: the GMMs (B, ...).
      xb: (C, R, D) rows.
      mask: (C, R) row weights.
      chunks: what the fast kernel reads (`em_update`).
      shift: (D,) its shift.
      featurized: whether chunks holds features.
      combine: maps local to global (Stats, Σ log p).

    Returns:
      (global Stats (B, ...), Σ log p (B,), the points (B, D) or (B, K, D) the Stats' second
      moments are about).
    """
    precisions = per_restart(component_precisions, gmms)
    errors = per_restart(lambda g, p: expansion_error(g, shift, p[0]), gmms, precisions)
    use_fast = jnp.all(errors < FAST_KERNEL_MAX_ERROR)

    def fast(_):
        stats, sum_ll = combine(per_restart(
            lambda g, p: e_step_stats_fast(chunks, mask, g, shift, featurized, p), gmms,
            precisions,
        ))
        return stats, sum_ll, jnp.broadcast_to(shift, gmms.means.shape)

    def precise(_):
        stats, sum_ll = combine(per_restart(lambda g: e_step_stats_precise(xb, mask, g), gmms))
        # Second moments about the old means lose eps·|δ|ᵀ|Λ||δ| (relative, in the old
        # metric) when the means move by δ; past `FAST_KERNEL_MAX_ERROR`/10, take them again
        # about the new means (the same responsibilities, so the same E step). Early
        # iterations pay it, rarely later ones.
        eps = 10.0 * jnp.finfo(stats.nk.dtype).eps
        moved = gmms.means + stats.sum_x / (stats.nk + eps)[..., None]
        drift = per_restart(lambda dm, p: cancellation_error(dm, p[0]), moved - gmms.means,
                            precisions)

        def again(_):
            local = per_restart(lambda g, c: e_step_stats_precise(xb, mask, g, c)[0], gmms,
                                moved)
            return combine(local), moved

        stats, shifts = jax.lax.cond(jnp.any(drift > 0.1 * FAST_KERNEL_MAX_ERROR), again,
                                     lambda _: (stats, gmms.means), None)
        return stats, sum_ll, shifts

    return jax.lax.cond(use_fast, fast, precise, None)


def em_update(gmms: GMM, xb, mask, chunks, shift, featurized, reg_covar, prior, combine,
              fixed: jax.Array | None = None):
    """One EM iteration of restarts batched along axis 0.

    The E step runs the fast kernel where its round-off is negligible for every restart
    (`expansion_error` < `FAST_KERNEL_MAX_ERROR`) and the precise one otherwise: one
    `lax.cond`, so only one runs.

    Args:
      gmms: the current GMMs (B, ...).
      xb: (C, R, D) rows.
      mask: (C, R) row weights.
      chunks: what the fast kernel reads: xb, or its features about `shift` when `featurized`.
      shift: (D,) the fast kernel's shift.
      featurized: whether chunks holds features.
      reg_covar: added to the covariances' diagonal.
      prior: a `Prior` for MAP-EM, or None.
      combine: maps local to global (Stats, Σ log p) (e.g. a `psum`).
      fixed: parameters kept at `gmms`' values (`m_step_from_stats`), or None.

    Returns:
      (new GMMs with factors, mean log-likelihood (B,) of `gmms`: Σ w log p / Σ w).
    """
    stats, sum_ll, shifts = e_step_batched(gmms, xb, mask, chunks, shift, featurized, combine)
    new = factored_m_step(stats, shifts, covariance_type=gmms.covariance_type,
                          reg_covar=reg_covar, prior=prior, fixed=fixed, current=gmms)
    return new, sum_ll / stats.count


def identity(t):
    """The `combine` of a single-device fit.

    Args:
      t: any pytree.

    Returns:
      t itself.
    """
    return t


def em_step(
    x: jax.Array, gmm: GMM, *, reg_covar: float = 1e-6, prior: Prior | None = None,
    combine: Callable = identity, chunk_size: int | None = None,
    sample_weight: jax.Array | None = None, fixed: jax.Array | None = None,
) -> tuple[GMM, jax.Array]:
    """One EM iteration: the E step, then the M step.

    The iteration `fit` runs (`em_update`): the fast or the precise E step kernel, whichever
    float32 round-off allows, then the M step and its covariances' floored factors. The fast
    kernel's shift is `model_shift(gmm)`, the same on every device. A traced primitive:
    pure, no argument checks; jit it (or call it inside jit).

    Args:
      x: (N, D) points.
      gmm: the current mixture.
      reg_covar: added to the covariances' diagonal in the M step.
      prior: a `Prior` for MAP-EM, None for ML-EM.
      combine: maps the local (Stats, Σ log p), batched along a leading axis of size 1, to
        the global one, e.g. `lambda t: jax.lax.psum(t, "data")` inside `shard_map`.
      chunk_size: rows per chunk of the fused E step (default: from a per-backend budget).
      sample_weight: (N,) ≥ 0 weights (the mean is then Σ w log p / Σ w).
      fixed: None or (3,) bool (`checks.fixed_mask`): the parameters kept at `gmm`'s values
        (`m_step_from_stats`).

    Returns:
      (new_gmm, mean_ll): the updated `GMM` and the mean log-likelihood () of `gmm` on x.
    """
    gmm = with_scale_tril(gmm)
    n_chunks, rows = chunk_layout(x.shape[0], gmm.n_features, gmm.covariance_type, chunk_size)
    xb, mask = to_chunks(x, n_chunks, rows, sample_weight)
    batched = jax.tree_util.tree_map(lambda a: a[None], gmm)
    new, ll = em_update(batched, xb, mask, xb, model_shift(gmm), False, reg_covar, prior,
                        combine, fixed)
    return jax.tree_util.tree_map(lambda a: a[0], new), ll[0]
