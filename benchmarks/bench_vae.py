"""Training steps per second of jaxvi's hierarchical-VAE step against a PyTorch reference of
the same model, architecture and batch size (eager, and torch.compile where it works), and the
achieved FLOP/s against two jitted-matmul rooflines measured in the same run: a large square
matmul (the machine's peak) and the step's own dense-layer matmuls alone at its batch size
(XLA's rate at these shapes: the time a step would take if it were nothing but its matmuls).

jaxvi runs the way `jaxvi train` does: an epoch of steps as one `lax.scan` (no per-step host
synchronisation); its plain per-step jitted call is timed too, and so is where a step's time
goes (`step_breakdown`: matmuls alone, dense layers, ELBO, Adam). Run with the `bench` extra:
    python benchmarks/bench_vae.py [--batch-sizes 128 256] [--steps 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks._harness import (  # noqa: E402
    matmul_flops_per_s,
    print_device,
    print_table,
    time_fn,
    write_result,
)
from jaxvi import data  # noqa: E402
from jaxvi.nn import dense  # noqa: E402
from jaxvi.training.step import init_state, make_epoch, make_step  # noqa: E402
from jaxvi.vae.losses import elbo_loss  # noqa: E402
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, merge_model, split_model  # noqa: E402


def analytic_matmul_flops(cfg: VAEConfig, batch: int) -> float:
    """Dense-layer FLOPs of one training step: 2·B·Σ in·out forward, ×3 with the backward."""

    def mlp(d_in, hidden, d_out):
        sizes = [d_in, *hidden, d_out]
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    per_point = (mlp(cfg.data_dim, cfg.hidden, 2 * cfg.latent_dim)
                 + mlp(cfg.latent_dim, cfg.hidden[::-1], cfg.data_dim)
                 + mlp(cfg.latent_dim + cfg.data_dim, cfg.head_hidden, cfg.components))
    return 3 * 2 * batch * per_point


def dense_shapes(cfg: VAEConfig) -> list[tuple[int, int]]:
    """(in, out) of every dense layer of the model, read from the Flax module tree."""
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(0))
    return [tuple(m.kernel[...].shape) for _, m in nnx.iter_graph(model)
            if isinstance(m, nnx.Linear)]


def same_shape_matmuls(cfg: VAEConfig, batch: int):
    """-> (jitted fn, its args, FLOPs): one call doing exactly the step's dense-layer matmuls
    and nothing else: per layer x@W (forward), dy@Wᵀ and xᵀ@dy (backward), at this batch size,
    each computed the way the step computes it (`jaxvi.nn.dense.matmul` and its gradient).
    Its rate is XLA's own matmul rate at the model's shapes, the roofline a step can approach."""
    args = []
    for i, (d_in, d_out) in enumerate(dense_shapes(cfg)):
        kx, kw, kd = jax.random.split(jax.random.fold_in(jax.random.key(0), i), 3)
        args.append((jax.random.normal(kx, (batch, d_in)), jax.random.normal(kw, (d_in, d_out)),
                     jax.random.normal(kd, (batch, d_out))))

    def layer(x, w, dy):
        y, vjp = jax.vjp(dense.matmul, x, w)  # the step's own three products, done its way
        return y, *vjp(dy)

    @jax.jit
    def matmuls(args):
        return [layer(*a) for a in args]

    flops = sum(3 * 2 * batch * x.shape[1] * w.shape[1] for x, w, _ in args)
    return matmuls, args, flops


def bench_jax(cfg, x, batch_size, steps):
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    opt = optax.adam(1e-3)
    step = make_step(elbo_loss(graphdef), opt)
    state = init_state(params, opt)
    xs = jnp.asarray(np.resize(x, (steps * batch_size, x.shape[1])))
    epoch = make_epoch(step, batch_size)  # `steps` steps in one lax.scan
    key = jax.random.key(1)
    t_epoch = time_fn(lambda: epoch(state, xs, key)[1]["loss"], warmup=2, repeats=7)
    jstep = jax.jit(step)
    b = xs[:batch_size]
    t_step = time_fn(lambda: jstep(state, b, key)[1]["loss"], warmup=3, repeats=30)
    cost = jstep.lower(state, b, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    return steps / t_epoch, 1.0 / t_step, xla_flops


def dense_layers_loss(graphdef):
    """A loss through the model's three MLPs alone (encoder, decoder, q(z | w, x) head; biases
    and ReLUs included), wired as in the ELBO but with a plain sum of squares in place of it."""

    def loss_fn(params, batch, key):
        model = merge_model(graphdef, params)
        w = model.encoder.net(batch)[:, : model.config.latent_dim]
        head = model.head.net(jnp.concatenate([w, batch], axis=-1))
        return jnp.sum(jnp.square(model.decoder.net(w))) + jnp.sum(jnp.square(head)), {}

    return loss_fn


def step_breakdown(cfg, x, batch_size, steps):
    """-> (ms per step of each part, FLOPs of the matmuls). Where a step's time goes: medians
    (epochs as `lax.scan`; the parts timed in turn, three rounds) of the step's matmuls alone
    (`same_shape_matmuls`), then the dense layers' gradient with a plain SGD update, then the
    ELBO's gradient with SGD, then the real step (ELBO gradient and Adam). Each part adds work
    to the one above."""
    model = HierarchicalVAE(cfg, rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    xs = jnp.asarray(np.resize(x, (steps * batch_size, x.shape[1])))
    key = jax.random.key(1)
    variants = {
        "dense layers, gradient + SGD": (dense_layers_loss(graphdef), optax.sgd(1e-3)),
        "ELBO, gradient + SGD": (elbo_loss(graphdef), optax.sgd(1e-3)),
        "ELBO, gradient + Adam (the step)": (elbo_loss(graphdef), optax.adam(1e-3)),
    }
    epochs = {}
    for name, (loss, opt) in variants.items():
        state = init_state(params, opt)
        epochs[name] = (make_epoch(make_step(loss, opt), batch_size), state)
    matmuls, args, flops = same_shape_matmuls(cfg, batch_size)
    times = {"matmuls alone": [], **{name: [] for name in epochs}}
    for _ in range(3):  # interleaved, so that a drift of the host's speed hits all alike
        times["matmuls alone"].append(time_fn(matmuls, args, warmup=3, repeats=20))
        for name, (epoch, state) in epochs.items():
            t = time_fn(lambda e=epoch, s=state: e(s, xs, key)[1]["loss"], warmup=1, repeats=3)
            times[name].append(t / steps)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}, flops


def bench_torch(cfg, x, batch_size, steps, compile_mode, threads):
    import torch

    from benchmarks.torch_vae import TorchHierarchicalVAE, make_train_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TorchHierarchicalVAE(cfg.data_dim, cfg.components, cfg.latent_dim, cfg.hidden,
                                 cfg.head_hidden, cfg.min_scale, cfg.min_latent_scale)
    step = make_train_step(model, compile_mode=compile_mode)
    # Separate contiguous tensors per step (views at different offsets make torch.compile
    # recompile).
    xs = [torch.tensor(b) for b in np.resize(x, (steps, batch_size, x.shape[1]))]
    eps = [torch.randn(batch_size, cfg.latent_dim) for _ in range(steps)]

    def run():
        loss = None
        for i in range(steps):
            loss = step(xs[i], eps[i])
        return float(loss.detach())  # one sync at the end, as the JAX epoch

    t0 = time.perf_counter()
    run()  # warm-up (compiles under torch.compile)
    warm = time.perf_counter() - t0
    t = time_fn(run, warmup=1, repeats=5)
    return steps / t, warm


def run_batch(cfg, x, b, steps, roof, no_compile):
    """One batch size: jaxvi (scan and per call) and torch (eager, compile; 1 and all threads)."""
    import torch

    print(f"--- batch {b}, {steps} steps per timing")
    jax_epoch_sps, jax_step_sps, xla_flops = bench_jax(cfg, x, b, steps)
    flops = analytic_matmul_flops(cfg, b)
    breakdown, mm_flops = step_breakdown(cfg, x, b, steps)
    assert abs(mm_flops - flops) < 1e-6 * flops, (mm_flops, flops)
    t_mm = breakdown["matmuls alone"] / 1e3
    same_shape_roof = flops / t_mm
    rows = [
        {"impl": "jaxvi (epoch = lax.scan)", "steps_per_s": jax_epoch_sps},
        {"impl": "jaxvi (jitted step, per call)", "steps_per_s": jax_step_sps},
    ]
    # torch's OpenMP pool is timed with every core and with one thread (on a shared machine
    # its spin-waiting threads can lose badly to other load); the faster one is the peer.
    cores = os.cpu_count() or 1
    thread_counts = sorted({cores, 1}, reverse=True)
    eager = {}
    for t in thread_counts:
        eager[t], _ = bench_torch(cfg, x, b, steps, None, t)
        rows.append({"impl": f"torch {torch.__version__} eager, {t} thread(s)",
                     "steps_per_s": eager[t]})
    torch_eager = max(eager.values())
    torch_compiled, compile_error, compiled = None, None, {}
    if not no_compile:
        try:
            for t in thread_counts:
                compiled[t], _ = bench_torch(cfg, x, b, steps, "default", t)
                rows.append({"impl": f"torch.compile, {t} thread(s)", "steps_per_s": compiled[t]})
            torch_compiled = max(compiled.values())
        except Exception as err:  # torch.compile needs a C++ toolchain; report, don't hide
            compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            print(f"torch.compile failed: {compile_error}")
    for r in rows:
        r["ratio_jaxvi_scan_over_this"] = jax_epoch_sps / r["steps_per_s"]
        r["gflop_per_s"] = flops * r["steps_per_s"] / 1e9
        r["fraction_of_jitted_matmul"] = flops * r["steps_per_s"] / roof
        r["fraction_of_same_shape_matmuls"] = flops * r["steps_per_s"] / same_shape_roof
    print(f"step: {flops / 1e9:.3f} GFLOP (dense layers, analytic), XLA cost analysis "
          f"{xla_flops / 1e9:.3f} GFLOP; its matmuls alone, jitted: {t_mm * 1e3:.3f} ms "
          f"({same_shape_roof / 1e9:.1f} GFLOP/s)")
    print_table(rows, ["impl", "steps_per_s", "ratio_jaxvi_scan_over_this", "gflop_per_s",
                       "fraction_of_jitted_matmul", "fraction_of_same_shape_matmuls"])
    step_ms = breakdown["ELBO, gradient + Adam (the step)"]
    print("where a step's time goes (ms per step; each row adds work to the one above):")
    print_table([{"part": k, "ms_per_step": v, "fraction_of_step": v / step_ms}
                 for k, v in breakdown.items()], ["part", "ms_per_step", "fraction_of_step"])
    return {
        "batch_size": b,
        "step_gflop_analytic": flops / 1e9,
        "step_gflop_xla_cost_analysis": xla_flops / 1e9,
        "jaxvi_scan_steps_per_s": jax_epoch_sps,
        "jaxvi_step_steps_per_s": jax_step_sps,
        "torch_eager_steps_per_s": torch_eager,
        "torch_eager_by_threads": eager,
        "torch_compile_steps_per_s": torch_compiled,
        "torch_compile_by_threads": compiled,
        "torch_compile_error": compile_error,
        "ratio_vs_torch_eager": jax_epoch_sps / torch_eager,
        "ratio_vs_torch_compile": (jax_epoch_sps / torch_compiled) if torch_compiled else None,
        "jaxvi_fraction_of_jitted_matmul": flops * jax_epoch_sps / roof,
        "same_shape_matmuls_s": t_mm,
        "same_shape_matmuls_gflop_per_s": same_shape_roof / 1e9,
        "jaxvi_fraction_of_same_shape_matmuls": flops * jax_epoch_sps / same_shape_roof,
        "step_breakdown_ms": breakdown,
        "rows": rows,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256],
                   help="default: jaxvi train's batch (128) and 256")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--matmul-n", type=int, default=2048, help="size of the roofline matmul")
    args = p.parse_args(argv)
    device = print_device()
    # The network its committed figures were measured on (64-512-512-5, K = 10: `jaxvi train`'s
    # defaults before the N2D-sized recipe of eval_vae_mnist), pinned so the ratios stay.
    cfg = VAEConfig(data_dim=64, hidden=(512, 512), latent_dim=5)
    x = data.load_digits().x_train
    print(f"model: {cfg.data_dim}-{'-'.join(map(str, cfg.hidden))}-{cfg.latent_dim}, "
          f"K={cfg.components}, head {cfg.head_hidden}")
    # The roofline: the best of a few jitted-matmul measurements (on a shared machine one
    # sample can land in someone else's burst), at the requested size and at 1024.
    roofs = {n: max(matmul_flops_per_s(n=n) for _ in range(3)) for n in (args.matmul_n, 1024)}
    roof = max(roofs.values())
    print("jitted matmul: " + ", ".join(f"{n}²: {r / 1e9:.1f} GFLOP/s" for n, r in roofs.items()))
    results = [run_batch(cfg, x, b, args.steps, roof, args.no_compile)
               for b in args.batch_sizes]
    write_result("bench_vae", {
        "steps_per_timing": args.steps,
        "model": cfg.to_dict(),
        "matmul_gflop_per_s_by_size": {str(n): r / 1e9 for n, r in roofs.items()},
        "matmul_gflop_per_s": roof / 1e9,
        "by_batch_size": results,
        "device_summary": device,
    })


if __name__ == "__main__":
    main()
