"""Run every benchmark on whatever device JAX sees, then print one summary table (device,
sizes, jaxvi vs peer, ratio, fraction of the jitted-matmul roofline) and write one JSON.

    python -m benchmarks.run_all            # CPU sizes; on a GPU, sizes that fill it
    python -m benchmarks.run_all --quick    # smoke run of every script, small sizes
    python -m benchmarks.run_all --only bench_em bench_kl

Each benchmark runs in its own process and writes its own JSON under benchmarks/results/;
this script reads those back. A benchmark that fails (e.g. PyTorch, the `bench` extra, is not
installed) is reported as failed and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import RESULTS_DIR, device_info, print_table, write_result  # noqa: E402

# name -> (extra args on CPU, extra args on an accelerator). eval_vae_digits and
# compare_inference train several models and take minutes; they run unless --fast.
BENCHMARKS = {
    "bench_kl": ([], []),
    "bench_em": ([], ["--n", "10000000"]),
    "bench_vb": ([], []),  # scikit-learn runs on all N: no larger N on a GPU
    "bench_vae": ([], ["--batch-sizes", "256", "4096", "--no-compile"]),
    "bench_scaling": ([], ["--em-n", "2000000", "--vae-batch", "1024"]),
    "eval_vae_digits": ([], []),
    "compare_inference": ([], []),
}
SLOW = ("eval_vae_digits", "compare_inference")


def _load(name: str, accelerator: str | None) -> dict | None:
    path = RESULTS_DIR / (f"{name}_{accelerator}.json" if accelerator else f"{name}.json")
    return json.loads(path.read_text()) if path.exists() else None


def summarise(name: str, r: dict) -> list[dict]:
    """Rows of the summary table from one benchmark's JSON."""
    rows = []
    if name == "bench_kl":
        for row in r["rows"]:
            if row["impl"] == "jaxvi":
                rows.append({"case": f"KL {row['case']}", "jaxvi": f"{row['median_s']:.4g} s",
                             "peer": "distrax", "ratio": row["speedup_vs_distrax"],
                             "roofline": row.get("fraction_of_matmul")})
    elif name == "bench_em":
        for c in r["cases"]:
            size = f"N={c['N']} D={c['D']} K={c['K']} {c['cov']}"
            rows.append({"case": f"EM iter {c['case']} {size} f32",
                         "jaxvi": f"{c['jaxvi_f32_s_per_iter']:.4g} s",
                         "peer": "sklearn f64", "ratio": c["speedup_f32"],
                         "roofline": c.get("f32_fraction_of_matmul")})
    elif name == "bench_vb":
        for c in r["cases"]:
            size = f"N={c['N']} D={c['D']} K={c['K']} {c['cov']}"
            rows.append({"case": f"VB-EM iter {c['case']} {size} f32",
                         "jaxvi": f"{c['jaxvi_vb_f32_s_per_iter']:.4g} s",
                         "peer": "sklearn f64", "ratio": c["speedup_f32"], "roofline": None})
    elif name == "bench_vae":
        for b in r["by_batch_size"]:
            for peer in ("eager", "compile"):
                ratio = b.get(f"ratio_vs_torch_{peer}")
                if ratio is None:
                    continue
                rows.append({"case": f"VAE train step batch={b['batch_size']}",
                             "jaxvi": f"{b['jaxvi_scan_steps_per_s']:.4g} steps/s",
                             "peer": f"torch {peer}", "ratio": ratio,
                             "roofline": b.get("jaxvi_fraction_of_jitted_matmul")})
    elif name == "bench_scaling":
        for row in r["rows"]:
            if "em_weak_eff" in row:
                rows.append({"case": f"weak scaling {row['devices']} dev (EM, VAE eff.)",
                             "jaxvi": f"{row['em_weak_eff']:.2f}, {row['vae_weak_eff']:.2f}",
                             "peer": "1 device", "ratio": None, "roofline": None})
        for row in r.get("processes", {}).get("rows", []):
            rows.append({"case": f"EM over {row['processes']} processes (weak, strong eff.)",
                         "jaxvi": f"{row['weak_eff']:.2f}, {row['strong_speedup']:.2f}",
                         "peer": "1 process", "ratio": None, "roofline": None})
    elif name == "eval_vae_digits":
        acc = r["vae"]["test_accuracy"]
        km = r["baselines"]["kmeans"]["test_accuracy"]
        rows.append({"case": f"VAE digits test accuracy ({len(r['seeds'])} seeds)",
                     "jaxvi": f"{acc['mean']:.3f} ({acc['min']:.3f}-{acc['max']:.3f})",
                     "peer": f"KMeans {km['mean']:.3f}", "ratio": acc["mean"] / km["mean"],
                     "roofline": None})
    elif name == "compare_inference":
        runs = r["digits"]["runs"]
        for method in ("elbo", "forward-kl"):
            acc = sum(run[method]["test_accuracy"] for run in runs) / len(runs)
            iwae = sum(run[method]["test_iwae"] for run in runs) / len(runs)
            rows.append({"case": f"digits, inference by {method} ({len(runs)} seeds)",
                         "jaxvi": f"acc {acc:.3f}, IWAE {iwae:.2f}", "peer": "",
                         "ratio": None, "roofline": None})
        for method, res in r["bimodal"]["fixed_true_decoder"].items():
            rows.append({"case": f"bimodal posterior, {method}: all modes kept",
                         "jaxvi": f"{res['fraction_all_modes_kept_when_multimodal']:.1%}",
                         "peer": "", "ratio": None, "roofline": None})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke run of every script")
    p.add_argument("--fast", action="store_true", help=f"skip the slow ones: {SLOW}")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    p.add_argument("--summary-only", action="store_true",
                   help="run nothing; summarise the JSON results already written")
    args = p.parse_args(argv)

    info = device_info()
    accelerator = None if info["platform"] == "cpu" else info["platform"]
    print(f"device: {info['device_kind']} ({info['platform']}) x{info['device_count']}")
    names = args.only or [n for n in BENCHMARKS if not (args.fast and n in SLOW)]
    status = {}
    for name in names if not args.summary_only else []:
        extra = BENCHMARKS[name][1 if accelerator else 0]
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *extra]
        if args.quick:
            cmd.append("--quick")
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT)
        status[name] = {"returncode": proc.returncode,
                        "seconds": round(time.perf_counter() - t0, 1)}

    rows = []
    for name in names:
        r = _load(name, accelerator)
        if r is None:
            continue
        for row in summarise(name, r):
            rows.append({"benchmark": name, "device": r["device"]["device_kind"], **row})
    print("\nsummary (ratio = jaxvi speed-up over the peer, or accuracy ratio; roofline = "
          "fraction of a jitted matmul's FLOP/s)")
    print_table(rows, ["benchmark", "device", "case", "jaxvi", "peer", "ratio", "roofline"])
    failed = [n for n, s in status.items() if s["returncode"] != 0]
    if failed:
        print(f"failed: {failed}")
    result = {"status": status, "summary": rows}
    if not args.quick:
        write_result("run_all", result)
    return result


if __name__ == "__main__":
    main()
