"""Mutation testing for jaxvi's numerical code: does some test notice a one-line bug?

Each mutation in `tools/mutations.toml` names the exact text of one source line (or a unique
substring of it), its replacement and the pytest arguments that should catch it. The text is
searched for in all of `jaxvi/**/*.py` (not at a file and line number, so the catalogue
survives code moving between modules): it must occur in exactly one place, or, with `anchor`
(a substring that itself occurs once), at its first occurrence after the anchor in the
anchor's file, within `_ANCHOR_WINDOW` lines. Zero or several places is an error.

One mutant at a time: `jaxvi/`, `tests/` and `pyproject.toml` are copied into a temporary
directory (the working tree is never touched), the one line is replaced there, and
`python -m pytest -n 0 -x -q <tests>` runs in that copy with PYTHONPATH set to it. A failing
run kills the mutant, a passing one lets it survive, a run past `--timeout` is a timeout
(counted as killed in the score, like mutmut). Results go to a table, a score per package and
`tools/mutation_results.json`.

    python tools/mutate.py                     # the whole catalogue
    python tools/mutate.py --only kl           # one package
    python tools/mutate.py --list              # list the mutations and check they all resolve
    python tools/mutate.py --id kl-diag-logratio-sign   # one mutation by id (repeatable)
    python tools/mutate.py --omit-tests 'tests/*/test_values_*.py'   # without those tests
    python tools/mutate.py --rerun-survivors tools/mutation_results.json   # after new tests

Plain Python (3.11+, `tomllib`); no dependency beyond pytest, which the tests need anyway.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import fnmatch
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "tools" / "mutations.toml"
RESULTS = ROOT / "tools" / "mutation_results.json"
PACKAGES = ("kl", "em", "vi", "vae", "training", "mixture/_linalg")
_ANCHOR_WINDOW = 120  # lines after the anchor within which `find` must occur
_COPIED = ("jaxvi", "tests", "pyproject.toml")


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One catalogue entry: replace `find` (in one line) by `replace`; `tests` should fail."""

    id: str
    package: str
    description: str
    find: str
    replace: str
    tests: tuple[str, ...]
    anchor: str | None = None


@dataclasses.dataclass(frozen=True)
class Site:
    """Where a mutation applies: file (relative to ROOT), 1-based line, the line's text."""

    path: str
    line: int
    text: str


class CatalogueError(ValueError):
    """A mutation that does not resolve to exactly one place, or a malformed entry."""


def load_catalogue(path: Path = CATALOGUE) -> list[Mutation]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    out, seen = [], set()
    for i, entry in enumerate(data.get("mutation", [])):
        missing = {"id", "package", "description", "find", "replace", "tests"} - set(entry)
        if missing:
            raise CatalogueError(f"mutation #{i} ({entry.get('id', '?')}): missing "
                                 f"{sorted(missing)}")
        if entry["package"] not in PACKAGES:
            raise CatalogueError(f"{entry['id']}: package must be one of {PACKAGES}; got "
                                 f"{entry['package']!r}")
        if entry["id"] in seen:
            raise CatalogueError(f"duplicate id {entry['id']!r}")
        if entry["find"] == entry["replace"]:
            raise CatalogueError(f"{entry['id']}: `replace` equals `find`")
        if "\n" in entry["find"] or "\n" in entry["replace"]:
            raise CatalogueError(f"{entry['id']}: `find` and `replace` must be single-line")
        seen.add(entry["id"])
        tests = entry["tests"]
        out.append(Mutation(entry["id"], entry["package"], entry["description"], entry["find"],
                            entry["replace"], tuple([tests] if isinstance(tests, str) else tests),
                            entry.get("anchor")))
    return out


def _sources(root: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(root)): p.read_text().splitlines(keepends=True)
            for p in sorted((root / "jaxvi").rglob("*.py"))}


def _occurrences(sources: dict[str, list[str]], text: str) -> list[Site]:
    return [Site(path, i + 1, line) for path, lines in sources.items()
            for i, line in enumerate(lines) for _ in range(line.count(text))]


