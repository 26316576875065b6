"""Weak scaling over 1, 2, 4 devices: EM seconds per iteration with the points per device fixed,
and data-parallel VAE training steps per second with the batch per device fixed.

Each device count runs in its own process. On a CPU host with fewer devices than asked,
`--xla_force_host_platform_device_count` simulates them: simulated devices share the same
cores, so there the table measures the cost of the sharded program (partitioning, `psum`),
not a speed-up. On a multi-GPU host the devices are real and the efficiency t₁/tₙ is the
weak-scaling efficiency.

    python -m benchmarks.bench_scaling [--devices 1 2 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def worker(n_devices: int, em_n: int, vae_batch: int, quick: bool) -> dict:
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from benchmarks._harness import device_info, time_fn
    from jaxvi import distributed, em
    from jaxvi.data import load_digits
    from jaxvi.training.step import init_state, make_epoch, make_step
    from jaxvi.vae.losses import elbo_loss
    from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model

    devices = jax.devices()[:n_devices]
    if len(devices) < n_devices:
        return {"devices": n_devices, "skipped": f"only {len(devices)} device(s)"}
    mesh = distributed.data_mesh(devices)
    repeats = 2 if quick else 5

    # EM: N = em_n points per device, D = K = 16, full covariance, float32.
    rng = np.random.default_rng(0)
    d, k = 16, 16
    centres = rng.normal(scale=4.0, size=(k, d))
    x = (centres[rng.integers(k, size=em_n * n_devices)]
         + rng.normal(size=(em_n * n_devices, d))).astype(np.float32)
    gmm0 = em.fit(x[:20_000], k, key=jax.random.key(0), max_iter=2).gmm

    def em_fit(iters):
        return em.fit(x, k, key=jax.random.key(0), init=gmm0, max_iter=iters, tol=0.0,
                      mesh=mesh).log_likelihood

    short, long = 2, 12
    t_short = time_fn(em_fit, short, warmup=1, repeats=repeats)
    t_long = time_fn(em_fit, long, warmup=1, repeats=repeats)
    em_s_per_iter = max(t_long - t_short, 1e-9) / (long - short)

    # VAE: the `jaxvi train` model, batch = vae_batch per device, one epoch of 20 steps.
    data = load_digits()
    cfg = VAEConfig(data_dim=data.x_train.shape[1])
    graphdef, params = split_model(HierarchicalVAE(cfg, rngs=nnx.Rngs(params=0)))
    batch = vae_batch * n_devices
    steps = 5 if quick else 20
    xs = np.resize(np.asarray(data.x_train, np.float32), (batch * steps, data.x_train.shape[1]))
    optimizer = optax.adam(1e-3)
    state = init_state(params, optimizer)
    state, xs_dev = jax.device_put((state, xs), distributed.replicated(mesh))
    epoch = make_epoch(make_step(elbo_loss(graphdef), optimizer), batch, mesh)
    t_epoch = time_fn(lambda: epoch(state, xs_dev, jax.random.key(1))[1], warmup=1,
                      repeats=repeats)
    return {
        "devices": n_devices,
        "device": device_info(),
        "em": {"n_per_device": em_n, "D": d, "K": k, "s_per_iter": em_s_per_iter},
        "vae": {"batch_per_device": vae_batch, "steps_per_s": steps / t_epoch,
                "samples_per_s": steps * batch / t_epoch},
    }


def run_worker_process(n: int, args) -> dict:
    env = dict(os.environ)
    platform = env.get("JAX_PLATFORMS", "")
    if platform in ("", "cpu"):
        # Only affects the CPU backend: simulate n devices when the host has fewer.
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                            + f" --xla_force_host_platform_device_count={n}").strip()
    cmd = [sys.executable, "-m", "benchmarks.bench_scaling", "--worker", str(n),
           "--em-n", str(args.em_n), "--vae-batch", str(args.vae_batch)]
    if args.quick:
        cmd.append("--quick")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"worker with {n} devices failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--em-n", type=int, default=None, help="EM points per device")
    p.add_argument("--vae-batch", type=int, default=128, help="VAE batch per device")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.em_n is None:
        args.em_n = 5_000 if args.quick else 50_000
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(args.worker, args.em_n, args.vae_batch,
                                            args.quick)))
        return {}

    from benchmarks._harness import print_device, print_table, write_result

    info = print_device()
    results = [run_worker_process(n, args) for n in args.devices]
    ran = [r for r in results if "skipped" not in r]
    base = ran[0]
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append({"devices": r["devices"], "note": r["skipped"]})
            continue
        em_eff = base["em"]["s_per_iter"] / r["em"]["s_per_iter"]
        vae_eff = r["vae"]["steps_per_s"] / base["vae"]["steps_per_s"]
        rows.append({
            "devices": r["devices"],
            "em_N": r["em"]["n_per_device"] * r["devices"],
            "em_ms_per_iter": 1e3 * r["em"]["s_per_iter"],
            "em_weak_eff": em_eff,
            "vae_batch": r["vae"]["batch_per_device"] * r["devices"],
            "vae_steps_per_s": r["vae"]["steps_per_s"],
            "vae_weak_eff": vae_eff,
        })
    simulated = info["platform"] == "cpu"
    print("weak scaling" + (" (simulated CPU devices sharing the same cores)" if simulated
                            else ""))
    print_table(rows, ["devices", "em_N", "em_ms_per_iter", "em_weak_eff", "vae_batch",
                       "vae_steps_per_s", "vae_weak_eff", "note"])
    result = {"simulated_devices": simulated, "rows": rows, "workers": results}
    if not args.quick:
        write_result("bench_scaling", result)
    return result


if __name__ == "__main__":
    main()
