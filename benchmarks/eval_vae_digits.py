"""Clustering quality of the hierarchical VAE on digits with `jaxvi train`'s defaults: mean and
spread over seeds of test accuracy (Hungarian matching), NMI and test ELBO/IWAE, beside
scikit-learn's GaussianMixture and KMeans fitted on the same training pixels.

    python benchmarks/eval_vae_digits.py [--seeds 0 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._harness import print_device, print_table, write_result  # noqa: E402
from jaxvi import data  # noqa: E402
from jaxvi.metrics import cluster_accuracy, nmi  # noqa: E402
from jaxvi.vae.evaluate import evaluate_test_set  # noqa: E402
from jaxvi.vae.model import VAEConfig  # noqa: E402
from jaxvi.vae.recipe import TrainConfig, train_vae  # noqa: E402

KMEANS_TARGET = 0.775  # KMeans on this split, quoted in the issue; measured again below
TARGET_MEAN = 0.85


def _summary(values):
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "per_seed": v.tolist()}


def baselines(ds, seeds):
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    out = {}
    makers = {
        "kmeans": lambda s: KMeans(10, n_init=10, random_state=s),
        "gmm_full": lambda s: GaussianMixture(10, covariance_type="full", random_state=s),
        "gmm_diag": lambda s: GaussianMixture(10, covariance_type="diag", random_state=s),
    }
    for name, make in makers.items():
        accs, nmis = [], []
        for s in seeds:
            pred = make(s).fit(ds.x_train).predict(ds.x_test)
            accs.append(cluster_accuracy(ds.y_test, pred))
            nmis.append(nmi(ds.y_test, pred))
        out[name] = {"test_accuracy": _summary(accs), "test_nmi": _summary(nmis)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = p.parse_args(argv)
    print_device()
    ds = data.load_digits()
    mc, tc0 = VAEConfig(data_dim=ds.x_train.shape[1]), TrainConfig()
    print(f"digits: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test; model {mc}; "
          f"recipe {tc0}")
    runs = []
    for s in args.seeds:
        tc = TrainConfig(**{**tc0.to_dict(), "seed": s})
        t0 = time.perf_counter()
        model, _ = train_vae(ds.x_train, mc, tc, progress=False, log=False)
        seconds = time.perf_counter() - t0
        m = evaluate_test_set(model, ds.x_test, ds.y_test, key=jax.random.key(s + 1),
                              iwae_samples=256)
        m["train_seconds"] = seconds
        runs.append(m)
        print(f"seed {s}: accuracy {m['test_accuracy']:.4f}  NMI {m['test_nmi']:.4f}  "
              f"ELBO {m['test_elbo']:.2f}  IWAE {m['test_iwae']:.2f}  ({seconds:.0f} s)")
    vae = {k: _summary([r[k] for r in runs]) for k in
           ("test_accuracy", "test_nmi", "test_elbo", "test_iwae", "train_seconds")}
    base = baselines(ds, args.seeds)
    rows = [{"method": "jaxvi hierarchical VAE", "acc_mean": vae["test_accuracy"]["mean"],
             "acc_std": vae["test_accuracy"]["std"], "acc_min": vae["test_accuracy"]["min"],
             "nmi_mean": vae["test_nmi"]["mean"]}]
    for name, b in base.items():
        rows.append({"method": f"sklearn {name}", "acc_mean": b["test_accuracy"]["mean"],
                     "acc_std": b["test_accuracy"]["std"], "acc_min": b["test_accuracy"]["min"],
                     "nmi_mean": b["test_nmi"]["mean"]})
    print_table(rows, ["method", "acc_mean", "acc_std", "acc_min", "nmi_mean"])
    kmeans_mean = base["kmeans"]["test_accuracy"]["mean"]
    verdict = {
        "target_mean_accuracy": TARGET_MEAN,
        "mean_accuracy_meets_target": vae["test_accuracy"]["mean"] >= TARGET_MEAN,
        "every_seed_above_kmeans": bool(vae["test_accuracy"]["min"] > max(kmeans_mean,
                                                                          KMEANS_TARGET)),
    }
    print(verdict)
    write_result("eval_vae_digits", {
        "seeds": args.seeds,
        "model_config": mc.to_dict(),
        "train_config": tc0.to_dict(),
        "vae": vae,
        "baselines": base,
        **verdict,
    })


if __name__ == "__main__":
    main()