def resolve(m: Mutation, sources: dict[str, list[str]]) -> Site:
    """The one place `m` applies, or `CatalogueError`."""
    if m.anchor is None:
        sites = _occurrences(sources, m.find)
    else:
        anchors = _occurrences(sources, m.anchor)
        if len(anchors) != 1:
            raise CatalogueError(f"{m.id}: anchor {m.anchor!r} occurs {len(anchors)} times in "
                                 f"jaxvi/ (must be once): "
                                 f"{[f'{s.path}:{s.line}' for s in anchors]}")
        a = anchors[0]
        lines = sources[a.path]
        after = [Site(a.path, n + 1, lines[n])
                 for n in range(a.line - 1, min(len(lines), a.line - 1 + _ANCHOR_WINDOW))
                 if m.find in lines[n]]
        sites = after[:1]
        if sites and sites[0].text.count(m.find) > 1:
            sites = sites * 2  # ambiguous within its line
    if len(sites) != 1:
        where = [f"{s.path}:{s.line}" for s in sites]
        raise CatalogueError(f"{m.id}: `find` {m.find!r} matches {len(sites)} places in jaxvi/"
                             f"{' after its anchor' if m.anchor else ''} (must be exactly one)"
                             f"{': ' + ', '.join(where) if where else ''}")
    return sites[0]


def _copy_tree(dest: Path, omit: tuple[str, ...]) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in _COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    for pattern in omit:
        for p in (dest / "tests").rglob("*.py"):
            if fnmatch.fnmatch(str(p.relative_to(dest)), pattern):
                p.unlink()


def _test_args(m: Mutation, dest: Path, omit: tuple[str, ...]) -> list[str] | None:
    """The mutation's pytest arguments, less test files removed by `omit` (None: none left)."""
    args, files = [], 0
    for t in m.tests:
        path = t.split("::")[0]
        if path.startswith("tests/") or path.endswith(".py"):
            if any(fnmatch.fnmatch(path, pat) for pat in omit) or not (dest / path).exists():
                continue
            files += 1
        args.append(t)
    return args if files else None


def run_one(m: Mutation, site: Site, timeout: float, omit: tuple[str, ...],
            python: str) -> dict:
    """Apply `m` in a fresh temporary copy, run its tests there, return the result record."""
    with tempfile.TemporaryDirectory(prefix="jaxvi-mutant-") as tmp:
        dest = Path(tmp)
        _copy_tree(dest, omit)
        target = dest / site.path
        lines = target.read_text().splitlines(keepends=True)
        original = lines[site.line - 1]
        if m.anchor is None and original.count(m.find) != 1:
            raise CatalogueError(f"{m.id}: line changed under us")
        lines[site.line - 1] = original.replace(m.find, m.replace, 1)
        target.write_text("".join(lines))
        record = {"id": m.id, "package": m.package, "description": m.description,
                  "where": f"{site.path}:{site.line}", "original": original.strip(),
                  "mutated": lines[site.line - 1].strip(), "tests": list(m.tests)}
        try:
            py_compile.compile(str(target), doraise=True)
        except py_compile.PyCompileError as e:
            return {**record, "status": "invalid", "seconds": 0.0, "output": str(e)[-2000:]}
        args = _test_args(m, dest, omit)
        if args is None:
            return {**record, "status": "no-tests", "seconds": 0.0, "output": ""}
        env = {**os.environ, "PYTHONPATH": str(dest), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [python, "-m", "pytest", "-n", "0", "-x", "-q", "-p", "no:cacheprovider",
               "--durations=0", "--durations-min=1000", *args]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=dest, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            return {**record, "status": "timeout", "seconds": round(time.monotonic() - t0, 1),
                    "output": (out or "")[-2000:]}
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): leave no pytest behind
                proc.kill()
                proc.wait()
        seconds = round(time.monotonic() - t0, 1)
        if proc.returncode == 0:
            status = "survived"
        elif proc.returncode == 1:
            status = "killed"
        else:  # 2-5: interrupted, internal or usage error, nothing collected
            status = "error"
        # a survivor's or an error's output is read in full; a kill needs only its failure line
        keep = 600 if status == "killed" else 3000
        return {**record, "status": status, "seconds": seconds, "returncode": proc.returncode,
                "output": out[-keep:]}


def score_table(results: list[dict]) -> dict[str, dict]:
    """Per package (and "total"): counts by status and score = (killed + timeout) / (killed +
    survived + timeout + no-tests); errors and invalid mutants are left out (fix them)."""
    table: dict[str, dict] = {}
    for pkg in [*PACKAGES, "total"]:
        rs = [r for r in results if pkg == "total" or r["package"] == pkg]
        if not rs:
            continue
        counts = {s: sum(r["status"] == s for r in rs)
                  for s in ("killed", "survived", "timeout", "error", "invalid", "no-tests")}
        # a mutant that no test runs for is not caught: it counts as surviving
        valid = counts["killed"] + counts["survived"] + counts["timeout"] + counts["no-tests"]
        caught = counts["killed"] + counts["timeout"]
        counts["score"] = round(caught / valid, 3) if valid else None
        table[pkg] = counts
    return table


