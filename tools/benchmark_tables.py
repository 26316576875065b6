"""The documentation's benchmark tables, generated from the committed results in
benchmarks/results/*.json (never typed by hand): writes docs/benchmarks/tables.md.

    python tools/benchmark_tables.py           # rewrite docs/benchmarks/tables.md
    python tools/benchmark_tables.py --check   # exit 1 if it differs from what the JSON gives

Every figure is read from the JSON and formatted here; each table names its file and the time
and machine it was measured on. The clustering and small-data sections are the README's own
generators (`benchmarks/readme_tables.mnist_section`, `benchmarks/bench_latency.readme_block`),
so the README and the docs say the same.
tests/test_docs_figures.py runs `--check` (and the README's) in the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUTPUT = ROOT / "docs" / "benchmarks" / "tables.md"


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def ms(seconds: float) -> str:
    v = seconds * 1e3
    return f"{v:.3g} ms" if v < 100 else f"{v:.0f} ms"


def times(x: float) -> str:
    return f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def source(name: str, d: dict) -> str:
    dev = d.get("device", {})
    where = (f"{dev.get('platform', '?')}, {dev.get('cpu_count', '?')} cores, "
             f"JAX {dev.get('jax', '?')}")
    return f"From `benchmarks/results/{name}.json` ({d['time']}; {where})."


def kl_section() -> list[str]:
    d = load("bench_kl")
    rows = []
    for r in d["rows"]:
        if r["impl"] == "jaxvi":
            peers = [p for p in d["rows"] if p["case"] == r["case"] and p["impl"] != "jaxvi"]
            best = min(peers, key=lambda p: p["median_s"])
            rows.append([r["case"], ms(r["median_s"]), ms(best["median_s"]) + f" ({best['impl']})",
                         times(r["speedup_vs_distrax"]), pct(r["fraction_of_matmul"])])
    return ["## Closed-form KL between Gaussians", "",
            "Median time per call, float32; the peer is the fastest of distrax, TFP and an "
            "elementwise reference; speed-up over distrax; roofline: share of a jitted "
            "matmul's FLOP/s.", "",
            *table(["case", "jaxvi", "fastest peer", "× distrax", "roofline"], rows), "",
            source("bench_kl", d), ""]


def em_section() -> list[str]:
    d = load("bench_em")
    rows = [[f"{c['case']}, N = {c['N']:,}, D = {c['D']}, K = {c['K']}, {c['cov']}",
             ms(c["jaxvi_f32_s_per_iter"]), ms(c["jaxvi_f64_s_per_iter"]),
             ms(c["sklearn_s_per_iter"]), times(c["speedup_f32"]), times(c["speedup_f64"]),
             pct(c["f32_fraction_of_matmul"])] for c in d["cases"]]
    w = load("bench_em_weights")
    wrows = [[f"N = {c['N']:,}, D = {c['D']}, K = {c['K']}, {c['cov']}",
              ms(c["jaxvi_f32_s_per_iter"]), ms(c["jaxvi_f32_weighted_s_per_iter"]),
              f"{c['weighted_over_unweighted']:.2f}", ms(c["sklearn_s_per_iter"]),
              times(c["speedup_weighted_vs_sklearn"])] for c in w["cases"]]
    m = load("bench_em_missing")
    mrows = [[c["dtype"], f"N = {c['N']:,}, D = {c['D']}, K = {c['K']}",
              f"{100 * c['missing_fraction']:.0f} % in {c['patterns']} patterns",
              ms(c["complete_s_per_iter"]), ms(c["missing_s_per_iter"]),
              f"{c['ratio_missing_over_complete']:.2f}", ms(c["sklearn_complete_s_per_iter"]),
              times(c["speedup_missing_over_sklearn_complete"])] for c in m["cases"]]
    return ["## EM iterations", "",
            "Time of one EM iteration in `em.fit` (float32 and float64) against scikit-learn's "
            "`GaussianMixture` loop body (float64, the faster of default and 1-thread BLAS).", "",
            *table(["case", "jaxvi f32", "jaxvi f64", "scikit-learn", "× f32", "× f64",
                    "roofline f32"], rows), "", source("bench_em", d), "",
            "With sample weights (float32):", "",
            *table(["case", "unweighted", "weighted", "weighted / unweighted",
                    "scikit-learn (unweighted)", "× scikit-learn"], wrows), "",
            source("bench_em_weights", w), "",
            "With missing values (`missing=\"marginalize\"`), against the complete-data fit:", "",
            *table(["dtype", "case", "missing", "complete", "missing", "missing / complete",
                    "scikit-learn (complete)", "× scikit-learn"], mrows), "",
            source("bench_em_missing", m), ""]


def vb_section() -> list[str]:
    d = load("bench_vb")
    rows = [[f"{c['case']}, N = {c['N']:,}, D = {c['D']}, K = {c['K']}, {c['cov']}",
             ms(c["jaxvi_vb_f32_s_per_iter"]), ms(c["jaxvi_em_f32_s_per_iter"]),
             ms(c["sklearn_s_per_iter"]), times(c["speedup_f32"]), f"{c['vb_over_em_f32']:.2f}",
             f"{c['rel_diff_lower_bound_f32']:.1e} / {c['rel_diff_lower_bound_f64']:.1e}"]
            for c in d["cases"]]
    return ["## Variational Bayes iterations", "",
            "One VB-EM iteration of `em.fit_variational` (Dirichlet-process prior) against "
            "scikit-learn's `BayesianGaussianMixture`, and jaxvi's EM at the same size; the "
            "lower bounds after 20 iterations from the same start, relative difference to "
            "scikit-learn's.", "",
            *table(["case", "VB f32", "EM f32", "scikit-learn", "× scikit-learn", "VB / EM",
                    "lower bound rel. diff f32 / f64"], rows), "", source("bench_vb", d), ""]


def vae_section() -> list[str]:
    d = load("bench_vae")
    rows = []
    for b in d["by_batch_size"]:
        rows.append([str(b["batch_size"]), f"{b['jaxvi_scan_steps_per_s']:.0f}",
                     f"{b['torch_eager_steps_per_s']:.0f}",
                     f"{b['torch_compile_steps_per_s']:.0f}" if b["torch_compile_steps_per_s"]
                     else "—",
                     times(b["ratio_vs_torch_eager"]),
                     times(b["ratio_vs_torch_compile"]) if b["ratio_vs_torch_compile"] else "—",
                     pct(b["jaxvi_fraction_of_jitted_matmul"]),
                     pct(b["jaxvi_fraction_of_same_shape_matmuls"])])
    mc = d["model"]
    net = "-".join(str(h) for h in [mc["data_dim"], *mc["hidden"], mc["latent_dim"]])
    parts = [b for b in d["by_batch_size"] if b.get("step_breakdown_ms")]
    breakdown = []
    if parts:
        names = list(parts[0]["step_breakdown_ms"])
        brows = [[name] + [f"{b['step_breakdown_ms'].get(name, float('nan')):.2f}"
                           for b in parts] for name in names]
        breakdown = [
            "Where a step's time goes: each part timed alone, in turn (ms per step; one run, so "
            "differences below this host's drift are noise). Beyond the dense layers' matmuls, "
            "the elementwise passes over the activations and the parameters are memory traffic, "
            "which is why the step reaches only part of its own matmuls' rate.", "",
            *table(["part of the step"] + [f"batch {b['batch_size']}" for b in parts], brows),
            ""]
    return ["## VAE training steps", "",
            f"Optimizer steps per second of the hierarchical VAE ({net} network, K = "
            f"{mc['components']}) against the same model in PyTorch (eager and "
            "`torch.compile`); roofline: share of a jitted large matmul's FLOP/s, and of the "
            "step's own matmuls timed alone.", "",
            *table(["batch", "jaxvi steps/s", "PyTorch eager", "torch.compile", "× eager",
                    "× compile", "roofline", "of its matmuls"], rows), "",
            *breakdown, source("bench_vae", d), ""]


def scaling_section() -> list[str]:
    d = load("bench_scaling")
    rows = [[str(r["devices"]), f"{r['em_N']:,}", f"{r['em_ms_per_iter']:.1f}",
             f"{r['em_weak_eff']:.2f}", str(r["vae_batch"]), f"{r['vae_steps_per_s']:.0f}",
             f"{r['vae_weak_eff']:.2f}"] for r in d["rows"]]
    p = d["processes"]
    prows = [[str(r["processes"]), f"{r['weak_N']:,}", f"{r['weak_ms_per_iter']:.1f}",
              f"{r['weak_eff']:.2f}", f"{r['strong_N']:,}", f"{r['strong_ms_per_iter']:.1f}",
              f"{r['strong_speedup']:.2f}", f"{r['allreduce_bytes_per_iter']:,}"]
             for r in p["rows"]]
    note = ("simulated CPU devices sharing the same cores, so the efficiencies measure the "
            "overhead of sharding, not a speed-up" if d.get("simulated_devices") else
            "real devices")
    return ["## Several devices and processes", "",
            f"Weak scaling of an EM iteration and a VAE step over a data mesh ({note}):", "",
            *table(["devices", "EM rows", "EM ms/iter", "EM efficiency", "VAE batch",
                    "VAE steps/s", "VAE efficiency"], rows), "",
            "EM over `jax.distributed` processes on one machine (gloo collectives):", "",
            *table(["processes", "weak N", "ms/iter", "efficiency", "strong N", "ms/iter",
                    "speed-up", "all-reduce bytes/iter"], prows), "",
            source("bench_scaling", d), ""]


def mixture_kl_section() -> list[str]:
    d = load("bench_kl_mixtures")
    rows = sorted(d["rows"], key=lambda r: (r["D"], r["K"], r["kind"], r["method"]))
    body = [[str(r["D"]), str(r["K"]), r["method"], r["kind"],
             f"{r['rel_err']:.1e}" if r.get("rel_err") is not None else "—",
             ms(r["median_s"])] for r in rows]
    return ["## KL between Gaussian mixtures: error and cost", "",
            "Each estimator, approximation and bound of `jaxvi.kl` on random mixtures of K "
            "components in D dimensions: relative error against a float64 stratified Monte "
            "Carlo reference, and median time per call (drawn in "
            "{doc}`../gallery/kl_estimators`).", "",
            *table(["D", "K", "method", "kind", "relative error", "time per call"], body), "",
            source("bench_kl_mixtures", d), ""]


def partial_fit_section() -> list[str]:
    d = load("eval_partial_fit")
    rows = []
    for c in [*d["cases"], {"data": "all", **d["overall"]}]:
        for ref, label in (("vs_fit", "`em.fit`"), ("vs_sklearn_fit", "scikit-learn `fit`")):
            s = c[ref]
            rows.append([c["data"], label, str(s["n"]), f"{s['median']:+.4f}",
                         f"{s['p90']:+.4f}", f"{s['max']:+.4f}", f"{s['within_0.02']}/{s['n']}"])
    return ["## Streaming: `partial_fit` against a full fit", "",
            f"Gap in nats per point between a full-batch fit's score and `partial_fit`'s "
            f"(K = {d['K']}, {d['covariance_type']}, batches of {d['batch']}, {d['passes']} "
            "passes; positive: `partial_fit` is worse).", "",
            *table(["data", "reference", "runs", "median gap", "90th percentile", "max",
                    "within 0.02"], rows), "", source("eval_partial_fit", d), ""]


def inference_section() -> list[str]:
    d = load("compare_inference")
    b = d["bimodal"]
    rows = []
    for setting, label in (("fixed_true_decoder", "true decoder fixed"),
                           ("fixed_true_decoder_broad_init", "true decoder, broad start"),
                           ("learned_model", "decoder learned")):
        for method, res in b[setting].items():
            rows.append([label, method, f"{res['fraction_multimodal']:.2f}",
                         f"{res['fraction_all_modes_kept_when_multimodal']:.3f}",
                         f"{res['test_iwae']:.2f}", f"{res['train_seconds']:.1f} s"])
    return ["## Inclusive vs exclusive KL for the VAE's inference network", "",
            "On a data set built to have a bimodal posterior over w: how often q(w | x) keeps "
            "every mode of the true posterior when trained on the ELBO (exclusive KL) or by "
            "reweighted wake-sleep (inclusive KL) with S samples.", "",
            *table(["setting", "inference", "multimodal posteriors", "all modes kept",
                    "test IWAE", "training"], rows), "", source("compare_inference", d), ""]


def clustering_section() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.readme_tables import mnist_section

    return ["## Clustering real handwriting", "",
            "`jaxvi.MixtureVAE(10, random_state=seed)` with its defaults under the "
            "deep-clustering papers' MNIST-test protocol (`benchmarks/eval_vae_mnist.py`; the "
            "same text as the README's, from the same generator).", "",
            mnist_section(), "",
            "From `benchmarks/results/eval_vae_mnist*.json` and "
            "`eval_vae_small_sets_umap.json`.", ""]


def latency_section() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_latency import readme_block

    return ["## Small data: import, first fits, compilation", "",
            "What a new user feels on small data, in fresh processes against scikit-learn "
            "(`benchmarks/bench_latency.py`; the same text as the README's, from the same "
            "generator).", "",
            readme_block(load("bench_latency")), "",
            "From `benchmarks/results/bench_latency.json`.", ""]


def render() -> str:
    lines = ["<!-- Generated by tools/benchmark_tables.py from benchmarks/results/*.json: "
             "do not edit. -->", ""]
    for section in (kl_section, mixture_kl_section, em_section, vb_section, partial_fit_section,
                    latency_section, vae_section, clustering_section, inference_section,
                    scaling_section):
        lines += section()
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="exit 1 if docs/benchmarks/tables.md differs from the JSON's tables")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.is_file() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: "
                  "run python tools/benchmark_tables.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
