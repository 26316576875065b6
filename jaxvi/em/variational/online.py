"""`fit_variational_minibatch`: stochastic variational inference for the VB-EM mixture
(Hoffman et al. 2013) over a stream of batches; each step jitted, the loop host-side (the
streaming driver `jaxvi.em.streaming`, shared with stepwise EM).

The posterior's natural parameters are the prior's plus a linear function of the `Stats`
(with a fixed shift), so a natural-gradient step of size ρ on them,
λ ← (1 − ρ) λ + ρ λ̂(batch), is the same convex step on per-point statistics,
s ← (1 − ρ) s + ρ ŝ(batch), followed by the conjugate M step from N·s.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable

import jax
import jax.numpy as jnp

from jaxvi import _validate
from jaxvi.em import checks
from jaxvi.em import init as em_init
from jaxvi.em.driver import lapack_scoped
from jaxvi.em.online import blend, per_point
from jaxvi.em.stats import e_step_stats_fast, sufficient_stats, weighted_mean
from jaxvi.em.step import identity
from jaxvi.em.streaming import chunker, raise_if_not_finite, run_stream, weighted_batches
from jaxvi.em.variational.checks import checked_prior
from jaxvi.em.variational.fit import VariationalFitResult
from jaxvi.em.variational.model import WEIGHT_PRIOR_TYPES, VariationalPosterior
from jaxvi.em.variational.step import (
    expected_gmm,
    lower_bound,
    resp_entropy,
    variational_m_step,
)


def _scaled(running, n_samples):
    """Per-point running Stats -> the Stats of n_samples points like them."""
    return jax.tree_util.tree_map(lambda a: a * n_samples, running)


def _svi_update(xb, mask, post, running, shift, prior, rho, n_samples, reg_covar, cov, wt,
                combine=identity):
    """One SVI step on a chunked batch xb: (C, R, D), mask: (C, R) -> (new posterior, new
    per-point running Stats, the batch's estimate of the ELBO: the lower bound of the
    posterior its statistics alone would give, its entropy scaled to n_samples points).
    The E step is EM's fast kernel about the fixed `shift`, as in `fit_minibatch`."""
    cfg = dict(covariance_type=cov, weight_type=wt)
    gmm = expected_gmm(post, **cfg)
    stats, sum_ll = combine(e_step_stats_fast(xb, mask, gmm, shift))
    scale = n_samples / stats.count
    entropy = resp_entropy(gmm, stats, shift, sum_ll) * scale
    batch_post = variational_m_step(_scaled(per_point(stats), n_samples), shift, prior,
                                    reg_covar=reg_covar, **cfg)
    estimate = lower_bound(batch_post, entropy, **cfg)
    running = blend(running, per_point(stats), rho)
    new = variational_m_step(_scaled(running, n_samples), shift, prior, reg_covar=reg_covar,
                             **cfg)
    return new, running, estimate


_svi_step = jax.jit(_svi_update, static_argnames=("cov", "wt"))


@functools.lru_cache(maxsize=16)
def _sharded_svi_fn(mesh, cov, wt):
    from jaxvi import distributed

    def local(xb, mask, post, running, shift, prior, rho, n_samples, reg_covar):
        return _svi_update(xb, mask, post, running, shift, prior, rho, n_samples, reg_covar,
                           cov, wt, distributed.psum_data)

    return jax.jit(distributed.shard_map_data(local, mesh, 2, 7))


def _initial_posterior(key, first, k, prior, n_samples, cov, wt, init, reg_covar,
                       weights=None):
    """q from `init`'s responsibilities on the first batch (weighted by weights (B,) when
    given), its Stats scaled to n_samples, and those per-point Stats (about the first
    batch's weighted mean) to start the running ones."""
    shift = weighted_mean(first, weights)
    resp = em_init.init_resp(key, first, k, init, weights)
    running = per_point(sufficient_stats(first, resp.astype(first.dtype), shift,
                                          covariance_type=cov, sample_weight=weights))
    post = variational_m_step(_scaled(running, n_samples), shift, prior,
                              covariance_type=cov, weight_type=wt, reg_covar=reg_covar)
    return post, running, shift