def _print_results(results: list[dict], table: dict[str, dict]) -> None:
    w = max([len(r["id"]) for r in results] + [10])
    print(f"\n{'id':<{w}}  {'package':<15} {'status':<9} {'sec':>6}  where")
    for r in results:
        print(f"{r['id']:<{w}}  {r['package']:<15} {r['status']:<9} {r['seconds']:>6}  "
              f"{r['where']}")
    print(f"\n{'package':<16}{'killed':>7}{'survived':>9}{'timeout':>8}{'no-tests':>9}"
          f"{'error':>6}{'score':>7}")
    for pkg, c in table.items():
        s = "-" if c["score"] is None else f"{c['score']:.0%}"
        print(f"{pkg:<16}{c['killed']:>7}{c['survived']:>9}{c['timeout']:>8}{c['no-tests']:>9}"
              f"{c['error'] + c['invalid']:>6}{s:>7}")
    survivors = [r for r in results if r["status"] not in ("killed", "timeout")]
    for r in survivors:
        print(f"\n{r['status'].upper()}: {r['id']} ({r['where']}): {r['description']}\n"
              f"  - {r['original']}\n  + {r['mutated']}")
        if r["status"] == "error":
            print("  " + r["output"][-800:].replace("\n", "\n  "))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalogue", type=Path, default=CATALOGUE)
    ap.add_argument("--only", choices=PACKAGES, action="append",
                    help="run only this package's mutations (repeatable)")
    ap.add_argument("--id", action="append", help="run only this mutation (repeatable)")
    ap.add_argument("--list", action="store_true",
                    help="list the mutations and where they apply, run nothing")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    ap.add_argument("--omit-tests", action="append", default=[], metavar="GLOB",
                    help="leave test files matching GLOB (relative, e.g. "
                         "'tests/*/test_values_*.py') out of the copy and of every mutant's "
                         "arguments: the score without them")
    ap.add_argument("--rerun-survivors", type=Path, metavar="JSON",
                    help="run only the mutants that were not killed in this earlier results "
                         "file; the killed ones are carried over into the new results (more "
                         "tests can only kill more)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args(argv)

    mutations = load_catalogue(args.catalogue)
    if args.only:
        mutations = [m for m in mutations if m.package in args.only]
    if args.id:
        unknown = set(args.id) - {m.id for m in mutations}
        if unknown:
            ap.error(f"unknown mutation id(s): {sorted(unknown)}")
        mutations = [m for m in mutations if m.id in args.id]
    carried: list[dict] = []
    if args.rerun_survivors:
        previous = {r["id"]: r for r in json.loads(args.rerun_survivors.read_text())["results"]}
        carried = [{**previous[m.id], "carried": True} for m in mutations
                   if m.id in previous and previous[m.id]["status"] in ("killed", "timeout")]
        done = {r["id"] for r in carried}
        mutations_all, mutations = mutations, [m for m in mutations if m.id not in done]
    else:
        mutations_all = mutations
    sources = _sources(ROOT)
    errors, sites = [], {}
    for m in mutations:
        try:
            sites[m.id] = resolve(m, sources)
        except CatalogueError as e:
            errors.append(str(e))
    if args.list:
        for m in mutations:
            s = sites.get(m.id)
            print(f"{m.id:<34} {m.package:<15} {f'{s.path}:{s.line}' if s else 'UNRESOLVED'}"
                  f"\n    {m.description}\n    tests: {' '.join(m.tests)}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors or args.list:
        print(f"{len(mutations)} mutations, {len(errors)} unresolved", file=sys.stderr)
        return 1 if errors else 0

    omit = tuple(args.omit_tests)
    results: list[dict] = []
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, m, sites[m.id], args.timeout, omit, args.python): m
                   for m in mutations}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results.append(r)
            print(f"[{len(results)}/{len(mutations)}] {r['status']:<9} {r['seconds']:>6}s "
                  f"{r['id']}", flush=True)
    results.extend(carried)
    order = {m.id: i for i, m in enumerate(mutations_all)}
    results.sort(key=lambda r: order[r["id"]])
    table = score_table(results)
    _print_results(results, table)
    args.output.write_text(json.dumps(
        {"omit_tests": list(omit), "timeout": args.timeout,
         "seconds": round(time.monotonic() - t0, 1), "scores": table, "results": results},
        indent=1) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
