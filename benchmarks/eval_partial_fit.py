"""`GaussianMixture.partial_fit` from scratch against `fit` on real data: the final mean
log-likelihood of the whole data set after streaming it in shuffled batches, over (ordering,
seed) pairs, against jaxvi's `fit` and scikit-learn's `GaussianMixture.fit` with the same
seed (scikit-learn's mixtures have no `partial_fit`).

    python -m benchmarks.eval_partial_fit           # 2 data sets x 20 pairs, JSON to results/
    python -m benchmarks.eval_partial_fit --quick   # smoke run (2 x 4 pairs, 5 passes)

Data: scikit-learn's breast cancer (standardised, first 6 features, N = 569) and wine
(standardised, 13 features, N = 178), K = 3, diagonal covariances; batches of 64 rows, each
pass a fresh permutation drawn from the ordering's seed, 30 passes. gap = fit's score −
partial_fit's score in nats/point (positive: partial_fit is worse). Target: gap ≤ 0.02 for
the large majority, never above 0.1.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.preprocessing import StandardScaler

from benchmarks._harness import print_device, print_table, write_result
from jaxvi import GaussianMixture


def datasets() -> dict:
    """name -> standardised data (N, D)."""
    cancer = load_breast_cancer().data[:, :6]
    return {"breast_cancer_6": StandardScaler().fit_transform(cancer),
            "wine": StandardScaler().fit_transform(load_wine().data)}


def streamed(x, k, seed, ordering, passes, batch) -> float:
    """Score on x of `partial_fit` over `passes` shuffled passes of batches of `batch` rows."""
    rng = np.random.default_rng(ordering)
    gm = GaussianMixture(k, covariance_type="diag", random_state=seed)
    for _ in range(passes):
        perm = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            gm.partial_fit(x[perm[i:i + batch]])
    return gm.score(x)


def summary(gaps) -> dict:
    gaps = np.asarray(gaps)
    return {"n": int(gaps.size), "median": float(np.median(gaps)),
            "p90": float(np.quantile(gaps, 0.9)), "max": float(gaps.max()),
            "min": float(gaps.min()), "within_0.02": int(np.sum(gaps <= 0.02)),
            "above_0.1": int(np.sum(gaps > 0.1))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args(argv)
    print_device()
    k, batch = 3, 64
    passes, seeds, orderings = (5, 2, 2) if args.quick else (30, 4, 5)
    rows, cases = [], []
    for name, x in datasets().items():
        print(f"{name}: N = {x.shape[0]}, D = {x.shape[1]}, K = {k}, diag, batches of {batch},"
              f" {passes} passes, {seeds} seeds x {orderings} orderings")
        gaps, gaps_sk = [], []
        for seed in range(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fit = GaussianMixture(k, covariance_type="diag", random_state=seed).fit(x)
                sk = SkGaussianMixture(k, covariance_type="diag", random_state=seed).fit(x)
            fit_score, sk_score = fit.score(x), sk.score(x)
            for ordering in range(orderings):
                t0 = time.perf_counter()
                score = streamed(x, k, seed, ordering, passes, batch)
                row = {"data": name, "seed": seed, "ordering": ordering,
                       "partial_fit": score, "fit": fit_score, "sklearn_fit": sk_score,
                       "gap_vs_fit": fit_score - score, "gap_vs_sklearn": sk_score - score,
                       "seconds": time.perf_counter() - t0}
                rows.append(row)
                gaps.append(row["gap_vs_fit"])
                gaps_sk.append(row["gap_vs_sklearn"])
        cases.append({"data": name, "N": x.shape[0], "D": x.shape[1],
                      "vs_fit": summary(gaps), "vs_sklearn_fit": summary(gaps_sk)})
    print_table(rows, ["data", "seed", "ordering", "partial_fit", "fit", "sklearn_fit",
                       "gap_vs_fit", "gap_vs_sklearn", "seconds"])
    every = [r["gap_vs_fit"] for r in rows]
    every_sk = [r["gap_vs_sklearn"] for r in rows]
    overall = {"vs_fit": summary(every), "vs_sklearn_fit": summary(every_sk)}
    for case in [*cases, {"data": "all", **overall}]:
        for ref in ("vs_fit", "vs_sklearn_fit"):
            s = case[ref]
            print(f"{case['data']:>16} {ref:>15}: median {s['median']:+.4f}, p90 "
                  f"{s['p90']:+.4f}, max {s['max']:+.4f}, within 0.02: {s['within_0.02']}/"
                  f"{s['n']}, above 0.1: {s['above_0.1']}")
    result = {"quick": args.quick, "K": k, "covariance_type": "diag", "batch": batch,
              "passes": passes, "cases": cases, "overall": overall, "runs": rows,
              "note": "gap = reference score - partial_fit score, nats/point on the whole "
                      "data set (positive: partial_fit worse); fit and scikit-learn's fit "
                      "with n_init = 1 and the pair's seed as random_state."}
    if not args.quick:
        write_result("eval_partial_fit", result)
    return result


if __name__ == "__main__":
    main()
