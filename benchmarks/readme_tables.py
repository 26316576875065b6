"""The README's clustering tables, generated from the committed results of
`eval_vae_mnist.py` (never typed by hand): rewrites the text between the markers
`<!-- eval_vae_mnist:begin -->` and `<!-- eval_vae_mnist:end -->` in README.md.

    python benchmarks/readme_tables.py [--check]

--check exits 1 when the README differs from what the JSON gives (for CI or a hook).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- eval_vae_mnist:begin -->", "<!-- eval_vae_mnist:end -->"


def _load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _range(s: dict, digits: int = 3) -> str:
    lo, hi = s["min"], s["max"]
    return f"{lo:.{digits}f}" if round(lo, digits) == round(hi, digits) else \
        f"{lo:.{digits}f}–{hi:.{digits}f}"


def _minutes(s: dict) -> str:
    lo, hi = f"{s['min'] / 60:.1f}", f"{s['max'] / 60:.1f}"
    return f"{lo} min" if lo == hi else f"{lo}–{hi} min"


def _cpu_minutes(runs: list[dict]) -> str:
    """The runs' process CPU time (what a fit needs of the cores, whatever else ran)."""
    lo, hi = (f"{f(r['cpu_seconds'] for r in runs) / 60:.1f}" for f in (min, max))
    return lo if lo == hi else f"{lo}–{hi}"


def _recipe(d: dict) -> str:
    """"restarts=1, consensus_weight=3.0": the defaults a result file records."""
    return ", ".join(f"{k}={v}" for k, v in d.get("recipe", {}).items())


