"""Scaling over devices and over processes.

Devices (1, 2, 4, each count in its own process): weak scaling of EM seconds per iteration
with the points per device fixed, and of data-parallel VAE training steps per second with the
batch per device fixed. On a CPU host with fewer devices than asked,
`--xla_force_host_platform_device_count` simulates them: simulated devices share the same
cores, so there the table measures the cost of the sharded program (partitioning, `psum`),
not a speed-up. On a multi-GPU host the devices are real and t₁/tₙ is the weak-scaling
efficiency.

Processes (1, 2, 4 jax.distributed processes, one CPU device each, started by `jaxvi
launch`): EM seconds per iteration, weak (points per process fixed) and strong (N fixed),
and the bytes of the sufficient statistics all-reduced (`psum`) per iteration. On one
machine the processes share its cores, so the table shows the overhead of the multi-process
program (gloo all-reduce, coordination), not a speed-up; on a cluster run the process worker
under the cluster's launcher (`srun python -m benchmarks.bench_scaling --process-worker
--cluster`, one process per host or GPU) for real scaling.

    python -m benchmarks.bench_scaling [--devices 1 2 4] [--processes 1 2 4] [--quick]
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
    em_s_per_iter = em_timing(x, gmm0, mesh, repeats)

    # VAE: the `jaxvi train` model, batch = vae_batch per device, one epoch of 20 steps.
    data = load_digits()
    cfg = VAEConfig(data_dim=data.x_train.shape[1], hidden=(512, 512), latent_dim=5)  # as measured
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


def em_timing(x, gmm0, mesh, repeats: int) -> float:
    """EM seconds per iteration on x over `mesh`: the difference of a 12- and a 2-iteration
    fit from the same initial GMM, each the median of `repeats` after a warm-up."""
    import jax

    from benchmarks._harness import time_fn
    from jaxvi import em

    def em_fit(iters):
        return em.fit(x, gmm0.n_components, key=jax.random.key(0), init=gmm0, max_iter=iters,
                      tol=0.0, mesh=mesh).log_likelihood

    short, long = 2, 12
    t_short = time_fn(em_fit, short, warmup=1, repeats=repeats)
    t_long = time_fn(em_fit, long, warmup=1, repeats=repeats)
    return max(t_long - t_short, 1e-9) / (long - short)


def allreduce_bytes(gmm, n_restarts: int = 1) -> int:
    """Bytes that one EM iteration sums over the mesh (`psum`): the sufficient statistics
    and the log-likelihood of each restart (`jaxvi.em.stats.e_step_stats`'s output)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxvi.em.stats import e_step_stats

    x = jnp.zeros((8, gmm.n_features), gmm.means.dtype)
    shapes = jax.eval_shape(lambda: e_step_stats(x, gmm, jnp.zeros(gmm.n_features)))
    return n_restarts * sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
                            for a in jax.tree.leaves(shapes))


def process_worker(n_per_process: int, n_strong: int, quick: bool, cluster: bool) -> dict:
    """One process of a job (`jaxvi launch`, or a cluster's launcher with `cluster`): EM over
    the mesh of every process's devices, weak (`n_per_process` rows each) and strong
    (`n_strong` rows in all), each process on its own rows of the same data."""
    from jaxvi import distributed, processes

    processes.initialize(cluster=cluster)
    import jax
    import numpy as np

    from jaxvi import em

    p = jax.process_count()
    d, k = 16, 16
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(k, d))
    n_max = max(n_per_process * p, n_strong)
    x = (centres[rng.integers(k, size=n_max)] + rng.normal(size=(n_max, d))).astype(np.float32)
    gmm0 = jax.device_get(em.fit(x[:20_000], k, key=jax.random.key(0), max_iter=2).gmm)
    mesh = distributed.data_mesh()
    repeats = 2 if quick else 5
    weak = em_timing(processes.local_rows(x[: n_per_process * p]), gmm0, mesh, repeats)
    strong = em_timing(processes.local_rows(x[:n_strong]), gmm0, mesh, repeats)
    return {"processes": p, "devices": jax.device_count(), "D": d, "K": k,
            "weak": {"n_per_process": n_per_process, "s_per_iter": weak},
            "strong": {"N": n_strong, "s_per_iter": strong},
            "allreduce_bytes_per_iter": allreduce_bytes(gmm0)}


