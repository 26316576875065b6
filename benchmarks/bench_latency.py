"""Small-data latency (issue 27): what a new user feels, jaxvi against scikit-learn timed in the
same run, every measurement in fresh processes, without the persistent compilation cache
(`JAXVI_COMPILATION_CACHE=0`) and with the default one (`import jaxvi` turns it on in the user
cache folder; here $XDG_CACHE_HOME points at a folder of the run) cold (empty) and warm
(filled by an earlier process). Four parts:

1. The steps on iris (150 x 4), in this order in one process per library: import (the estimator
   classes), first fit (K = 3, full), a refit with the same shapes, a fit on a new number of
   rows (120 of the 150), another configuration (K = 4, diagonal), `BayesianGaussianMixture`
   (K = 10) first fit, then `GridSearchCV` over 8 configurations (K in {2, 3, 4, 5} x {full,
   diag}) x 3 folds with `n_jobs=1` in one process and `n_jobs=2` in another. Each jaxvi
   process has its own scikit-learn peer, run just before it with the same `n_jobs`; a ratio
   is jaxvi / that peer. `n_jobs=2`'s workers are separate processes: they get the cache through
   the environment (`JAX_COMPILATION_CACHE_DIR` and the two thresholds `import jaxvi` sets);
   the run "warm_parent_only" (`--parent-only`) is the same with the workers' cache off.
2. The crossover: the first `GaussianMixture` fit in a fresh process with a warm cache (and a
   cold one) against scikit-learn's, on synthetic data (N rows, D features, K components),
   for full and diagonal covariances, and the N above which jaxvi is faster.
3. `jaxvi.kl.mvn` on a batch of Gaussian pairs, first call in a fresh process (no, cold, warm
   cache) against the same formula in NumPy (float64).
4. `BayesianGaussianMixture`'s start against scikit-learn's (lower bound and kept components
   over 6 seeds on iris), with `init_params="kmeans"` (the default: a converged k-means) and
   with "k-means++" (seeding and 10 Lloyd steps, the former default).

    python -m benchmarks.bench_latency            # ~10-15 minutes on a loaded 2-core CPU
    python -m benchmarks.bench_latency --quick    # a smoke run: fewer processes and sizes
    python -m benchmarks.bench_latency --readme   # README.md's block from the committed JSON

Wall-clock seconds (`time.perf_counter`), results in benchmarks/results/bench_latency.json.
The README's small-data numbers are generated from that JSON by `--readme` (between the
`<!-- bench_latency:begin -->` and `<!-- bench_latency:end -->` markers), never typed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULT = ROOT / "benchmarks" / "results" / "bench_latency.json"
BEGIN, END = "<!-- bench_latency:begin -->", "<!-- bench_latency:end -->"

STEPS = ("import", "first_fit", "refit", "new_n", "other_config", "bayesian_first_fit",
         "grid_search", "grid_search_n_jobs2")
STEP_NAMES = {"import": "import", "first_fit": "first fit (K = 3, full)",
              "refit": "refit, same shapes", "new_n": "fit on a new N (120 of 150 rows)",
              "other_config": "another configuration (K = 4, diag)",
              "bayesian_first_fit": "`BayesianGaussianMixture` first fit (K = 10)",
              "grid_search": "`GridSearchCV` 8 x 3, `n_jobs=1`",
              "grid_search_n_jobs2": "`GridSearchCV` 8 x 3, `n_jobs=2`"}
VARIANTS = ("no_cache", "cold", "warm", "warm_parent_only")
VARIANT_NAMES = {"no_cache": "no cache", "cold": "cold cache", "warm": "warm cache",
                 "warm_parent_only": "warm, parent only"}
GRID = {"n_components": [2, 3, 4, 5], "covariance_type": ["full", "diag"]}
QUICK_GRID = {"n_components": [2, 3], "covariance_type": ["full"]}  # --quick, with cv=2
CROSS_N = (150, 1_000, 10_000, 100_000)
CROSS_SHAPES = ((8, 5),)  # (D, K); --shapes adds others (each ~1.5 min)
CROSS_COVS = ("full", "diag")
CROSS_SPREAD = 1.0  # centres ~ N(0, 1) per coordinate, cluster scales 0.5-1.5: overlapping
KL_BATCHES = (1_000, 100_000)
KL_DIM = 8
# The environment of the cache: what `import jaxvi` sets (a process started later, a
# GridSearchCV worker, reads it when it imports JAX) and its opt-out; a fresh process of this
# benchmark inherits none of them.
_CACHE_ENV = ("JAX_ENABLE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "JAXVI_COMPILATION_CACHE")


# ------------------------------------------------------------------------------------------
# Workers: each runs in a fresh process and prints one JSON line.
# ------------------------------------------------------------------------------------------
def _import(lib: str):
    """The estimator classes of `lib` (for jaxvi with its default cache: see `_fresh`)."""
    if lib == "jaxvi":
        import jaxvi

        return jaxvi.GaussianMixture, jaxvi.BayesianGaussianMixture
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    return GaussianMixture, BayesianGaussianMixture


def _steps_worker(lib: str, n_jobs: int | None,
                  export_env: bool, quick: bool = False) -> dict:
    """Issue 27's steps on iris in this (fresh) process -> {step: seconds, ...}; no
    `GridSearchCV` when n_jobs is None."""
    t0 = time.perf_counter()
    gm_cls, bgm_cls = _import(lib)
    out = {"import": time.perf_counter() - t0}
    if not export_env:  # the workers without the cache
        for name in _CACHE_ENV:
            os.environ.pop(name, None)
        os.environ["JAXVI_COMPILATION_CACHE"] = "0"
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV

    x = load_iris().data

    def timed(name, fn):
        t = time.perf_counter()
        model = fn()
        out[name] = time.perf_counter() - t
        return model

    out["first_fit_n_iter"] = timed("first_fit", lambda: gm_cls(3, random_state=0).fit(x)).n_iter_
    timed("refit", lambda: gm_cls(3, random_state=1).fit(x))
    timed("new_n", lambda: gm_cls(3, random_state=0).fit(x[:120]))
    timed("other_config", lambda: gm_cls(4, covariance_type="diag", random_state=0).fit(x))
    timed("bayesian_first_fit",
          lambda: bgm_cls(n_components=10, random_state=0, max_iter=500).fit(x))
    if n_jobs is None:
        return out
    grid = timed("grid_search" if n_jobs == 1 else f"grid_search_n_jobs{n_jobs}",
                 lambda: GridSearchCV(gm_cls(random_state=0), QUICK_GRID if quick else GRID,
                                      cv=2 if quick else 3, n_jobs=n_jobs).fit(x))
    out["grid_best"] = {k: (v if isinstance(v, str) else int(v))
                        for k, v in grid.best_params_.items()}
    return out


def synthetic(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """(n, d) float64 rows from k overlapping Gaussian clusters with random centres
    (`CROSS_SPREAD`), rotations and scales: EM takes ~5-15 iterations, as on iris (17), not
    the 2-3 of well-separated clusters, where the first fit is all start-up."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, CROSS_SPREAD, (k, d))
    rotations = np.linalg.qr(rng.standard_normal((k, d, d)))[0]
    scales = rng.uniform(0.5, 1.5, (k, d))
    labels = rng.integers(k, size=n)
    z = rng.standard_normal((n, d)) * scales[labels]
    return centres[labels] + np.einsum("nij,nj->ni", rotations[labels], z)


