"""Benchmark `jaxvi.kl` against distrax and TFP (float32, jitted, medians after warm-up).

Run from the repository root: `python -m benchmarks.bench_kl` (or `python benchmarks/bench_kl.py`);
`--quick` uses tiny sizes for a smoke test and writes no JSON.

Cases (the sizes of issue 2):
  batched      10,000 pairs of full-covariance Gaussians, d = 16 and d = 64: jaxvi.mvn vs distrax
               MultivariateNormalFullCovariance and TFP MultivariateNormalFullCovariance.
  pairs_full   all pairs, p (2000, 1, 16) vs q (1, 32, 16), full covariance: jaxvi.mvn (factored
               fast path) vs distrax (whose KL needs the batch shapes broadcast to (2000, 32)).
  pairs_diag   all pairs, p (4096, 1, 32) vs q (1, 32, 32), diagonal: jaxvi.normal_diag vs
               distrax MultivariateNormalDiag (and the elementwise formula for reference).

`--mixtures` runs the table of issue 29 instead (and writes bench_kl_mixtures.json): every
estimator of KL between Gaussian mixtures and the other mixture divergences, on random mixtures
p, q with K = J = 2, 8, 32 components in D = 2, 16: each one's error against a high-accuracy
reference and its time (float32, jitted). KL reference: stratified Monte Carlo in float64 with
2^16 draws (its standard error is listed; errors below ~2 of them are not resolved); MW2: POT's
`ot.gmm.gmm_ot_loss` in float64 (also timed); the closed forms (Cauchy–Schwarz, L2,
Jensen–Rényi) are exact, so their error is float32 against float64.

FLOP/s are model counts (listed per case) over the median time, against a jitted 2048² matmul
measured in the same run.

On CPU, jaxlib runs batched Cholesky and triangular solves as one LAPACK call per matrix through
scipy's OpenBLAS, whose thread pool costs more than a 64×64 solve and thrashes when the cores
are shared: we measured 3-4× slower d = 64 solves with it. So this script sets
OPENBLAS_NUM_THREADS=1 (unless already set) for every implementation alike; XLA's own kernels
(matmuls, elementwise) are unaffected.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/jax load OpenBLAS; see above

if __package__ in (None, ""):  # `python benchmarks/bench_kl.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_probability.substrates.jax as tfp

from benchmarks._harness import matmul_flops_per_s, print_device, print_table, time_fn, write_result
from jaxvi.kl import gaussian as kl_gaussian

tfd = tfp.distributions


def _random_cov(key, batch, d):
    a = jax.random.normal(key, (*batch, d, d), jnp.float32)
    return a @ jnp.swapaxes(a, -1, -2) / d + jnp.eye(d, dtype=jnp.float32)


def _random_mvn(key, batch, d):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (*batch, d), jnp.float32), _random_cov(k2, batch, d)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))


@jax.jit
def _jaxvi_mvn(loc_p, cov_p, loc_q, cov_q):
    return kl_gaussian._mvn_impl(loc_p, cov_p, loc_q, cov_q)


@jax.jit
def _distrax_mvn(loc_p, cov_p, loc_q, cov_q):
    batch = jnp.broadcast_shapes(loc_p.shape[:-1], loc_q.shape[:-1])
    d = loc_p.shape[-1]
    p = distrax.MultivariateNormalFullCovariance(
        jnp.broadcast_to(loc_p, (*batch, d)), jnp.broadcast_to(cov_p, (*batch, d, d)))
    q = distrax.MultivariateNormalFullCovariance(
        jnp.broadcast_to(loc_q, (*batch, d)), jnp.broadcast_to(cov_q, (*batch, d, d)))
    return p.kl_divergence(q)


@jax.jit
def _tfp_mvn(loc_p, cov_p, loc_q, cov_q):
    p = tfd.MultivariateNormalFullCovariance(loc_p, cov_p)
    q = tfd.MultivariateNormalFullCovariance(loc_q, cov_q)
    return tfd.kl_divergence(p, q)


@jax.jit
def _jaxvi_diag(loc_p, scale_p, loc_q, scale_q):
    return kl_gaussian._normal_diag_impl(loc_p, scale_p, loc_q, scale_q)


@jax.jit
def _elementwise_diag(loc_p, scale_p, loc_q, scale_q):
    return kl_gaussian._normal_diag_elementwise(loc_p, scale_p, loc_q, scale_q)


@jax.jit
def _distrax_diag(loc_p, scale_p, loc_q, scale_q):
    return distrax.MultivariateNormalDiag(loc_p, scale_p).kl_divergence(
        distrax.MultivariateNormalDiag(loc_q, scale_q))


@jax.jit
def _tfp_diag(loc_p, scale_p, loc_q, scale_q):
    return tfd.kl_divergence(tfd.MultivariateNormalDiag(loc_p, scale_p),
                             tfd.MultivariateNormalDiag(loc_q, scale_q))


def _case(name, impls, args, flops, roofline, repeats, rounds, reference="distrax",
          min_round_s=0.01):
    """Time each implementation, check values against jaxvi, return a result row per impl.

    The implementations are timed in `rounds` interleaved rounds (each a harness median of
    `repeats` calls after warm-up, more calls, up to 10×, while a round is shorter than
    `min_round_s`, so that sub-millisecond calls are timed on a warm thread pool, like
    `timeit`'s autorange) and we keep the median over rounds, so that load from other
    processes on the shared cores hits every implementation alike.
    """
    values = {k: f(*args) for k, f in impls.items()}
    per_round = {k: [] for k in impls}
    for _ in range(rounds):
        for k, f in impls.items():
            per_round[k].append(time_fn(f, *args, warmup=1, repeats=repeats,
                                          min_time=min_round_s))
    times = {k: statistics.median(v) for k, v in per_round.items()}
    rows = []
    for k in impls:
        row = {
            "case": name,
            "impl": k,
            "median_s": times[k],
            "speedup_vs_" + reference: times[reference] / times[k],
            "rel_err_vs_jaxvi": _rel_err(values[k], values["jaxvi"]),
            "round_medians_s": per_round[k],
        }
        if k == "jaxvi":
            row["model_gflop_per_s"] = flops / times[k] / 1e9
            row["fraction_of_matmul"] = flops / times[k] / roofline
        rows.append(row)
    return rows


def _random_mixture(key, k, d, dtype):
    from jaxvi.mixture import Mixture

    k1, k2, k3, k4 = jax.random.split(key, 4)
    tril = (0.3 * jnp.tril(jax.random.normal(k3, (k, d, d), dtype), -1)
            + jnp.eye(d, dtype=dtype) * jnp.exp(0.3 * jax.random.normal(k4, (k, 1, d), dtype)))
    return Mixture(jax.random.normal(k1, (k,), dtype),
                   2.0 * jax.random.normal(k2, (k, d), dtype) / np.sqrt(d) ** 0.5, tril)


def _mixture_rows(k, d, key, repeats, quick):
    """One row per estimator for mixtures of K = J = k components in D = d."""
    from jaxvi.kl import approximations, divergences, mixtures, wasserstein
    from jaxvi.kl.estimates import monte_carlo

    kp, kq, kref, kmc = jax.random.split(key, 4)
    budget = 1024
    n_ref = (2**12 if quick else 2**16) // k
    with jax.enable_x64(True):
        p64, q64 = (_random_mixture(kk, k, d, jnp.float64) for kk in (kp, kq))
        eps = jax.random.normal(kref, (k, n_ref, d), jnp.float64)
        ref_kl, ref_se = (float(v) for v in approximations._stratified_impl(p64, q64, eps))
        ref_closed = {n: float(f(p64, q64)) for n, f in (
            ("cauchy_schwarz", divergences._cauchy_schwarz_impl),
            ("l2_squared", divergences._l2_squared_impl),
            ("jensen_renyi", lambda a, b: divergences._jensen_renyi_impl(a, b, 0.5)))}
        ref_mw2 = float(wasserstein._mixture_w2_impl(p64, q64))
    p, q = (jax.tree.map(lambda a: a.astype(jnp.float32), m) for m in (p64, q64))
    import ot.gmm
    from scipy.special import softmax

    def pot_mw2(a, b):
        cov = lambda t: t @ np.swapaxes(t, -1, -2)  # noqa: E731
        return ot.gmm.gmm_ot_loss(a.loc, b.loc, cov(a.scale_tril), cov(b.scale_tril),
                                  softmax(a.logits), softmax(b.logits))

    np_p, np_q = (jax.tree.map(lambda a: np.asarray(a, np.float64), m) for m in (p64, q64))
    n_strat = max(2, budget // k)
    kl_impls = {
        "kl_monte_carlo (1024 draws)": (jax.jit(
            lambda a, b: monte_carlo(kmc, a, b, budget).estimate), "estimate"),
        f"kl_stratified ({n_strat}/component)": (jax.jit(
            lambda a, b: approximations._stratified_impl(
                a, b, jax.random.normal(kmc, (k, n_strat, d)))[0]), "estimate"),
        "kl_unscented": (approximations._unscented_impl, "approximation"),
        "kl_variational": (mixtures._variational_impl, "approximation"),
        "kl_lower (Durrieu)": (mixtures._lower_impl, "lower bound"),
        "kl_product_upper (Durrieu)": (mixtures._product_upper_impl, "upper bound"),
        "kl_variational_upper": (functools.partial(mixtures._variational_upper_impl,
                                                   num_iters=20), "upper bound"),
        "kl_matched_upper": (mixtures._matched_impl, "upper bound"),
    }
    rows = []
    base = {"K": k, "D": d}
    for name, (fn, kind) in kl_impls.items():
        val = float(fn(p, q))
        rows.append({**base, "method": name, "kind": kind, "value": val, "reference": ref_kl,
                     "reference_stderr": ref_se, "abs_err": abs(val - ref_kl),
                     "rel_err": abs(val - ref_kl) / max(abs(ref_kl), 1e-12),
                     "median_s": time_fn(fn, p, q, warmup=1, repeats=repeats)})
    for name, fn in (("cauchy_schwarz", divergences._cauchy_schwarz_impl),
                     ("l2_squared", divergences._l2_squared_impl),
                     ("jensen_renyi", functools.partial(divergences._jensen_renyi_impl,
                                                        weight=0.5))):
        val = float(fn(p, q))
        rows.append({**base, "method": name, "kind": "closed form", "value": val,
                     "reference": ref_closed[name], "abs_err": abs(val - ref_closed[name]),
                     "rel_err": abs(val - ref_closed[name]) / max(abs(ref_closed[name]), 1e-300),
                     "median_s": time_fn(fn, p, q, warmup=1, repeats=repeats)})
    ref_pot = float(pot_mw2(np_p, np_q))
    for name, fn, args in (("mw2_squared", wasserstein._mixture_w2_impl, (p, q)),
                           ("mw2_squared POT (float64)", pot_mw2, (np_p, np_q))):
        val = float(fn(*args))
        rows.append({**base, "method": name, "kind": "exact OT", "value": val,
                     "reference": ref_pot, "abs_err": abs(val - ref_pot),
                     "rel_err": abs(val - ref_pot) / max(abs(ref_pot), 1e-12),
                     "median_s": time_fn(fn, *args, warmup=1, repeats=repeats)})
    assert abs(ref_mw2 - ref_pot) <= 1e-8 * max(1.0, ref_pot), (ref_mw2, ref_pot)
    return rows


def mixtures_main(args) -> int:
    device = print_device()
    sizes = [(2, 2), (8, 2)] if args.quick else [(k, d) for d in (2, 16) for k in (2, 8, 32)]
    keys = iter(jax.random.split(jax.random.key(29), len(sizes)))
    rows = []
    for k, d in sizes:
        rows += _mixture_rows(k, d, next(keys), args.repeats, args.quick)
        print(f"done K={k} D={d}", flush=True)
    print_table(rows, ["K", "D", "method", "kind", "value", "reference", "rel_err", "median_s"])
    if not args.quick:
        write_result("bench_kl_mixtures", {"dtype": "float32 (references float64)",
                                           "repeats": args.repeats, "rows": rows,
                                           "host": device})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no JSON")
    parser.add_argument("--repeats", type=int, default=5, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--mixtures", action="store_true",
                        help="the mixture-divergence table (issue 29) instead")
    args = parser.parse_args(argv)
    if args.mixtures:
        return mixtures_main(args)

    device = print_device()
    roofline = matmul_flops_per_s(512 if args.quick else 2048)
    print(f"jitted matmul: {roofline / 1e9:.1f} GFLOP/s (float32)")
    n_batched = 200 if args.quick else 10_000
    n_p, n_q = (50, 8) if args.quick else (2000, 32)
    n_pd, n_qd, d_diag = (64, 8, 8) if args.quick else (4096, 32, 32)
    dims = (4, 8) if args.quick else (16, 64)
    d_pairs = 8 if args.quick else 16

    keys = iter(jax.random.split(jax.random.key(0), 16))
    rows = []
    mvn_impls = {"jaxvi": _jaxvi_mvn, "distrax": _distrax_mvn, "tfp": _tfp_mvn}
    for d in dims:
        p = _random_mvn(next(keys), (n_batched,), d)
        q = _random_mvn(next(keys), (n_batched,), d)
        # 2 Choleskies (d³/3 each) + one triangular solve with d + 1 right-hand sides.
        flops = n_batched * (2 * d**3 / 3 + d * d * (d + 1))
        rows += _case(f"batched d={d} n={n_batched}", mvn_impls, (*p, *q), flops, roofline,
                      *((args.repeats, args.rounds) if d < 64 else (3, 3)))

    # All pairs, full covariance. The per-pair work of the factored path is two d²-long inner
    # products (trace, Mahalanobis) = 4 d² FLOPs; per distribution: Choleskies, inverses.
    p = _random_mvn(next(keys), (n_p, 1), d_pairs)
    q = _random_mvn(next(keys), (1, n_q), d_pairs)
    d = d_pairs
    flops = n_p * n_q * 4 * d * d + (n_p + n_q) * (d**3 / 3) + n_q * (d**3 + d**3 / 3) + n_p * d**3
    rows += _case(f"pairs_full ({n_p},1,{d}) vs (1,{n_q},{d})",
                  {"jaxvi": _jaxvi_mvn, "distrax": _distrax_mvn}, (*p, *q), flops, roofline,
                  args.repeats, args.rounds)

    # All pairs, diagonal. Per pair: three d-long inner products (trace, x², x·m) = 6 d FLOPs.
    kp, kq, ks, kt = jax.random.split(next(keys), 4)
    diag_args = (
        jax.random.normal(kp, (n_pd, 1, d_diag), jnp.float32),
        jnp.exp(0.3 * jax.random.normal(ks, (n_pd, 1, d_diag), jnp.float32)),
        jax.random.normal(kq, (1, n_qd, d_diag), jnp.float32),
        jnp.exp(0.3 * jax.random.normal(kt, (1, n_qd, d_diag), jnp.float32)),
    )
    flops = n_pd * n_qd * 6 * d_diag
    rows += _case(f"pairs_diag ({n_pd},1,{d_diag}) vs (1,{n_qd},{d_diag})",
                  {"jaxvi": _jaxvi_diag, "distrax": _distrax_diag, "tfp": _tfp_diag,
                   "elementwise": _elementwise_diag},
                  diag_args, flops, roofline, args.repeats, args.rounds)

    print_table(rows, ["case", "impl", "median_s", "speedup_vs_distrax", "rel_err_vs_jaxvi",
                       "model_gflop_per_s", "fraction_of_matmul"])
    worst = max(r["rel_err_vs_jaxvi"] for r in rows)
    tol = 1e-3
    if worst > tol:
        print(f"VALUE MISMATCH: max relative error {worst:.3g} > {tol}")
        return 1
    print(f"values agree: max relative error vs jaxvi {worst:.2g} (tolerance {tol})")
    if not args.quick:
        write_result("bench_kl", {"dtype": "float32", "matmul_flops_per_s": roofline,
                                  "repeats": args.repeats, "rounds": args.rounds,
                                  "rows": rows, "host": device,
                                  "openblas_num_threads": os.environ["OPENBLAS_NUM_THREADS"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