@lapack_scoped
def fit_variational_minibatch(
    batches: Iterable,
    n_components: int,
    *,
    key: jax.Array,
    n_samples: int,
    covariance_type: str = "full",
    weight_concentration_prior_type: str = "dirichlet_process",
    weight_concentration_prior=None,
    mean_precision_prior=None,
    mean_prior=None,
    degrees_of_freedom_prior=None,
    covariance_prior=None,
    kappa: float = 0.6,
    delay: float = 2.0,
    max_steps: int | None = None,
    init: str = "kmeans++",
    reg_covar: float = 1e-6,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    sample_weight: Iterable | None = None,
) -> VariationalFitResult:
    """Stochastic variational inference (Hoffman et al. 2013) for the VB-EM mixture of
    `fit_variational`, for data that do not fit in one batch.

    Step t ≥ 1: the E step on the batch under q, then a natural-gradient step of size
    ρ_t = (t + delay)^(−κ) on q's global parameters, i.e. s ← (1 − ρ_t) s + ρ_t ŝ(batch) on
    per-point Stats and q ← the conjugate M step from n_samples·s. The first step starts s
    from the first batch's statistics under `init`'s responsibilities.

    Args:
      batches: yields arrays (B_t, D) (any iterable; B_t may vary), e.g. shuffled rows of
        a data set of `n_samples` points.
      n_components: K ≤ the first batch's size.
      key: PRNG key of the initialisation on the first batch.
      n_samples: N ≥ 1, the size of the data set the batches are drawn from (the statistics
        of a batch stand for N points); with sample_weight, its total weight.
      covariance_type: as `fit_variational`.
      weight_concentration_prior_type: as `fit_variational`.
      weight_concentration_prior: () γ; this and the next four priors as `fit_variational`;
        default priors are computed from the first batch.
      mean_precision_prior: () β0.
      mean_prior: (D,) m0.
      degrees_of_freedom_prior: () ν0.
      covariance_prior: W0⁻¹ in scikit-learn's layout.
      kappa: κ ∈ (0.5, 1], the step-size decay (scikit-learn's `learning_decay`).
      delay: τ ≥ 0, which slows early steps (as scikit-learn's `learning_offset`).
      max_steps: stop after this many batches (default: when `batches` ends).
      init: "kmeans++", "random" or "random_from_data" on the first batch.
      reg_covar: added to each component's ML covariance, as `fit_variational`.
      chunk_size: rows per chunk of the fused E step.
      mesh: each batch's rows are split over its "data" axis and the batch Stats summed
        across devices, as in `fit_minibatch`.
      sample_weight: yields one (B_t,) array of weights ≥ 0 per batch, in step with
        `batches`, as in `fit_minibatch`; `n_samples` is then the data set's total weight.

    Returns:
      A `VariationalFitResult`: `posterior` after the last step; `history` (one per step,
      no padding) each batch's estimate of the ELBO (the lower bound of the posterior its
      statistics alone would give, scaled to N points; noisy, on `fit_variational`'s scale);
      `objective` the last; `n_iter` the number of batches; `converged` False (a stream
      has no convergence test).

    Raises:
      ValueError: an invalid argument or batch, or a posterior that is not finite.
    """
    _check_svi_args(kappa, delay, covariance_type, weight_concentration_prior_type, max_steps,
                    reg_covar, n_samples, init, chunk_size)
    stream = weighted_batches(batches, sample_weight, max_steps)
    first, w0 = next(stream)
    n, d = first.shape
    k = checks.check_n_components(n_components, n)
    cov, wt = covariance_type, weight_concentration_prior_type
    prior = checked_prior(
        first, cov, k, w0, float(reg_covar), weight_concentration_prior=weight_concentration_prior,
        mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
        degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior)
    dt = first.dtype
    n_total, reg = jnp.asarray(n_samples, dt), jnp.asarray(reg_covar, dt)
    post, running, shift = jax.jit(_initial_posterior, static_argnums=(2, 5, 6, 7))(
        key, first, k, prior, n_total, cov, wt, init, reg, w0)
    chunks = chunker(mesh, d, cov, chunk_size)
    update = functools.partial(_svi_step, cov=cov, wt=wt)
    if mesh is not None:  # the mesh's step, from process 0's q
        from jaxvi import distributed

        post, running, shift = distributed.same_on_every_process((post, running, shift))
        update = _sharded_svi_fn(mesh, cov, wt)

    def step(state, t, batch, w):
        rho = jnp.asarray((t + 1.0 + float(delay)) ** (-float(kappa)), dt)
        post, running, estimate = update(*chunks(batch, w), *state, shift, prior, rho, n_total,
                                         reg)
        return (post, running), estimate

    (post, running), hist = run_stream(step, (post, running),
                                       itertools.chain([(first, w0)], stream))
    raise_if_not_finite(post, "Stochastic VI failed: the posterior is not finite (e.g. from "
                        "collapsed or duplicated points). Increase `reg_covar` or "
                        "`covariance_prior`, or lower the step sizes (`kappa`, `delay`).")
    return VariationalFitResult(post, hist[-1], jnp.asarray(hist.shape[0]),
                                jnp.zeros((), bool), hist)


def _check_svi_args(kappa, delay, covariance_type, weight_type, max_steps, reg_covar,
                    n_samples, init, chunk_size) -> None:
    if not 0.5 < float(kappa) <= 1.0:
        raise ValueError(f"`kappa` must be in (0.5, 1]; got {kappa!r}.")
    _validate.check_number("delay", delay)
    checks.check_covariance_type(covariance_type)
    _validate.check_choice("weight_concentration_prior_type", weight_type, WEIGHT_PRIOR_TYPES)
    if max_steps is not None:
        _validate.check_int("max_steps", max_steps, 1)
    _validate.check_number("reg_covar", reg_covar)
    _validate.check_number("n_samples", n_samples, 1.0)  # a total weight with sample_weight
    if isinstance(init, VariationalPosterior) or init not in em_init.INITS:
        _validate.check_choice("init", init, em_init.INITS)
    if chunk_size is not None:
        _validate.check_int("chunk_size", chunk_size, 1)