def _cross_worker(lib: str, cov: str, n: int, d: int, k: int) -> dict:
    """First and second `GaussianMixture` fit on `synthetic(n, d, k)` in this process."""
    t0 = time.perf_counter()
    gm_cls, _ = _import(lib)
    out = {"import": time.perf_counter() - t0}
    x = synthetic(n, d, k)
    t = time.perf_counter()
    gm = gm_cls(k, covariance_type=cov, random_state=0).fit(x)
    out["first_fit"] = time.perf_counter() - t
    out["n_iter"] = int(gm.n_iter_)
    out["lower_bound"] = float(gm.lower_bound_)
    return out


def kl_numpy(loc_p, cov_p, loc_q, cov_q) -> np.ndarray:
    """KL(N(loc_p, cov_p) || N(loc_q, cov_q)) over a batch, NumPy float64: the reference."""
    d = loc_p.shape[-1]
    chol_p, chol_q = np.linalg.cholesky(cov_p), np.linalg.cholesky(cov_q)
    trace = np.trace(np.linalg.solve(cov_q, cov_p), axis1=-2, axis2=-1)
    diff = (loc_q - loc_p)[..., None]
    maha = (diff * np.linalg.solve(cov_q, diff)).sum(axis=(-2, -1))
    logdet = 2.0 * (np.log(np.diagonal(chol_q, axis1=-2, axis2=-1)).sum(-1)
                    - np.log(np.diagonal(chol_p, axis1=-2, axis2=-1)).sum(-1))
    return 0.5 * (trace + maha - d + logdet)


def _kl_pairs(b: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, b, d, d)) / np.sqrt(d)
    covs = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    locs = rng.standard_normal((2, b, d))
    return locs[0], covs[0], locs[1], covs[1]


