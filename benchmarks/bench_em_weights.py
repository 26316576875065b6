"""EM with the data people have: seconds per EM iteration of `jaxvi.em.fit` with sample
weights against the same fit unweighted (target: within 1.1×), and scikit-learn's
GaussianMixture on the complete (unweighted) data, N = 100,000, D = 16, K = 16, full.

    python -m benchmarks.bench_em_weights           # the case above, JSON to results/
    python -m benchmarks.bench_em_weights --quick   # smoke run (N = 10,000)

Per iteration as in `bench_em`: (T(n iterations) − T(2)) / (n − 2) of whole fits from the
same initial parameters (tol = 0), float32, the unweighted and weighted fits timed in
alternating rounds (this host's speed drifts), medians over rounds. Weights are uniform on
[0, 2]. Other EM variants (missing values) add their rows here.
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import print_device, print_table, time_fn, write_result
from benchmarks.bench_em import initial_params, synthetic, time_sklearn
from jaxvi import _linalg, em


def time_fit_per_iter(x, k, init, n_iter, repeats, **kwargs) -> float:
    """(T(n_iter) − T(2)) / (n_iter − 2) seconds of `em.fit` from `init` (tol = 0)."""

    def fit(iters):
        return em.fit(x, k, key=jax.random.key(0), covariance_type="full", max_iter=iters,
                      tol=0.0, init=init, **kwargs)

    short, long = (time_fn(fit, iters, repeats=repeats) for iters in (2, n_iter))
    return (long - short) / (n_iter - 2)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    args = parser.parse_args(argv)
    print_device()
    n, d, k = (10_000 if args.quick else 100_000), 16, 16
    n_iter, repeats = (4, 2) if args.quick else (20, 3)
    load_before = os.getloadavg()
    x = synthetic(n, d, k)
    w = np.random.default_rng(1).uniform(0.0, 2.0, n)
    g0, precisions = initial_params(x, k, "full", 1e-6)
    with _linalg.single_threaded_lapack():
        xf = jax.device_put(jnp.asarray(x, jnp.float32))
        wf = jax.device_put(jnp.asarray(w, jnp.float32))
        init = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), g0)
        plain, weighted = [], []
        for _ in range(args.rounds):
            plain.append(time_fit_per_iter(xf, k, init, n_iter, repeats))
            weighted.append(time_fit_per_iter(xf, k, init, n_iter, repeats, sample_weight=wf))
        ll = float(em.fit(xf, k, key=jax.random.key(0), init=init, max_iter=n_iter, tol=0.0,
                          sample_weight=wf).log_likelihood)
    t_sk, _, _, _ = time_sklearn(x, g0, precisions, "full", k, n_iter, repeats, 1e-6)
    t_plain, t_weighted = statistics.median(plain), statistics.median(weighted)
    row = {"case": "synthetic", "cov": "full", "N": n, "D": d, "K": k, "iters": n_iter,
           "jaxvi_f32_s_per_iter": t_plain, "jaxvi_f32_weighted_s_per_iter": t_weighted,
           "weighted_over_unweighted": t_weighted / t_plain,
           "weighted_over_unweighted_best_rounds": min(weighted) / min(plain),
           "sklearn_s_per_iter": t_sk, "speedup_weighted_vs_sklearn": t_sk / t_weighted,
           "rounds_unweighted": plain, "rounds_weighted": weighted,
           "loglik_weighted_f32": ll}
    print_table([row], ["case", "N", "D", "K", "jaxvi_f32_s_per_iter",
                        "jaxvi_f32_weighted_s_per_iter", "weighted_over_unweighted",
                        "sklearn_s_per_iter", "speedup_weighted_vs_sklearn"])
    result = {"quick": args.quick, "cases": [row],
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "note": "s/iter = (T(n iters) - T(2 iters)) / (n - 2) of em.fit, float32, "
                      "unweighted and weighted (uniform [0, 2]) timed in alternating rounds; "
                      "scikit-learn: _e_step + _m_step on the unweighted data, the faster of "
                      "default and 1-thread BLAS (bench_em.time_sklearn)."}
    if not args.quick:
        write_result("bench_em_weights", result)
    return result


if __name__ == "__main__":
    main()
