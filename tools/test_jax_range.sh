#!/usr/bin/env bash
# Run tests on one end of the JAX range that pyproject.toml allows, in a virtual environment of
# its own (.venv-jax-oldest or .venv-jax-newest; ignored by git). CI (.ci/run) installs
# `.[dev]` as a user would, which resolves to the newest end; this script is for the other one
# (and for re-running the newest with its exact versions).
#
#   bash tools/test_jax_range.sh oldest                   # the default test selection below
#   bash tools/test_jax_range.sh newest tests/vae -x      # any pytest arguments
#
# One pytest process, no xdist (-n 0); the whole run under `timeout` (JAXVI_RANGE_TIMEOUT
# seconds, default 5400) so a hang fails instead of waiting forever.
set -euo pipefail
cd "$(dirname "$0")/.."
end="${1:-oldest}"
shift || true
case "$end" in
  # The oldest versions pyproject.toml admits.
  oldest) pins=(jax==0.9.2 jaxlib==0.9.2 flax==0.12.6 optax==0.2.8 distrax==0.1.9
                chex==0.1.92 orbax-checkpoint==0.12.8) ;;
  # The newest, as tested when the ranges were written.
  newest) pins=(jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 optax==0.2.8 distrax==0.1.9
                chex==0.1.92 orbax-checkpoint==0.12.8) ;;
  *) echo "usage: $0 [oldest|newest] [pytest arguments...]" >&2; exit 2 ;;
esac
venv="${JAXVI_RANGE_VENV:-.venv-jax-$end}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[dev]" "${pins[@]}"
"$venv/bin/python" -c "import jax, jaxlib, flax, optax; print('jax', jax.__version__, \
'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
if [ "$#" -eq 0 ]; then
  set -- tests/test_regressions.py tests/kl tests/em tests/vae/test_estimator.py
fi
exec timeout "${JAXVI_RANGE_TIMEOUT:-5400}" "$venv/bin/python" -m pytest -n 0 "$@"