def _kl_worker(lib: str, b: int, d: int) -> dict:
    """`kl.mvn` (or the NumPy formula) on b pairs in D = d: import, first and second call."""
    t0 = time.perf_counter()
    if lib == "jaxvi":
        from jaxvi import kl

        def fn(*args):
            return np.asarray(kl.mvn(*args))
    else:
        fn = kl_numpy
    out = {"import": time.perf_counter() - t0}
    for name, seed in (("first_call", 0), ("second_call", 1)):
        args = _kl_pairs(b, d, seed)
        t = time.perf_counter()
        value = fn(*args)
        out[name] = time.perf_counter() - t
    ref = kl_numpy(*args)
    out["max_rel_err_vs_numpy"] = float(np.max(np.abs(value - ref) / np.abs(ref)))
    return out


def _worker(spec: dict) -> dict:
    kind = spec.pop("kind")
    spec.pop("cache_dir")  # the process's environment (`_fresh`) holds it
    return {"steps": _steps_worker, "cross": _cross_worker, "kl": _kl_worker}[kind](**spec)


def _fresh(**spec) -> dict:
    """Run one worker in a fresh Python process: no cache settings inherited; jaxvi's default
    cache in spec["cache_dir"] (as $XDG_CACHE_HOME), or off where that is None."""
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_ENV}
    if spec.get("cache_dir"):
        env["XDG_CACHE_HOME"] = spec["cache_dir"]
    else:
        env["JAXVI_COMPILATION_CACHE"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "benchmarks.bench_latency", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------
# The parts
# ------------------------------------------------------------------------------------------
def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def steps_part(repeats: int, quick: bool, parent_only: bool) -> dict:
    """Part 1: issue 27's steps; one scikit-learn peer per jaxvi process."""
    runs = []

    def pair(variant, cache_dir, n_jobs, export_env=True):
        sk = _fresh(kind="steps", lib="sklearn", cache_dir=None, n_jobs=n_jobs,
                    export_env=False, quick=quick)
        jx = _fresh(kind="steps", lib="jaxvi", cache_dir=cache_dir, n_jobs=n_jobs,
                    export_env=export_env, quick=quick)
        runs.append({"variant": variant, "n_jobs": n_jobs, "sklearn": sk, "jaxvi": jx})
        grid = {1: "grid_search", 2: "grid_search_n_jobs2"}.get(n_jobs)
        print(f"  {variant:16s} n_jobs={n_jobs}: first fit {jx['first_fit']:.3g} s "
              f"(sklearn {sk['first_fit']:.3g} s)" + (f", grid {jx[grid]:.3g} s (sklearn "
                                                     f"{sk[grid]:.3g} s)" if grid else ""),
              flush=True)

    with tempfile.TemporaryDirectory(prefix="jaxvi-bench-latency-") as tmp:
        folders = {n_jobs: str(Path(tmp) / f"n_jobs{n_jobs}") for n_jobs in (1, 2)}
        # Without the cache a search compiles what a cold-cache one does (minus the writes,
        # plus nothing): its 1-2 minutes are spent once, in the cold rows.
        pair("no_cache", None, None)
        for n_jobs in (1, 2):
            pair("cold", folders[n_jobs], n_jobs)
        for _ in range(repeats):
            for n_jobs in (1, 2):
                pair("warm", folders[n_jobs], n_jobs)
        if parent_only:
            pair("warm_parent_only", folders[2], 2, export_env=False)

    return summarise_steps(runs)


def summarise_steps(runs: list[dict]) -> dict:
    """The table of part 1 from its runs: per step and variant, jaxvi's seconds, its peers'
    seconds and the per-pair ratios (median, min, max), and `ratio_of_medians`: jaxvi's median
    over the median of every scikit-learn process of the run (robust to one peer that a
    loaded host slowed or spared); `n_jobs=2` over `n_jobs=1` search times."""
    table = []
    for step in STEPS:
        sk_all = [r["sklearn"][step] for r in runs if step in r["sklearn"]]
        row = {"step": step, "sklearn_s": _spread(sk_all)}
        for variant in VARIANTS:
            pairs = [r for r in runs if r["variant"] == variant and step in r["jaxvi"]]
            if not pairs:
                continue
            jx = [r["jaxvi"][step] for r in pairs]
            row[variant] = {"jaxvi_s": _spread(jx),
                            "sklearn_s": _spread([r["sklearn"][step] for r in pairs]),
                            "ratio": _spread([r["jaxvi"][step] / r["sklearn"][step]
                                              for r in pairs]),
                            "ratio_of_medians": statistics.median(jx)
                            / statistics.median(sk_all)}
        table.append(row)
    n_jobs2 = {}
    for variant, one_variant in (("cold", "cold"), ("warm", "warm"),
                                 ("warm_parent_only", "warm")):
        one = [r["jaxvi"]["grid_search"] for r in runs
               if r["variant"] == one_variant and r["n_jobs"] == 1]
        two = [r["jaxvi"]["grid_search_n_jobs2"] for r in runs
               if r["variant"] == variant and r["n_jobs"] == 2]
        if one and two:
            n_jobs2[variant] = statistics.median(two) / statistics.median(one)
    sk_one = [r["sklearn"]["grid_search"] for r in runs if r["n_jobs"] == 1]
    sk_two = [r["sklearn"]["grid_search_n_jobs2"] for r in runs if r["n_jobs"] == 2]
    n_jobs2["sklearn"] = statistics.median(sk_two) / statistics.median(sk_one)
    return {"runs": runs, "table": table, "n_jobs2_over_n_jobs1": n_jobs2}


def _crossover(ns: list[int], ratios: list[float]) -> dict:
    """The N above which ratio (jaxvi / sklearn) stays < 1: the smallest tested N from which
    on every ratio is below 1, and a log-log interpolation between it and the N before."""
    faster = [r < 1.0 for r in ratios]
    first = next((i for i in range(len(ns)) if all(faster[i:])), None)
    if first is None:
        return {"tested_n_faster_from": None, "estimate": None, "note": f"> {ns[-1]:,}"}
    if first == 0:
        return {"tested_n_faster_from": ns[0], "estimate": None, "note": f"≤ {ns[0]:,}"}
    lo, hi = first - 1, first
    x0, x1 = np.log(ns[lo]), np.log(ns[hi])
    y0, y1 = np.log(ratios[lo]), np.log(ratios[hi])
    estimate = float(np.exp(x0 + (0.0 - y0) * (x1 - x0) / (y1 - y0)))
    return {"tested_n_faster_from": ns[hi], "estimate": estimate,
            "note": f"between {ns[lo]:,} and {ns[hi]:,}"}


def crossover_part(ns, shapes) -> dict:
    """Part 2: per (covariance, D, K, N), fresh processes: scikit-learn, jaxvi with an empty
    cache folder of its own (cold, which fills it) and jaxvi again on that folder (warm)."""
    cells = []
    with tempfile.TemporaryDirectory(prefix="jaxvi-bench-cross-") as tmp:
        for d, k in shapes:
            for cov in CROSS_COVS:
                for n in ns:
                    folder = str(Path(tmp) / f"{cov}-{d}-{k}-{n}")
                    spec = dict(kind="cross", cov=cov, n=n, d=d, k=k)
                    sk = _fresh(lib="sklearn", cache_dir=None, **spec)
                    cold = _fresh(lib="jaxvi", cache_dir=folder, **spec)
                    warm = _fresh(lib="jaxvi", cache_dir=folder, **spec)
                    cell = {"cov": cov, "D": d, "K": k, "N": n, "sklearn": sk, "cold": cold,
                            "warm": warm}
                    for v in ("cold", "warm"):
                        cell[f"{v}/sklearn"] = cell[v]["first_fit"] / sk["first_fit"]
                        cell[f"{v}/sklearn_with_import"] = (
                            (cell[v]["import"] + cell[v]["first_fit"])
                            / (sk["import"] + sk["first_fit"]))
                    cells.append(cell)
                    print(f"  {cov:4s} D={d:2d} K={k} N={n:>6d}: sklearn {sk['first_fit']:.3g} s"
                          f" ({sk['n_iter']} it), jaxvi warm {warm['first_fit']:.3g} s, cold "
                          f"{cold['first_fit']:.3g} s ({warm['n_iter']} it): warm/sklearn "
                          f"{cell['warm/sklearn']:.3g}", flush=True)
    return summarise_crossover(cells, ns, shapes)


def summarise_crossover(cells: list[dict], ns, shapes) -> dict:
    """Part 2's crossovers from its cells, per covariance type and shape."""
    crossovers = []
    for d, k in shapes:
        for cov in CROSS_COVS:
            mine = [c for c in cells if (c["cov"], c["D"], c["K"]) == (cov, d, k)]
            entry = {"cov": cov, "D": d, "K": k}
            for key in ("warm/sklearn", "warm/sklearn_with_import", "cold/sklearn"):
                entry[key] = _crossover([c["N"] for c in mine], [c[key] for c in mine])
            crossovers.append(entry)
    return {"ns": list(ns), "shapes": [list(s) for s in shapes], "cells": cells,
            "crossover": crossovers}


def derive(result: dict) -> dict:
    """Recompute every derived field of a result (tables, targets, crossovers) from its raw
    measurements, so that the JSON and the README follow this file's definitions."""
    result["steps"] = summarise_steps(result["steps"]["runs"])
    result["targets"] = targets(result["steps"])
    if "crossover" in result:
        c = result["crossover"]
        result["crossover"] = summarise_crossover(c["cells"], c["ns"],
                                                  [tuple(s) for s in c["shapes"]])
    return result


def kl_part(batches) -> dict:
    """Part 3: `kl.mvn` first call in fresh processes (no, cold, warm cache) and NumPy's."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxvi-bench-kl-") as tmp:
        for b in batches:
            folder = str(Path(tmp) / str(b))
            for variant, cache in (("no_cache", None), ("cold", folder), ("warm", folder)):
                ref = _fresh(kind="kl", lib="numpy", cache_dir=None, b=b, d=KL_DIM)
                jx = _fresh(kind="kl", lib="jaxvi", cache_dir=cache, b=b, d=KL_DIM)
                row = {"batch": b, "D": KL_DIM, "variant": variant, "jaxvi": jx, "numpy": ref,
                       "first_call_ratio": jx["first_call"] / ref["first_call"],
                       "with_import_ratio": ((jx["import"] + jx["first_call"])
                                             / (ref["import"] + ref["first_call"])),
                       "second_call_ratio": jx["second_call"] / ref["second_call"]}
                rows.append(row)
                print(f"  kl.mvn batch {b:>6d} D={KL_DIM} {variant:8s}: first call "
                      f"{jx['first_call']:.3g} s (NumPy {ref['first_call']:.3g} s), second "
                      f"{jx['second_call']:.3g} s (NumPy {ref['second_call']:.3g} s), "
                      f"rel. err {jx['max_rel_err_vs_numpy']:.1e}", flush=True)
    return {"rows": rows}


def bayesian_seeds(n_seeds: int = 6) -> list[dict]:
    """Lower bound and components kept (weight > 0.01) of `BayesianGaussianMixture`
    (K = 10, max_iter = 500) on iris from the same random_state: scikit-learn; jaxvi with
    `init_params="kmeans"` (the default, a converged k-means: `jaxvi.em` init "kmeans"); and
    jaxvi with "k-means++" (seeding + 10 Lloyd steps, the former default)."""
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.mixture import BayesianGaussianMixture as SkBGM

    import jaxvi

    x = load_iris().data
    rows = []
    for seed in range(n_seeds):
        kw = dict(n_components=10, random_state=seed, max_iter=500)
        j = jaxvi.BayesianGaussianMixture(**kw).fit(x)
        jk = jaxvi.BayesianGaussianMixture(init_params="k-means++", **kw).fit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = SkBGM(**kw).fit(x)
        rows.append(dict(seed=seed, sklearn_lower_bound=float(s.lower_bound_),
                         jaxvi_lower_bound=float(j.lower_bound_),
                         jaxvi_kmeanspp_lower_bound=float(jk.lower_bound_),
                         sklearn_kept=int(np.sum(s.weights_ > 0.01)),
                         jaxvi_kept=int(np.sum(j.weights_ > 0.01)),
                         jaxvi_kmeanspp_kept=int(np.sum(jk.weights_ > 0.01))))
    return rows


def _bayesian_summary(seeds: list[dict]) -> dict:
    sk = np.array([r["sklearn_lower_bound"] for r in seeds])
    from jaxvi.estimators import _base

    out = {"n_seeds": len(seeds), "estimator_init_kmeans_maps_to": _base.INIT_PARAMS["kmeans"],
           "sklearn_mean_lower_bound": float(sk.mean()),
           "sklearn_mean_kept": float(np.mean([r["sklearn_kept"] for r in seeds]))}
    for name in ("jaxvi", "jaxvi_kmeanspp"):
        lb = np.array([r[f"{name}_lower_bound"] for r in seeds])
        out[f"{name}_mean_lower_bound"] = float(lb.mean())
        out[f"{name}_seeds_not_below_sklearn"] = int(np.sum(lb >= sk - 1e-6))
        out[f"{name}_mean_kept"] = float(np.mean([r[f"{name}_kept"] for r in seeds]))
    return out


# ------------------------------------------------------------------------------------------
# Targets, printing, README
# ------------------------------------------------------------------------------------------
def targets(steps: dict) -> dict:
    """Issue 27's targets, each judged on the median of the per-pair ratios (the range and the
    ratio of medians beside)."""
    rows = {r["step"]: r for r in steps["table"]}

    def check(step, variant, limit):
        cell = rows[step][variant]
        value = cell["ratio"]["median"]
        return {"step": step, "variant": variant, "limit": limit, "median": value,
                "min": cell["ratio"]["min"], "max": cell["ratio"]["max"],
                "ratio_of_medians": cell["ratio_of_medians"], "met": value <= limit}

    out = {"warm_first_fit": check("first_fit", "warm", 1.5),
           "cold_first_fit": check("first_fit", "cold", 5.0),
           "no_cache_first_fit": check("first_fit", "no_cache", 5.0)}
    for variant in ("no_cache", "cold", "warm"):
        out[f"{variant}_new_n"] = check("new_n", variant, 1.5)
    for variant in ("cold", "warm"):
        out[f"{variant}_grid_search"] = check("grid_search", variant, 2.0)
        out[f"{variant}_grid_search_n_jobs2"] = check("grid_search_n_jobs2", variant, 2.0)
    for variant, value in steps["n_jobs2_over_n_jobs1"].items():
        if variant != "sklearn":
            out[f"{variant}_n_jobs2_not_slower"] = {"variant": variant, "limit": 1.0,
                                                   "median": value, "met": value <= 1.0}
    return out


def _num(v: float) -> str:
    """Two significant digits, never in e-notation (1,234 -> "1,234", 0.0123 -> "0.012")."""
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def _range(spread: dict, fmt=_num) -> str:
    lo, hi = fmt(spread["min"]), fmt(spread["max"])
    return lo if lo == hi else f"{lo}–{hi}"


def _seconds(spread: dict) -> str:
    return _range(spread) + " s"


def print_results(result: dict) -> None:
    from benchmarks._harness import print_table

    rows = []
    for row in result["steps"]["table"]:
        line = {"step": row["step"], "sklearn s": _range(row["sklearn_s"], "{:.3g}".format)}
        for variant in VARIANTS:
            if variant in row:
                line[f"{variant} s"] = _range(row[variant]["jaxvi_s"], "{:.3g}".format)
                line[f"{variant}/sk"] = (f"{row[variant]['ratio']['median']:.3g} ("
                                         + _range(row[variant]["ratio"], "{:.3g}".format) + ")")
        rows.append(line)
    cols = ["step", "sklearn s"] + [f"{v}{s}" for v in VARIANTS for s in (" s", "/sk")]
    print("\niris steps (ratio = jaxvi / its scikit-learn peer: median (min-max) over runs)")
    print_table(rows, cols)
    print("n_jobs=2 / n_jobs=1 GridSearchCV:", {k: round(v, 3) for k, v in
                                                result["steps"]["n_jobs2_over_n_jobs1"].items()})
    print("\ntargets:")
    for name, t in result["targets"].items():
        print(f"  {name:36s} {t['median']:.3g} (limit {t['limit']}; ratio of medians "
              f"{t.get('ratio_of_medians', t['median']):.3g}): "
              f"{'met' if t['met'] else 'NOT met'}")
    if "crossover" in result:
        print("\ncrossover N (jaxvi first fit in a fresh process faster than scikit-learn's):")
        for c in result["crossover"]["crossover"]:
            print(f"  {c['cov']:4s} D={c['D']} K={c['K']}: warm {_where(c['warm/sklearn'])}, "
                  f"with import {_where(c['warm/sklearn_with_import'])}, cold "
                  f"{_where(c['cold/sklearn'])}")
    if "kl" in result:
        print("\nkl.mvn first call / NumPy:", [(r["batch"], r["variant"],
                                                 round(r["first_call_ratio"], 3))
                                                for r in result["kl"]["rows"]])


def readme_block(result: dict) -> str:
    """The README's small-data numbers, generated from bench_latency.json."""
    dev = result["device"]
    steps = result["steps"]
    lines = [
        f"Measured by `python -m benchmarks.bench_latency` ({result['time'][:10]}, "
        f"{dev['cpu_count']}-core {dev['platform'].upper()} shared with other jobs, 1-minute "
        f"load {result['load_average_at_start'][0]:.1f} at the start, "
        f"jax {dev['jax']}{', quick run' if result.get('quick') else ''}). Every number comes "
        "from fresh processes, each jaxvi process run just after a scikit-learn peer (warm "
        f"cache: {2 * result['repeats']} per step before the search, {result['repeats']} per "
        "search; cold cache: 2 and 1; no cache: 1, no search). A ratio is a jaxvi "
        "process's time over its peer's (below 1: jaxvi is faster): the median over the "
        "processes, in brackets their range, then jaxvi's seconds. The spread is the host's: "
        "scikit-learn's own first fit took "
        f"{_range(steps['table'][1]['sklearn_s'])} s in this run. The cache is the one "
        "`import jaxvi` turns on by default (no cache: `JAXVI_COMPILATION_CACHE=0`); cold: an "
        "empty cache folder; warm: a folder an earlier process filled. iris, 150 × 4:",
        "",
        "| step | scikit-learn, median (range) | jaxvi, no cache | cold cache | warm cache |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in steps["table"]:
        sk = row["sklearn_s"]
        cells = [STEP_NAMES[row["step"]], f"{_num(sk['median'])} s ({_range(sk)})"]
        for variant in ("no_cache", "cold", "warm"):
            r = row.get(variant)
            cells.append(f"{_num(r['ratio']['median'])}× ({_range(r['ratio'])}×; "
                         f"{_seconds(r['jaxvi_s'])})" if r else "not run (as cold)")
        lines.append("| " + " | ".join(cells) + " |")
    n2 = steps["n_jobs2_over_n_jobs1"]
    parent = next((row["warm_parent_only"] for row in steps["table"]
                   if "warm_parent_only" in row and row["step"] == "grid_search_n_jobs2"), None)
    lines += ["", (f"`GridSearchCV`'s `n_jobs=2` time over its `n_jobs=1` time: jaxvi "
                   f"{_num(n2['cold'])} (cold), {_num(n2['warm'])} (warm); scikit-learn "
                   f"{_num(n2['sklearn'])} (starting two workers costs more than iris' fits). "
                   "The workers get the cache through the environment, which "
                   "`import jaxvi` sets; with their cache off, each worker compiles every "
                   "configuration it meets" + (
                       f": a warm `n_jobs=2` search then takes "
                       f"{_num(parent['ratio']['median'])}× scikit-learn's "
                       f"({_seconds(parent['jaxvi_s'])})." if parent
                       else ", as the cold row's workers do."))]
    if "crossover" in result:
        cross = result["crossover"]
        lines += ["", "The crossover: a first `GaussianMixture` fit in a fresh process on "
                  "overlapping synthetic clusters (`benchmarks.bench_latency.synthetic`), "
                  "jaxvi over scikit-learn (warm cache; cold in brackets; the import "
                  "not counted unless said):", "",
                  "| covariance, D, K | " + " | ".join(f"N = {n:,}" for n in cross["ns"])
                  + " | jaxvi faster from |",
                  "| --- | " + " | ".join("---" for _ in cross["ns"]) + " | --- |"]
        for c in cross["crossover"]:
            mine = [x for x in cross["cells"] if (x["cov"], x["D"], x["K"]) ==
                    (c["cov"], c["D"], c["K"])]
            cells = [f"{_num(x['warm/sklearn'])}× ({_num(x['cold/sklearn'])}×)" for x in mine]
            where = "; ".join(f"{label}{_where(c[key])}" for label, key in (
                ("", "warm/sklearn"), ("counting the import: ", "warm/sklearn_with_import"),
                ("cold: ", "cold/sklearn")))
            lines.append(f"| {c['cov']}, {c['D']}, {c['K']} | " + " | ".join(cells)
                         + f" | {where} |")
    if "kl" in result:
        lines += ["", f"`jaxvi.kl.mvn` on a batch of Gaussian pairs (D = {KL_DIM}, float32) "
                  "in a fresh process against the same formula in NumPy (float64), jaxvi / "
                  "NumPy:", "",
                  "| batch | NumPy first call | first call, no cache | cold cache | warm cache "
                  "| second call (compiled) |", "| --- | --- | --- | --- | --- | --- |"]
        for b in sorted({r["batch"] for r in result["kl"]["rows"]}):
            mine = {r["variant"]: r for r in result["kl"]["rows"] if r["batch"] == b}
            second = _spread([r["second_call_ratio"] for r in mine.values()])
            cells = [_seconds(_spread([r["numpy"]["first_call"] for r in mine.values()]))]
            cells += [f"{_num(mine[v]['first_call_ratio'])}×" for v in ("no_cache", "cold",
                                                                           "warm")]
            lines.append(f"| {b:,} | " + " | ".join(cells) + f" | {_range(second)}× |")
    t = result["targets"]

    def verdict(*names):
        return ", ".join(f"{VARIANT_NAMES[t[n]['variant']]} {_num(t[n]['median'])}×"
                         f" ({'met' if t[n]['met'] else 'not met'})" for n in names if n in t)

    lines += ["", "Issue 27's targets, on the median ratio (the JSON also holds each step's "
              "ratio of jaxvi's median time to scikit-learn's over the whole run):", "",
              f"- first fit ≤ 1.5× warm, ≤ 5× cold: {verdict('warm_first_fit', 'cold_first_fit')}"
              f"; {verdict('no_cache_first_fit')}",
              f"- a new N ≤ 1.5×: {verdict('warm_new_n', 'cold_new_n', 'no_cache_new_n')}",
              f"- `GridSearchCV` ≤ 2×, `n_jobs=1`: "
              f"{verdict('warm_grid_search', 'cold_grid_search')}; `n_jobs=2`: "
              f"{verdict('warm_grid_search_n_jobs2', 'cold_grid_search_n_jobs2')}",
              "- `n_jobs=2` no slower than `n_jobs=1` (their ratio ≤ 1): "
              + verdict("warm_n_jobs2_not_slower", "cold_n_jobs2_not_slower",
                        "warm_parent_only_n_jobs2_not_slower")]
    if "bayesian_summary" in result:
        bs = result["bayesian_summary"]
        n = bs["n_seeds"]
        lines += ["", f"`BayesianGaussianMixture`'s start (K = 10, iris, seeds 0–{n - 1}): a "
                  "lower bound not below scikit-learn's in "
                  f"{bs['jaxvi_seeds_not_below_sklearn']} of {n} seeds (mean "
                  f"{bs['jaxvi_mean_lower_bound']:.0f} against "
                  f"{bs['sklearn_mean_lower_bound']:.0f}; {bs['jaxvi_mean_kept']:.1f} "
                  f"components kept against {bs['sklearn_mean_kept']:.1f}) with "
                  "`init_params=\"kmeans\"` (the default: `jaxvi.em` init "
                  f"\"{bs['estimator_init_kmeans_maps_to']}\", a converged k-means); with "
                  "\"k-means++\" (seeding and 10 Lloyd steps, the former default): "
                  f"{bs['jaxvi_kmeanspp_seeds_not_below_sklearn']} of {n} (mean "
                  f"{bs['jaxvi_kmeanspp_mean_lower_bound']:.0f}, "
                  f"{bs['jaxvi_kmeanspp_mean_kept']:.1f} kept)."]
    return "\n".join(lines)


def _where(crossover: dict) -> str:
    """'N ≈ 3,200 (between 1,000 and 10,000)', 'N > 100,000' or 'N ≤ 150'."""
    if crossover["estimate"]:
        rounded = float(f"{crossover['estimate']:.2g}")
        return f"N ≈ {rounded:,.0f} ({crossover['note']})"
    return f"N {crossover['note']}"


def update_readme(result_path: Path = RESULT, readme: Path = README) -> None:
    """Rewrite the block between the markers in README.md from the JSON."""
    result = derive(json.loads(result_path.read_text()))
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{readme_block(result)}\n{END}{tail}")
    print(f"rewrote the bench_latency block of {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one warm run, N up to 10,000, one shape")
    parser.add_argument("--repeats", type=int, default=2, help="warm runs per n_jobs")
    parser.add_argument("--shapes", nargs="+", default=[f"{d}x{k}" for d, k in CROSS_SHAPES],
                        help="crossover data shapes DxK (default %(default)s)")
    parser.add_argument("--parent-only", action="store_true",
                        help="also a warm n_jobs=2 run whose workers do not get the cache "
                             "(they compile every configuration: ~3 minutes)")
    parser.add_argument("--readme", action="store_true",
                        help="only rewrite README.md's block from the committed JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    if args.readme:
        update_readme()
        return

    from benchmarks._harness import print_device, write_result

    start = time.perf_counter()
    print_device()
    repeats = 1 if args.quick else args.repeats
    ns = CROSS_N[:2] if args.quick else CROSS_N
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes]
    batches = KL_BATCHES[:1] if args.quick else KL_BATCHES
    print(f"iris 150 x 4; crossover N {ns}, (D, K) {shapes}, {CROSS_COVS}; kl.mvn batches "
          f"{batches}, D = {KL_DIM}")
    result = {"quick": args.quick, "repeats": repeats,
              "load_average_at_start": list(os.getloadavg())}
    print("part 1: iris steps", flush=True)
    result["steps"] = steps_part(repeats, args.quick, args.parent_only)
    result["targets"] = targets(result["steps"])
    print("part 2: crossover", flush=True)
    result["crossover"] = crossover_part(ns, shapes)
    print("part 3: kl.mvn", flush=True)
    result["kl"] = kl_part(batches)
    print("part 4: BayesianGaussianMixture's start", flush=True)
    seeds = bayesian_seeds(2 if args.quick else 6)
    result["bayesian_iris"] = seeds
    result["bayesian_summary"] = _bayesian_summary(seeds)
    result["wall_s"] = time.perf_counter() - start
    print_results(result)
    print(result["bayesian_summary"])
    print(f"total {result['wall_s']:.0f} s")
    write_result("bench_latency", result)


if __name__ == "__main__":
    main()
