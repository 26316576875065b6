"""The one timing harness every benchmark uses: device description, medians of repeated runs
after warm-up (with `block_until_ready`), a jitted-matmul roofline, and JSON results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_info() -> dict:
    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }


def print_device() -> dict:
    info = device_info()
    print(f"device: {info['device_kind']} ({info['platform']}) x{info['device_count']}, "
          f"{info['cpu_count']} CPU cores, jax {info['jax']}")
    return info


def _block(out):
    return jax.tree_util.tree_map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, out
    )


def time_fn(fn, *args, warmup: int = 2, repeats: int = 10, min_time: float = 0.0) -> float:
    """Median wall-clock seconds of `fn(*args)` after `warmup` calls; blocks on JAX outputs.

    `fn` may be any callable (JAX, NumPy, PyTorch); JAX outputs are waited for. If
    `min_time` > 0, repeats continue until their total exceeds it.
    """
    for _ in range(warmup):
        _block(fn(*args))
    times = []
    while len(times) < repeats or sum(times) < min_time:
        t0 = time.perf_counter()
        _block(fn(*args))
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * max(repeats, 1):
            break
    return statistics.median(times)


def matmul_flops_per_s(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
    """Achieved FLOP/s of a jitted n×n matmul on the default device: the roofline we quote."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    seconds = time_fn(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return 2.0 * n**3 / seconds


# The defaults a result file of the VAE recipe records (what changed between the recipes
# measured; `readme_tables.py` labels results whose recipe differs from the latest run's).
RECIPE_FIELDS = ("restarts", "consensus_weight")


def recipe_defaults() -> dict:
    """The VAE recipe's current defaults of `RECIPE_FIELDS` (`jaxvi.vae.recipe.TrainConfig`)."""
    from jaxvi.vae.recipe import TrainConfig

    defaults = TrainConfig()
    return {k: getattr(defaults, k) for k in RECIPE_FIELDS}


def write_result(name: str, result: dict) -> Path:
    """Write `result` (plus the device and a timestamp) to benchmarks/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device_info(),
        **result,
    }
    suffix = "" if jax.devices()[0].platform == "cpu" else f"_{jax.devices()[0].platform}"
    path = RESULTS_DIR / f"{name}{suffix}.json"
    path.write_text(json.dumps(payload, indent=2, default=_to_builtin) + "\n")
    print(f"wrote {path}")
    return path


def _to_builtin(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned text table."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
