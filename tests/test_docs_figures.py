"""Every benchmark figure the README and the docs show agrees with the JSON it comes from.

Fast and without a docs build: the committed tables are compared with what their generators
make from benchmarks/results/*.json now (tools/benchmark_tables.py for the docs,
benchmarks/readme_tables.py and benchmarks/bench_latency.py for the README's generated
sections), and a few figures are read
back from the tables and compared with the JSON directly, so a generator that misreads its
JSON fails too.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TABLES = ROOT / "docs" / "benchmarks" / "tables.md"


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT))
    return module


@pytest.fixture(scope="module")
def tables_tool():
    return _load_module(ROOT / "tools" / "benchmark_tables.py", "benchmark_tables")


def _json(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _section(text: str, title: str) -> str:
    """The part of `text` under the heading `## title`, up to the next heading."""
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table rows of `text` whose first cell starts with first_cell."""
    out = []
    for line in text.splitlines():
        if line.startswith("| ") and line[2:].startswith(first_cell):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def test_docs_tables_are_what_the_json_gives(tables_tool):
    assert TABLES.read_text() == tables_tool.render(), (
        "docs/benchmarks/tables.md differs from the JSON: run python tools/benchmark_tables.py")


def test_readme_generated_section_is_what_the_json_gives():
    readme_tables = _load_module(ROOT / "benchmarks" / "readme_tables.py", "readme_tables")
    assert readme_tables.main(["--check"]) == 0, (
        "README's generated section differs from the JSON: run python benchmarks/readme_tables.py")


def test_docs_and_readme_clustering_figures_agree():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- eval_vae_mnist:begin -->")[1]
    section = section.split("<!-- eval_vae_mnist:end -->")[0]
    assert section.strip() in TABLES.read_text()


def test_readme_latency_block_is_what_the_json_gives_and_the_docs_show_it():
    latency = _load_module(ROOT / "benchmarks" / "bench_latency.py", "bench_latency")
    readme = (ROOT / "README.md").read_text()
    section = readme.split(latency.BEGIN)[1].split(latency.END)[0]
    assert section.strip() == latency.readme_block(_json("bench_latency")).strip(), (
        "README's bench_latency block differs from the JSON: run "
        "python -m benchmarks.bench_latency --readme")
    assert section.strip() in TABLES.read_text()


def test_figures_read_back_from_the_tables_match_the_json():
    text = TABLES.read_text()
    em = _section(text, "EM iterations").split("With sample weights")[0]
    for case in _json("bench_em")["cases"]:
        (row,) = _rows(em, f"{case['case']}, N = {case['N']:,}, D = {case['D']}, "
                              f"K = {case['K']}, {case['cov']}")
        assert float(row[4].rstrip("×")) == pytest.approx(case["speedup_f32"], rel=0.01)
        assert float(row[1].split()[0]) == pytest.approx(case["jaxvi_f32_s_per_iter"] * 1e3,
                                                         rel=0.01)
    for b in _json("bench_vae")["by_batch_size"]:
        (row,) = _rows(_section(text, "VAE training steps"), f"{b['batch_size']} |")
        assert float(row[1]) == pytest.approx(b["jaxvi_scan_steps_per_s"], abs=0.5)
        assert float(row[4].rstrip("×")) == pytest.approx(b["ratio_vs_torch_eager"], rel=0.01)
    for r in _json("bench_kl")["rows"]:
        if r["impl"] == "jaxvi":
            (row,) = _rows(_section(text, "Closed-form KL between Gaussians"), r["case"])
            assert float(row[3].rstrip("×")) == pytest.approx(r["speedup_vs_distrax"], rel=0.01)
    mnist = _json("eval_vae_mnist")["mnist"]["jaxvi_mixture_vae"]["accuracy"]
    assert f"{mnist['min']:.3f}" in text and f"{mnist['max']:.3f}" in text


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?", text.replace(",", "")))


def test_readme_hand_typed_benchmark_figures_come_from_the_json(tables_tool):
    """No table of the README, outside its generated sections, quotes a decimal figure that no
    generated table holds (the README's hand-typed benchmark table went in issue 28)."""
    readme = (ROOT / "README.md").read_text()
    readme = re.sub(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", "", readme, flags=re.S)
    readme = re.sub(r"```.*?```", "", readme, flags=re.S)
    table = "\n".join(line for line in readme.splitlines() if line.startswith("|"))
    quoted = {n for n in _numbers(table) if "." in n}
    generated = _numbers(tables_tool.render())
    missing = sorted(quoted - generated)
    assert not missing, f"README figures in no generated table: {missing[:20]}"
