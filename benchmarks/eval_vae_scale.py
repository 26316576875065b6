"""The hierarchical VAE beyond digits: `jaxvi train` with its defaults (the step budget) on an
MNIST-shaped 70,000 × 784 uint8 image set generated from scikit-learn's digits
(`benchmarks/scale_data.py`: 60,000 training images from 1,437 source digits, 10,000 test
images from the 360 others), as a user runs it: one `jaxvi train` process per seed, timed per
phase, with its peak memory (maxrss) and CPU time, beside KMeans on the pixels and KMeans and
a full-covariance GMM on 50 principal components; then `jaxvi.MixtureVAE` with its defaults
on two more shipped data sets (wine, breast cancer; standardised, Gaussian likelihood) beside
KMeans and a GMM.

    python benchmarks/eval_vae_scale.py [--seeds 0 1 2] [--n-train 60000] [--n-test 10000]
        [--skip-scale] [--skip-small] [--train-args "--steps 0 --pretrain-steps 0"]

The comparison of the step budget with the recipe before it, on 20,000 training images:

    python benchmarks/eval_vae_scale.py --n-train 20000 --seeds 0 --skip-small \
        --train-args "--steps 0 --pretrain-steps 0" --name eval_vae_scale_20k_unbudgeted
    python benchmarks/eval_vae_scale.py --n-train 20000 --seeds 0 --skip-small \
        --name eval_vae_scale_20k
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    print_device,
    print_table,
    recipe_defaults,
    write_result,
)
from benchmarks.scale_data import scale_dataset  # noqa: E402
from jaxvi.metrics import cluster_accuracy, nmi  # noqa: E402

TRAIN_TIMEOUT_S = 3600


def _summary(values):
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "per_seed": v.tolist()}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def start_train(data_file: Path, out: Path, seed: int, extra: tuple[str, ...] = ()) -> dict:
    """Start one `jaxvi train` process with its defaults (and the `extra` arguments)."""
    cmd = [sys.executable, "-m", "jaxvi.cli", "train", "--data", str(data_file), "--out",
           str(out), "--seed", str(seed), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115 (closed in finish_train)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return {"proc": proc, "log": log, "out": out, "seed": seed, "t0": time.perf_counter(),
            "load_before": _load()}


def finish_train(job: dict) -> dict:
    """Wait for a `start_train` process: its metrics.json, wall seconds, peak RSS and CPU
    seconds (os.wait4's rusage of that child), and the load average before and after."""
    proc = job["proc"]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - job["t0"]
    job["log"].close()
    log = job["out"].with_suffix(".log").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"jaxvi train failed ({proc.returncode}):\n{log[-3000:]}")
    metrics = json.loads((job["out"] / "metrics.json").read_text())
    return {
        "seed": job["seed"], "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # kB on Linux
        "load_before": job["load_before"], "load_after": _load(),
        "test_accuracy": metrics["test_accuracy"], "test_nmi": metrics["test_nmi"],
        "phase_seconds": metrics["phase_seconds"],
        "phase_cpu_seconds": metrics["phase_cpu_seconds"],
        "train_config": metrics["train_config"],
        "joint_steps": metrics["history"][-1]["step"],
        "joint_epochs": metrics["history"][-1]["epoch"],
        "log_tail": log.strip().splitlines()[-4:],
    }


