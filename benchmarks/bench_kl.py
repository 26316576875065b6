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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no JSON")
    parser.add_argument("--repeats", type=int, default=5, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args(argv)

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
