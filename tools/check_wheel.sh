#!/usr/bin/env bash
# Build jaxvi's wheel and sdist with `python -m build`, install each into a fresh virtual
# environment (no system site-packages, so nothing of this checkout or its environment leaks
# in), and run from outside the checkout:
#   python -c "import jaxvi; print(jaxvi.__version__)"   and a one-line GaussianMixture fit.
#
#   bash tools/check_wheel.sh            # wheel and sdist
#   bash tools/check_wheel.sh wheel      # the wheel only
#
# Needs the package registry for the build backend and jaxvi's dependencies (pip's cache makes
# a rerun quick). Exits non-zero, naming the step, on the first failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WHAT="${1:-all}"
WORK="$(mktemp -d /tmp/jaxvi-wheelcheck.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-python3}"

step() { echo "== $*"; }

step "build wheel and sdist into $WORK/dist"
"$PY" -m venv "$WORK/build-env"
"$WORK/build-env/bin/python" -m pip install --quiet --upgrade pip build
# Build from a clean copy of the tracked files, so untracked files of this checkout stay out.
git -C "$ROOT" archive --format=tar HEAD | (mkdir -p "$WORK/src" && tar -x -C "$WORK/src")
"$WORK/build-env/bin/python" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; echo "FAILED: python -m build"; exit 1; }
ls -l "$WORK/dist"

wheel=$(ls "$WORK"/dist/jaxvi-*.whl)
sdist=$(ls "$WORK"/dist/jaxvi-*.tar.gz)
step "wheel contents: py.typed and LICENSE"
"$WORK/build-env/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["jaxvi/py.typed", "jaxvi/__init__.py"]
missing = [n for n in need if n not in names]
if not any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names):
    missing.append("LICENSE")
if any(n.startswith(("tests/", "benchmarks/", "docs/", "examples/")) for n in names):
    sys.exit("FAILED: the wheel carries files outside the package")
if missing:
    sys.exit(f"FAILED: the wheel lacks {missing}")
meta = [n for n in names if n.endswith(".dist-info/METADATA")][0]
text = zipfile.ZipFile(sys.argv[1]).read(meta).decode()
for field in ("License-Expression: Apache-2.0", "Classifier: Typing :: Typed", "Keywords:"):
    if field not in text:
        sys.exit(f"FAILED: METADATA has no {field!r}")
print(f"{len(names)} files; py.typed, LICENSE, license expression, classifiers, keywords present")
PY

check() {  # $1: label, $2: what to pip install
    local env="$WORK/venv-$1"
    step "install the $1 into a fresh venv"
    "$PY" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --upgrade pip
    "$env/bin/python" -m pip install --quiet "$2" >"$WORK/install-$1.log" 2>&1 \
        || { tail -30 "$WORK/install-$1.log"; echo "FAILED: pip install $1"; exit 1; }
    step "smoke test of the $1 (from $WORK, outside the checkout)"
    (cd "$WORK" && env -u PYTHONPATH JAX_PLATFORMS=cpu "$env/bin/python" -c \
        "import jaxvi; print(jaxvi.__version__)")
    (cd "$WORK" && env -u PYTHONPATH JAX_PLATFORMS=cpu "$env/bin/python" - "$env" <<'PY'
import pathlib, sys
import jaxvi
where = pathlib.Path(jaxvi.__file__).resolve()
assert str(where).startswith(str(pathlib.Path(sys.argv[1]).resolve())), f"imported {where}"
assert (where.parent / "py.typed").is_file(), "py.typed not installed"
from importlib.metadata import version
assert version("jaxvi") == jaxvi.__version__, (version("jaxvi"), jaxvi.__version__)
PY
    )
    (cd "$WORK" && env -u PYTHONPATH JAX_PLATFORMS=cpu "$env/bin/python" -c \
        "import numpy as np, jaxvi; print(jaxvi.GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(200, 2))).means_.shape)")
    echo "OK: $1"
}

if [[ "$WHAT" == all || "$WHAT" == wheel ]]; then check wheel "$wheel"; fi
if [[ "$WHAT" == all || "$WHAT" == sdist ]]; then check sdist "$sdist"; fi
echo "wheel check passed"