def scale_baselines(d: dict, seed: int) -> dict:
    """KMeans (3 inits) on the pixels, KMeans and a full GMM on 50 principal components
    (fitted on the training images, scored on the test images), each with its wall seconds."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    xtr = d["x_train"].reshape(len(d["x_train"]), -1).astype(np.float32) / 255
    xte = d["x_test"].reshape(len(d["x_test"]), -1).astype(np.float32) / 255
    out = {}
    t0 = time.perf_counter()
    pred = KMeans(10, n_init=3, random_state=seed).fit(xtr).predict(xte)
    out["kmeans_pixels"] = _scores(d["y_test"], pred, time.perf_counter() - t0)
    t0 = time.perf_counter()
    pca = PCA(50, random_state=seed).fit(xtr)
    ptr, pte = pca.transform(xtr), pca.transform(xte)
    t_pca = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = KMeans(10, n_init=3, random_state=seed).fit(ptr).predict(pte)
    out["kmeans_pca50"] = _scores(d["y_test"], pred, t_pca + time.perf_counter() - t0)
    t0 = time.perf_counter()
    pred = GaussianMixture(10, covariance_type="full", random_state=seed).fit(ptr).predict(pte)
    out["gmm_full_pca50"] = _scores(d["y_test"], pred, t_pca + time.perf_counter() - t0)
    return out


def _scores(y, pred, seconds=None) -> dict:
    res = {"test_accuracy": cluster_accuracy(y, pred), "test_nmi": nmi(y, pred)}
    if seconds is not None:
        res["seconds"] = seconds
    return res


def small_sets(seeds) -> dict:
    """`jaxvi.MixtureVAE` (defaults, K = the number of classes) on standardised wine and
    breast cancer (the fixed stratified 80/20 split of `jaxvi.data.stratified_split`), beside
    KMeans and a full GMM: accuracy and NMI on the test split and on the training points."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    from jaxvi import MixtureVAE
    from jaxvi.data import stratified_split

    results = {}
    for name, loader in (("wine", load_wine), ("breast_cancer", load_breast_cancer)):
        x, y = loader(return_X_y=True)
        tr, te = stratified_split(y)
        scaler = StandardScaler().fit(x[tr])
        xtr, xte = scaler.transform(x[tr]), scaler.transform(x[te])
        k = int(np.unique(y).size)
        makers = {
            "jaxvi_mixture_vae": lambda s, k=k: MixtureVAE(k, random_state=s),
            "kmeans": lambda s, k=k: KMeans(k, n_init=10, random_state=s),
            "gmm_full": lambda s, k=k: GaussianMixture(k, covariance_type="full",
                                                       random_state=s),
        }
        per = {}
        for method, make in makers.items():
            rows = []
            for s in seeds:
                t0 = time.perf_counter()
                est = make(s).fit(xtr)
                rows.append({**_scores(y[te], est.predict(xte)),
                             "train_accuracy": cluster_accuracy(y[tr], est.predict(xtr)),
                             "seconds": time.perf_counter() - t0})
            per[method] = {key: _summary([r[key] for r in rows]) for key in rows[0]}
            print(f"{name} {method}: test accuracy "
                  f"{per[method]['test_accuracy']['mean']:.3f} ± "
                  f"{per[method]['test_accuracy']['std']:.3f}, train accuracy "
                  f"{per[method]['train_accuracy']['mean']:.3f}")
        results[name] = {"n_train": int(tr.size), "n_test": int(te.size), "features":
                         int(x.shape[1]), "classes": k, "methods": per}
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--parallel", action="store_true",
                   help="run the seeds' `jaxvi train` processes at the same time")
    p.add_argument("--skip-scale", action="store_true", help="only the small data sets")
    p.add_argument("--skip-small", action="store_true", help="only the image set")
    p.add_argument("--train-args", default="",
                   help="more `jaxvi train` arguments, e.g. \"--steps 0 --pretrain-steps 0\" "
                   "(the recipe without its step budget, as before issue 16)")
    p.add_argument("--name", default="eval_vae_scale", help="results/<name>.json")
    args = p.parse_args(argv)
    print_device()
    result = {"seeds": args.seeds, "uptime_start": _load(), "recipe": recipe_defaults()}
    if not args.skip_scale:
        t0 = time.perf_counter()
        d = scale_dataset(args.n_train, args.n_test, seed=0)
        result["data_seconds"] = time.perf_counter() - t0
        result["data"] = {k: list(v.shape) for k, v in d.items()} | {"dtype": "uint8"}
        runs, base = [], []
        with tempfile.TemporaryDirectory() as tmp:
            data_file = Path(tmp) / "scale.npz"
            np.savez(data_file, **d)
            jobs = []
            for s in args.seeds:
                jobs.append(start_train(data_file, Path(tmp) / f"seed{s}", s,
                                        tuple(args.train_args.split())))
                if not args.parallel:
                    runs.append(finish_train(jobs.pop()))
            runs += [finish_train(j) for j in jobs]
            for r in runs:
                s = r["seed"]
                print(f"seed {s}: accuracy {r['test_accuracy']:.4f}  NMI {r['test_nmi']:.4f}  "
                      f"wall {r['wall_seconds']:.0f} s  CPU {r['cpu_seconds']:.0f} s  peak "
                      f"{r['peak_rss_gib']:.2f} GiB  load {r['load_before']} -> "
                      f"{r['load_after']}\n  phases {r['phase_seconds']}\n  CPU "
                      f"{r['phase_cpu_seconds']}")
                base.append(scale_baselines(d, s))
        vae = {k: _summary([r[k] for r in runs]) for k in
               ("test_accuracy", "test_nmi", "wall_seconds", "cpu_seconds", "peak_rss_gib")}
        baselines = {m: {k: _summary([b[m][k] for b in base]) for k in base[0][m]}
                     for m in base[0]}
        label = f"jaxvi train {args.train_args or '(defaults)'}"
        rows = [{"method": label, "acc_mean": vae["test_accuracy"]["mean"],
                 "acc_min": vae["test_accuracy"]["min"], "nmi_mean": vae["test_nmi"]["mean"]}]
        rows += [{"method": m, "acc_mean": b["test_accuracy"]["mean"],
                  "acc_min": b["test_accuracy"]["min"], "nmi_mean": b["test_nmi"]["mean"]}
                 for m, b in baselines.items()]
        print_table(rows, ["method", "acc_mean", "acc_min", "nmi_mean"])
        best_baseline = [max(b[m]["test_accuracy"] for m in b) for b in base]
        result["scale"] = {
            "runs": runs, "vae": vae, "baselines": baselines,
            "above_every_baseline_on_every_seed": all(
                r["test_accuracy"] > m for r, m in zip(runs, best_baseline, strict=True)),
        }
        result["train_args"] = args.train_args
        write_result(args.name, result)
    if not args.skip_small:
        result["small_sets"] = small_sets(args.seeds)
    result["uptime_end"] = _load()
    write_result(args.name, result)


if __name__ == "__main__":
    main()