def mnist_section() -> str:
    main, digits = _load("eval_vae_mnist"), _load("eval_vae_mnist_digits")
    big, ablation = _load("eval_vae_mnist_70k"), _load("eval_vae_mnist_ablation")
    small_sets = _load("eval_vae_small_sets_umap")

    def earlier(d: dict) -> str:  # said of results measured with other defaults than main's
        return (f" with the previous defaults ({_recipe(d)})"
                if d.get("recipe") and d["recipe"] != main.get("recipe") else "")

    lines = []
    if "mnist" in main:
        m = main["mnist"]["jaxvi_mixture_vae"]
        seeds = ", ".join(str(r["seed"]) for r in m["runs"])
        loads = [r["load_before"][0] for r in m["runs"]]
        lines += [
            "| MNIST-test (10,000 real digits; fit on all, score the same) | accuracy | NMI |",
            "| --- | --- | --- |",
            f"| **jaxvi `MixtureVAE` defaults**, seeds {seeds} (per seed: "
            + ", ".join(f"{a:.3f}" for a in m["accuracy"]["per_seed"])
            + f") | **{_range(m['accuracy'])}** | **{_range(m['nmi'])}** |",
        ]
        names = {"kmeans_pixels": "KMeans on pixels (10 inits, same data, measured)",
                 "gmm_full_pca50": "full GMM on 50 principal components (same data, measured)"}
        for key, label in names.items():
            b = main["mnist"]["baselines"][key]
            lines.append(f"| {label} | {_range(b['accuracy'])} | {_range(b['nmi'])} |")
        for row in main["published_mnist_test"]:
            lines.append(f"| {row['method']} ({row['source']}) | {row['accuracy']:.3f} | "
                         f"{row['nmi']:.3f} |")
        lines += ["", f"Each fit: {_minutes(m['wall_seconds'])} wall, "
                  f"{m['peak_rss_gib']['max']:.2f} GiB peak memory, "
                  f"{_cpu_minutes(m['runs'])} CPU minutes, on {main['device']['cpu_count']} "
                  "CPU cores shared with other jobs "
                  f"(1-minute load {min(loads):.1f}–{max(loads):.1f} at the starts)."]
    previous = _load("eval_vae_mnist_previous")
    if "mnist" in previous:
        m = previous["mnist"]["jaxvi_mixture_vae"]
        lines += ["", f"The previous defaults ({_recipe(previous)}: one autoencoder, a weaker "
                  f"consensus term), seeds {', '.join(str(r['seed']) for r in m['runs'])}: "
                  f"accuracy {_range(m['accuracy'])}, NMI {_range(m['nmi'])}, "
                  f"{_cpu_minutes(m['runs'])} CPU minutes per fit."]
    if "mnist70k" in big:
        b = big["mnist70k"]["jaxvi_mixture_vae"]
        lines += ["", "70,000 images (the 10,000 digits and six jittered copies of each)"
                  f"{earlier(big)}: "
                  f"accuracy {_range(b['accuracy'])} (NMI {_range(b['nmi'])}) on the 10,000 real "
                  f"digits, {_range(b['accuracy_all'])} on all 70,000, in "
                  f"{_minutes(b['wall_seconds'])} wall on the same shared cores "
                  f"({_cpu_minutes(b['runs'])} CPU minutes, "
                  f"{b['peak_rss_gib']['max']:.2f} GiB): the step budget keeps the networks' cost "
                  "from growing with N."]
    if "digits" in digits:
        d = digits["digits"]["jaxvi_mixture_vae"]
        km = digits["digits"]["baselines"]["kmeans_pixels"]
        lines += ["", f"scikit-learn's 8×8 digits (1,797, same protocol){earlier(digits)}: "
                  f"accuracy {_range(d['accuracy'])}, NMI {_range(d['nmi'])} (KMeans "
                  f"{_range(km['accuracy'])}; t-SNE + KMeans reaches 0.934–0.945)."]
    small = small_sets.get("small_sets", {})
    if small:
        parts = []
        for name, res in small.items():
            vae, gmm, km = (res["methods"][k] for k in ("jaxvi_mixture_vae", "gmm_full", "kmeans"))
            parts.append(
                f"{name.replace('_', ' ')} {_range(vae['test_accuracy'])} test / "
                f"{_range(vae['train_accuracy'])} training accuracy (full GMM "
                f"{_range(gmm['test_accuracy'])} / {_range(gmm['train_accuracy'])}, KMeans "
                f"{_range(km['test_accuracy'])} / {_range(km['train_accuracy'])})")
        lines += ["", "Standardised wine and breast cancer (`eval_vae_scale.py --skip-scale`, "
                  f"seeds 0–2, an 80/20 split){earlier(small_sets)}: " + "; ".join(parts) + "."]
    if ablation.get("ablation"):
        # the defaults the ablation changed one part of, when they were not today's: their
        # recipe and the files their own rows were measured in
        measured_apart = "defaults_from" in ablation
        source = ((_load(ablation["defaults_from"]), _load(ablation["digits_defaults_from"]))
                  if measured_apart else (main, digits))
        recipe = f"; {_recipe(ablation)}" if measured_apart else ""
        lines += ["", f"| what each part buys (seed 0{recipe}) | MNIST-test accuracy | "
                  "digits accuracy |", "| --- | --- | --- |"]
        base = {"mnist": source[0].get("mnist"), "digits": source[1].get("digits")}
        seeds = {r["seed"] for t in ablation["ablation"].values() for v in t.values()
                 for r in v["runs"]}
        first = {k: next((r["accuracy"] for r in v["jaxvi_mixture_vae"]["runs"]
                          if r["seed"] in seeds), None) if v else None
                 for k, v in base.items()}
        rows = {"those defaults" if measured_apart else "the defaults": first}
        for set_name, table in ablation["ablation"].items():
            for label, res in table.items():
                rows.setdefault(label, {})[set_name] = res["accuracy"]["mean"]
        for label, acc in rows.items():
            cells = [f"{acc[s]:.3f}" if acc.get(s) is not None else "—"
                     for s in ("mnist", "digits")]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    readme = (ROOT / "README.md").read_text()
    if BEGIN not in readme or END not in readme:
        print(f"README.md has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{mnist_section()}\n{END}{tail}"
    if args.check:
        return 0 if new == readme else 1
    (ROOT / "README.md").write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
