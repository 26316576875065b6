"""EM with missing values: seconds per EM iteration of `fit(..., missing="marginalize")` with
10 % of the entries missing in 20 distinct patterns, against complete-data `fit` on the same
points and scikit-learn's GaussianMixture on the complete data (it has no missing values).

    python -m benchmarks.bench_em_missing            # N = 100,000, D = 16, K = 16, full
    python -m benchmarks.bench_em_missing --quick    # smoke run

jaxvi's seconds per iteration are (T(n iterations) − T(2)) / (n − 2) of whole fits from the
same initial parameters (tol = 0), as in `bench_em`; scikit-learn's are its loop body
(`bench_em.time_sklearn`). The 20 patterns miss 1 or 2 of the 16 coordinates (8 and 12 of
them), assigned to rows uniformly at random: 10 % of the entries.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import print_device, print_table, time_fn, write_result
from benchmarks.bench_em import initial_params, synthetic, time_sklearn
from jaxvi import _linalg, em


def with_missing(x: np.ndarray, n_patterns: int = 20, seed: int = 1) -> np.ndarray:
    """x with NaN in `n_patterns` distinct patterns of 1 or 2 missing coordinates (2 for
    three fifths of them), one pattern per row at random: 10 % of the entries for D = 16."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    patterns = set()
    while len(patterns) < n_patterns:
        size = 2 if len(patterns) < 3 * n_patterns // 5 else 1
        patterns.add(tuple(sorted(rng.choice(d, size, replace=False))))
    holes = np.zeros((n_patterns, d), bool)
    for i, p in enumerate(sorted(patterns, key=len, reverse=True)):
        holes[i, list(p)] = True
    return np.where(holes[rng.integers(0, n_patterns, n)], np.nan, x)


def time_fit(x, g0, k, dtype, n_iter, repeats, missing):
    """(s per iteration of the fit loop, final mean log-likelihood)."""
    with jax.enable_x64(dtype == np.float64), _linalg.single_threaded_lapack():
        xd = jax.device_put(jnp.asarray(x, dtype))
        init = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), g0)

        def fit(iters):
            return em.fit(xd, k, key=jax.random.key(0), max_iter=iters, tol=0.0, init=init,
                          missing=missing)

        short, long = (time_fn(fit, iters, warmup=1, repeats=repeats) for iters in (2, n_iter))
        return (long - short) / (n_iter - 2), float(fit(n_iter).log_likelihood)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--n", type=int, default=None)
    args = parser.parse_args(argv)
    print_device()
    n = args.n or (10_000 if args.quick else 100_000)
    d, k, n_iter, repeats = 16, 16, (4 if args.quick else 12), 3
    x = synthetic(n, d, k)
    holey = with_missing(x)
    g0, precisions = initial_params(x, k, "full", 1e-6)
    rows = []
    for dtype in (np.float32, np.float64):
        t_full, ll_full = time_fit(x, g0, k, dtype, n_iter, repeats, None)
        t_miss, ll_miss = time_fit(holey, g0, k, dtype, n_iter, repeats, "marginalize")
        rows.append({"dtype": np.dtype(dtype).name, "N": n, "D": d, "K": k,
                     "missing_fraction": float(np.mean(np.isnan(holey))), "patterns": 20,
                     "complete_s_per_iter": t_full, "missing_s_per_iter": t_miss,
                     "ratio_missing_over_complete": t_miss / t_full,
                     "loglik_complete": ll_full, "loglik_missing_observed": ll_miss})
    t_sk, t_sk_default, t_sk_single, _ = time_sklearn(x, g0, precisions, "full", k, n_iter,
                                                      repeats, 1e-6)
    for row in rows:
        row["sklearn_complete_s_per_iter"] = t_sk
        row["speedup_missing_over_sklearn_complete"] = t_sk / row["missing_s_per_iter"]
    print_table(rows, ["dtype", "N", "missing_fraction", "complete_s_per_iter",
                       "missing_s_per_iter", "ratio_missing_over_complete",
                       "sklearn_complete_s_per_iter", "speedup_missing_over_sklearn_complete"])
    result = {"quick": args.quick, "cases": rows,
              "sklearn_s_per_iter_default_threads": t_sk_default,
              "sklearn_s_per_iter_blas_1_thread": t_sk_single,
              "note": "s/iter = (T(n iters) - T(2 iters)) / (n - 2) of fits from the same "
                      "initial parameters, tol = 0; scikit-learn: _e_step + _m_step on the "
                      "complete data, the faster of default and 1-thread BLAS."}
    if not args.quick:
        write_result("bench_em_missing", result)
    return result


if __name__ == "__main__":
    main()