def run_process_job(n: int, args) -> dict:
    """`jaxvi launch -n n` of the process worker, one CPU device per process on a CPU host."""
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "jaxvi.cli", "launch", "-n", str(n)]
    if os.environ.get("JAX_PLATFORMS", "") in ("", "cpu"):
        cmd += ["--cpu-devices", "1"]
    cmd += ["--", sys.executable, "-m", "benchmarks.bench_scaling", "--process-worker",
            "--em-n", str(args.em_n), "--em-n-strong", str(args.em_n_strong)]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"job of {n} processes failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("[0] RESULT ")][-1]
    return json.loads(line[len("[0] RESULT "):])


def process_rows_table(results: list[dict]) -> list[dict]:
    base = results[0]
    return [{
        "processes": r["processes"],
        "weak_N": r["weak"]["n_per_process"] * r["processes"],
        "weak_ms_per_iter": 1e3 * r["weak"]["s_per_iter"],
        "weak_eff": base["weak"]["s_per_iter"] / r["weak"]["s_per_iter"],
        "strong_N": r["strong"]["N"],
        "strong_ms_per_iter": 1e3 * r["strong"]["s_per_iter"],
        "strong_speedup": base["strong"]["s_per_iter"] / r["strong"]["s_per_iter"],
        "allreduce_bytes_per_iter": r["allreduce_bytes_per_iter"],
    } for r in results]


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
    p.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--processes", type=int, nargs="*", default=None,
                   help="process counts on this host (default 1 2 4 on CPU; none on an "
                   "accelerator, whose processes would share its devices: run the process "
                   "worker under the cluster's launcher there)")
    p.add_argument("--em-n", type=int, default=None,
                   help="EM points per device (devices) and per process (processes, weak)")
    p.add_argument("--em-n-strong", type=int, default=None,
                   help="EM points in all (processes, strong; default 4 × --em-n)")
    p.add_argument("--vae-batch", type=int, default=128, help="VAE batch per device")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--process-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cluster", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.em_n is None:
        args.em_n = 5_000 if args.quick else 50_000
    if args.em_n_strong is None:
        args.em_n_strong = 4 * args.em_n
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(args.worker, args.em_n, args.vae_batch,
                                            args.quick)))
        return {}
    if args.process_worker:
        r = process_worker(args.em_n, args.em_n_strong, args.quick, args.cluster)
        import jax

        if jax.process_index() == 0:
            print("RESULT " + json.dumps(r), flush=True)
        return {}

    from benchmarks._harness import print_device, print_table, write_result

    info = print_device()
    result = {"simulated_devices": info["platform"] == "cpu"}
    if args.devices:
        result.update(device_scaling(args, info))
    if args.processes is None:
        args.processes = [1, 2, 4] if info["platform"] == "cpu" else []
    if args.processes:
        jobs = [run_process_job(n, args) for n in args.processes]
        rows = process_rows_table(jobs)
        print("\nprocesses (jax.distributed, 1 device each): EM weak and strong scaling"
              + (f"; here the processes share this machine's {info['cpu_count']} cores, so "
                 "this shows the overhead of the multi-process program, not a speed-up"
                 if info["platform"] == "cpu" else ""))
        print_table(rows, ["processes", "weak_N", "weak_ms_per_iter", "weak_eff", "strong_N",
                           "strong_ms_per_iter", "strong_speedup", "allreduce_bytes_per_iter"])
        result["processes"] = {"rows": rows, "workers": jobs,
                               "shared_cores": info["platform"] == "cpu"}
    if not args.quick:
        write_result("bench_scaling", result)
    return result


def device_scaling(args, info: dict) -> dict:
    from benchmarks._harness import print_table

    results = [run_worker_process(n, args) for n in args.devices]
    ran = [r for r in results if "skipped" not in r]
    base = ran[0]
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append({"devices": r["devices"], "note": r["skipped"]})
            continue
        rows.append({
            "devices": r["devices"],
            "em_N": r["em"]["n_per_device"] * r["devices"],
            "em_ms_per_iter": 1e3 * r["em"]["s_per_iter"],
            "em_weak_eff": base["em"]["s_per_iter"] / r["em"]["s_per_iter"],
            "vae_batch": r["vae"]["batch_per_device"] * r["devices"],
            "vae_steps_per_s": r["vae"]["steps_per_s"],
            "vae_weak_eff": r["vae"]["steps_per_s"] / base["vae"]["steps_per_s"],
        })
    simulated = info["platform"] == "cpu"
    print("weak scaling" + (" (simulated CPU devices sharing the same cores)" if simulated
                            else ""))
    print_table(rows, ["devices", "em_N", "em_ms_per_iter", "em_weak_eff", "vae_batch",
                       "vae_steps_per_s", "vae_weak_eff", "note"])
    return {"rows": rows, "workers": results}


if __name__ == "__main__":
    main()
