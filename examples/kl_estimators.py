"""Which estimator of KL between Gaussian mixtures to pick: each one's relative error against its
time per call, for mixtures of K = 2, 8, 32 components in D = 2 and 16, read from the committed
results of `python benchmarks/bench_kl.py --mixtures` (benchmarks/results/bench_kl_mixtures.json:
the reference is a float64 stratified Monte Carlo value with 2^16 draws). One panel per D;
markers by estimator, size by K.

    python examples/kl_estimators.py [OUTPUT.png]

Writes examples/output/kl_estimators.png by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_kl_mixtures.json"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "output" / "kl_estimators.png"
KL_KINDS = ("estimate", "approximation", "lower bound", "upper bound")


def kl_rows(path: Path = RESULTS) -> list[dict]:
    """The benchmark's rows for the KL estimators and bounds (not the other divergences)."""
    rows = json.loads(Path(path).read_text())["rows"]
    return [r for r in rows if r["kind"] in KL_KINDS and r.get("rel_err") is not None]


def plot_error_against_cost(rows: list[dict], axes=None):
    """Relative error (log) against seconds per call (log), one panel per D in the rows.
    axes: a sequence of Axes, one per D (None: a new figure). -> the Axes."""
    import matplotlib.pyplot as plt

    dims = sorted({r["D"] for r in rows})
    if axes is None:
        _, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.8), sharey=True)
    methods = sorted({r["method"] for r in rows})
    markers = dict(zip(methods, "osD^v<>phX*", strict=False))
    for ax, d in zip(axes, dims, strict=True):
        for m in methods:
            pts = [r for r in rows if r["D"] == d and r["method"] == m]
            ax.scatter([r["median_s"] for r in pts], [max(r["rel_err"], 1e-7) for r in pts],
                       s=[20 + 4 * r["K"] for r in pts], marker=markers[m], label=m, alpha=0.8)
        ax.set(xscale="log", yscale="log", xlabel="seconds per call (median)",
               title=f"D = {d} (marker size: K = 2, 8, 32)")
    axes[0].set_ylabel("relative error against the reference")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return axes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    import matplotlib.pyplot as plt

    axes = plot_error_against_cost(kl_rows())
    fig = axes[0].figure
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    plt.close(fig)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
