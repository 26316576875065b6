"""jaxvi.em.online: stepwise EM reaches the full-batch likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import em
from jaxvi.em import online


def test_fit_minibatch_reaches_full_batch_likelihood(x64, blobs):
    x = blobs(seed=12, n_per=400, d=2, k=3, spread=5.0)
    # From the same rough start (k-means++ on 60 points, a few EM steps), as a user would.
    start = em.fit(x[:60], 3, key=jax.random.key(1), max_iter=3).gmm
    full = em.fit(x, 3, key=jax.random.key(0), init=start, max_iter=200, tol=1e-9)
    rng = np.random.default_rng(0)
    batches = (x[rng.choice(len(x), 100, replace=False)] for _ in range(80))
    res = em.fit_minibatch(batches, 3, key=jax.random.key(0), kappa=0.6, init=start)
    assert int(res.n_iter) == 80 and res.history.shape == (80,)
    ll = float(jnp.mean(em.log_prob(x, res.gmm)))
    assert ll > float(full.log_likelihood) - 0.01
    assert ll > float(jnp.mean(em.log_prob(x, start))) + 0.05  # it did learn
    with pytest.raises(ValueError, match="`kappa`"):
        em.fit_minibatch([x], 3, key=jax.random.key(0), kappa=0.3)


def test_fit_minibatch_raises_when_the_fit_is_not_finite(x64):
    """Like the full-batch fits, stepwise EM refuses a non-finite mixture (duplicated points,
    no reg_covar: singular covariances), naming the arguments that fix it."""
    dup = np.repeat(np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]]), 8, axis=0)
    with pytest.raises(ValueError, match="Stepwise EM failed.*`reg_covar`"):
        em.fit_minibatch([dup, dup], 3, key=jax.random.key(0), reg_covar=0.0)


def _reference_stream(x_batches, gmm, kappa, reg_covar, running=None, seen=0.0, shift=None):
    """Stepwise EM by hand (precise E step, plain M step): s ← (1 − ρ) s + ρ ŝ with
    ρ = (W / w + 2)^(−κ) (1 for the first batch), W the weight seen before, w the batch's."""
    shift = jnp.mean(x_batches[0], axis=0) if shift is None else shift
    for xb in x_batches:
        stats, _ = em.e_step_stats(jnp.asarray(xb), gmm, shift)
        new = em.Stats(*(a / stats.count for a in stats))
        rho = 1.0 if seen == 0 else (seen / float(stats.count) + 2.0) ** (-kappa)
        running = new if running is None else em.Stats(
            *((1 - rho) * r + rho * s for r, s in zip(running, new, strict=True)))
        seen += float(stats.count)
        gmm = em.m_step_from_stats(running, shift, covariance_type=gmm.covariance_type,
                                   reg_covar=reg_covar)
    return gmm


def _assert_same_gmm(got, want):
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-9,
                                   atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_fit_minibatch_step_sizes_follow_the_weight_seen(x64, blobs, cov):
    # Batches of 40, 120 and 25 rows: ρ of each from the weight before it, in float64.
    x = blobs(seed=3, n_per=80, d=2, k=3)
    start = em.fit(x[:60], 3, key=jax.random.key(1), max_iter=3, covariance_type=cov).gmm
    sizes = np.cumsum([40, 120, 25, 55])[:-1]
    batches = np.split(x, sizes)
    res = em.fit_minibatch(batches, 3, key=jax.random.key(0), kappa=0.7, init=start,
                           reg_covar=1e-6, covariance_type=cov)
    ref = _reference_stream(batches, start, 0.7, 1e-6)
    _assert_same_gmm(res.gmm, ref)


def test_stepwise_resume_continues_as_after_the_data_seen(x64, blobs):
    # After `fit` on 240 rows, a batch of 60 gets ρ = (240/60 + 2)^(−κ), against the running
    # Stats of the 240 rows under the fitted mixture: not one EM step on the batch alone.
    x = jnp.asarray(blobs(seed=4, n_per=80, d=2, k=3))
    new = jnp.asarray(blobs(seed=5, n_per=20, d=2, k=3, offset=1.5))
    fitted = em.fit(x, 3, key=jax.random.key(0), max_iter=200, tol=1e-10).gmm
    state = online.stepwise_resume(fitted, x, kappa=0.6, reg_covar=1e-6)
    assert float(state.seen) == 240.0 and int(state.step) == 0
    state, ll = online.stepwise_step(state, new)
    shift = jnp.mean(x, axis=0)
    stats, _ = em.e_step_stats(x, fitted, shift)
    running = jax.tree_util.tree_map(lambda a: a / stats.count, stats)
    ref = _reference_stream([new], fitted, 0.6, 1e-6, running=running, seen=240.0,
                            shift=shift)
    _assert_same_gmm(state.gmm, ref)
    np.testing.assert_allclose(ll, jnp.mean(em.log_prob(new, fitted)), rtol=1e-12)
    # The batch moved the means by ρ ≈ 0.29 of what the batch alone would.
    alone = _reference_stream([new], fitted, 0.6, 1e-6)
    moved, alone_moved = (np.abs(np.asarray(g.means - fitted.means)).max()
                          for g in (state.gmm, alone))
    assert 0.15 * alone_moved < moved < 0.5 * alone_moved
