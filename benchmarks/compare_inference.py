"""ELBO vs forward-KL (reweighted wake-sleep) training of the hierarchical VAE's inference
networks, from the same initialisation with the same budget (epochs, batch size, optimizer):

(a) digits: test IWAE, clustering accuracy (Hungarian) and NMI, after the same pretraining
    (`train_vae`'s defaults), over 3 seeds;
(b) a synthetic set with a bimodal posterior over w: L = 2, z ∈ {0, 1} with p(w | z) =
    N((±2, 0), 0.6²), x = g(|w₁|, w₂) + N(0, 0.7²) with g a fixed piecewise-linear map (exactly
    a one-hidden-layer decoder of the model family), so p(w | x) has a mode at w₁ and one at
    −w₁. For each test x the model's posterior p_θ(w | x) is computed on a 2-D grid, its modes
    found (basins of steepest ascent), and we count the modes holding ≥ 10 % of p's mass and
    how many of them hold ≥ 10 % of q(w | x)'s mass (mode covering vs mode seeking). Two
    settings: the true decoder and prior held fixed (only q(w | x) and q(z | w, x) trained: the
    posterior is bimodal by construction), and everything learned from a random init (the
    learned model may make its own posterior unimodal: we report what we measure).

    python benchmarks/compare_inference.py [--quick] [--rws-samples 16]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks._harness import print_device, print_table, write_result  # noqa: E402
from jaxvi import data  # noqa: E402
from jaxvi.training.loop import fit  # noqa: E402
from jaxvi.vae.evaluate import evaluate_test_set  # noqa: E402
from jaxvi.vae.losses import elbo_loss  # noqa: E402
from jaxvi.vae.model import HierarchicalVAE, VAEConfig, merge_model, split_model  # noqa: E402
from jaxvi.vae.pretrain import pretrain  # noqa: E402
from jaxvi.vae.recipe import TrainConfig  # noqa: E402
from jaxvi.vae.wake_sleep import rws_loss  # noqa: E402

MODE_MASS = 0.10  # a posterior mode counts when it holds ≥ 10 % of p(w | x)
KEPT_MASS = 0.10  # ... and q keeps it when q(w | x) puts ≥ 10 % of its mass in its basin


def make_loss(method, graphdef, rws_samples, elbo_samples=1):
    if method == "elbo":
        return elbo_loss(graphdef, elbo_samples)
    return rws_loss(graphdef, rws_samples)


def frozen_generative(loss_fn):
    """The same loss with the decoder and prior held fixed (zero gradient, so Adam leaves
    them unchanged)."""

    def f(params, batch, key):
        p = {**params, "decoder": jax.lax.stop_gradient(params["decoder"]),
             "prior": jax.lax.stop_gradient(params["prior"])}
        return loss_fn(p, batch, key)

    return f


def run_fit(loss_fn, params, x, *, key, epochs, batch_size, lr):
    t0 = time.perf_counter()
    state, hist = fit(loss_fn, optax.adam(lr), params, x, key=key, epochs=epochs,
                      batch_size=batch_size, progress=False, log=False)
    return state.params, hist, time.perf_counter() - t0


# ----------------------------------------------------------------------------- (a) digits


def digits_seed(args, seed):
    """Pretrain once (autoencoders + GMM prior, as `train_vae`), then train a copy with each
    objective from that same init with the same key, epochs, batch size and optimizer."""
    ds = data.load_digits()
    mc = VAEConfig(data_dim=ds.x_train.shape[1], hidden=(512, 512), latent_dim=5)  # as measured
    tc = TrainConfig(seed=seed, pretrain_epochs=args.pretrain_epochs,
                     restarts=args.restarts, epochs=args.epochs)
    t0 = time.perf_counter()
    model, _ = pretrain(mc, tc, ds.x_train, key=jax.random.key(seed))
    out = {"pretrain_seconds": time.perf_counter() - t0}
    graphdef, params0 = split_model(model)
    x = jnp.asarray(ds.x_train)
    for method in ("elbo", "forward-kl"):
        loss = make_loss(method, graphdef, args.rws_samples)
        params, hist, secs = run_fit(loss, params0, x, key=jax.random.key(seed + 1),
                                     epochs=tc.epochs, batch_size=tc.batch_size,
                                     lr=tc.learning_rate)
        m = evaluate_test_set(merge_model(graphdef, params), ds.x_test, ds.y_test,
                              key=jax.random.key(seed + 2), iwae_samples=256)
        m["train_seconds"] = secs
        m["final_train"] = {k: v for k, v in hist[-1].items() if k not in ("epoch", "step")}
        out[method] = m
        print(f"digits seed {seed} {method:10s}: test IWAE {m['test_iwae']:.2f}  "
              f"ELBO {m['test_elbo']:.2f}  accuracy {m['test_accuracy']:.4f}  "
              f"NMI {m['test_nmi']:.4f}  clusters {m['test_clusters_used']}  ({secs:.0f} s)")
    return out, mc, tc


def _summary(values):
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "per_seed": v.tolist()}


def digits_part(args):
    runs = []
    for seed in args.seeds:
        r, mc, tc = digits_seed(args, seed)
        runs.append(r)
    out = {"seeds": list(args.seeds), "model_config": mc.to_dict(),
           "train_config": tc.to_dict(), "runs": runs}
    rows = []
    for method in ("elbo", "forward-kl"):
        out[method] = {k: _summary([r[method][k] for r in runs]) for k in
                       ("test_iwae", "test_elbo", "test_accuracy", "test_nmi",
                        "test_clusters_used", "train_seconds")}
        rows.append({"method": method, **{k.removeprefix("test_"): out[method][k]["mean"]
                                          for k in out[method]},
                     "acc_min": out[method]["test_accuracy"]["min"]})
    print(f"digits, mean over seeds {list(args.seeds)}:")
    print_table(rows, list(rows[0]))
    return out


# ----------------------------------------------------------------------------- (b) bimodal


def _softplus_inv(y):
    return math.log(math.expm1(y))


def teacher_params(cfg: VAEConfig, params, *, seed: int, noise: float):
    """Overwrite the decoder and prior of `params` with the true generative model: the decoder
    depends on w₁ only through |w₁| (hidden units come in pairs relu(w₁ − a), relu(−w₁ − a)
    with equal output weights), the prior has components at (±2, 0)."""
    rng = np.random.default_rng(seed)
    h, d = cfg.hidden[0], cfg.data_dim
    n_pair = h // 4  # h/2 units for |w₁| in pairs, h/2 for w₂
    kernel = np.zeros((2, h))
    bias = np.zeros(h)
    a = np.linspace(-0.5, 3.0, n_pair)
    kernel[0, 0:2 * n_pair:2], kernel[0, 1:2 * n_pair:2] = 1.0, -1.0
    bias[0:2 * n_pair:2], bias[1:2 * n_pair:2] = -a, -a
    n_w2 = h - 2 * n_pair
    kernel[1, 2 * n_pair:] = rng.choice([-1.0, 1.0], n_w2)
    bias[2 * n_pair:] = rng.uniform(-1.5, 1.5, n_w2)
    out = rng.normal(0, 0.6, (h, d))
    out[1:2 * n_pair:2] = out[0:2 * n_pair:2]  # equal weights within each |w₁| pair
    p = jax.tree.map(lambda v: v, params)
    dec = p["decoder"]
    dec["net"]["hidden"][0] = {"kernel": jnp.asarray(kernel, jnp.float32),
                               "bias": jnp.asarray(bias, jnp.float32)}
    dec["net"]["out"] = {"kernel": jnp.asarray(out, jnp.float32),
                         "bias": jnp.zeros((d,), jnp.float32)}
    dec["raw_scale"] = jnp.full((d,), _softplus_inv(noise - cfg.min_scale), jnp.float32)
    p["prior"] = {"logits": jnp.zeros((2,), jnp.float32),
                  "mean": jnp.asarray([[-2.0, 0.0], [2.0, 0.0]], jnp.float32),
                  "raw_scale": jnp.full((2, 2), _softplus_inv(0.6 - 1e-4), jnp.float32)}
    return p


def sample_data(model: HierarchicalVAE, n: int, *, key, noise: float):
    k1, k2 = jax.random.split(key)
    xm, z = model.sample(k1, n)
    return np.asarray(xm + noise * jax.random.normal(k2, xm.shape)), np.asarray(z)


def _basins(logp: np.ndarray, shape) -> np.ndarray:
    """Steepest-ascent basins on a 2-D grid. logp: (N, G) -> labels (N, G): the flat index of
    the local maximum each cell climbs to (8-neighbourhood)."""
    n = logp.shape[0]
    a = logp.reshape(n, *shape)
    pad = np.pad(a, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    gi, gj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    best = a.copy()
    ptr = np.broadcast_to((gi * shape[1] + gj), a.shape).copy()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == dj == 0:
                continue
            nb = pad[:, 1 + di:1 + di + shape[0], 1 + dj:1 + dj + shape[1]]
            better = nb > best
            best = np.where(better, nb, best)
            ii, jj = np.clip(gi + di, 0, shape[0] - 1), np.clip(gj + dj, 0, shape[1] - 1)
            ptr = np.where(better, ii * shape[1] + jj, ptr)
    ptr = ptr.reshape(n, -1)
    for _ in range(64):
        nxt = np.take_along_axis(ptr, ptr, axis=1)
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    return ptr


def posterior_modes(model: HierarchicalVAE, x: np.ndarray, *, grid_n: int = 161) -> dict:
    """Modes of p_θ(w | x) on a grid and how many of them q(w | x) keeps. x: (N, D), L = 2."""
    logits, pm, ps = (np.asarray(a, np.float64) for a in model.prior())
    qm, qs = (np.asarray(a, np.float64) for a in jax.jit(lambda m, xx: m.encoder(xx))(
        model, jnp.asarray(x)))
    # The box: the prior's components ± 4.5 σ and the bulk of q's means ± 1.
    lo = np.minimum((pm - 4.5 * ps).min(0), np.percentile(qm, 1, axis=0) - 1.0)
    hi = np.maximum((pm + 4.5 * ps).max(0), np.percentile(qm, 99, axis=0) + 1.0)
    g0, g1 = np.linspace(lo[0], hi[0], grid_n), np.linspace(lo[1], hi[1], grid_n)
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)

    @jax.jit
    def log_joint(m, xx, gw):  # (N, G): log p(x | w) + log p(w)
        from jaxvi.vae.bounds import log_marginal_prior
        params = m.decoder(gw)
        ll = jax.vmap(lambda xb: m.decoder.log_prob(xb, params))(xx)
        return ll + log_marginal_prior(gw, *m.prior())[None, :]

    lj = np.asarray(log_joint(model, jnp.asarray(x), jnp.asarray(grid, jnp.float32)),
                    np.float64)
    log_p = lj - np.logaddexp.reduce(lj, axis=1, keepdims=True)
    log_q = -0.5 * np.sum(((grid[None] - qm[:, None]) / qs[:, None]) ** 2, -1) - np.sum(
        np.log(qs), -1)[:, None]
    log_q = log_q - np.logaddexp.reduce(log_q, axis=1, keepdims=True)
    p, q = np.exp(log_p), np.exp(log_q)
    labels = _basins(lj, (grid_n, grid_n))
    n_modes, kept, q_covered = [], [], []
    for i in range(x.shape[0]):
        ids, inv = np.unique(labels[i], return_inverse=True)
        pm_ = np.bincount(inv, weights=p[i], minlength=ids.size)
        qm_ = np.bincount(inv, weights=q[i], minlength=ids.size)
        big = pm_ >= MODE_MASS
        n_modes.append(int(big.sum()))
        kept.append(int(np.sum(big & (qm_ >= KEPT_MASS))))
        q_covered.append(float(qm_[big].sum()))
    n_modes, kept = np.asarray(n_modes), np.asarray(kept)
    multi = n_modes >= 2
    fkl = np.sum(p * (log_p - log_q), 1)
    rkl = np.sum(q * (log_q - log_p), 1)
    return {
        "test_points": int(x.shape[0]),
        "mean_posterior_modes": float(n_modes.mean()),
        "fraction_multimodal": float(multi.mean()),
        "mean_modes_kept_by_q": float(kept.mean()),
        "mean_modes_kept_when_multimodal": float(kept[multi].mean()) if multi.any() else None,
        "fraction_all_modes_kept_when_multimodal":
            float(np.mean(kept[multi] == n_modes[multi])) if multi.any() else None,
        "q_mass_in_significant_modes": float(np.mean(q_covered)),
        "forward_kl_p_q_grid": float(np.mean(fkl)),
        "reverse_kl_q_p_grid": float(np.mean(rkl)),
        "mean_q_scale": qs.mean(0).tolist(),
        "grid": [grid_n, grid_n],
        "grid_box": [lo.tolist(), hi.tolist()],
    }


def bimodal_part(args, seed):
    noise = args.bimodal_noise
    cfg = VAEConfig(data_dim=8, components=2, latent_dim=2, hidden=(32,), head_hidden=(16,))
    graphdef, init = split_model(HierarchicalVAE(cfg, rngs=nnx.Rngs(seed)))
    true = teacher_params(cfg, init, seed=seed, noise=noise)
    teacher = merge_model(graphdef, true)
    x_train, _ = sample_data(teacher, args.bimodal_train, key=jax.random.key(seed + 10),
                             noise=noise)
    x_test, _ = sample_data(teacher, args.bimodal_test, key=jax.random.key(seed + 11),
                            noise=noise)
    out = {"model_config": cfg.to_dict(), "noise": noise, "train_points": len(x_train),
           "test_points": len(x_test), "epochs": args.bimodal_epochs, "batch_size": 128,
           "learning_rate": 1e-3, "mode_mass": MODE_MASS, "kept_mass": KEPT_MASS}
    out["true_posterior"] = posterior_modes(teacher, x_test)
    # The same, with q(w | x) starting broad (scale ≈ 2.3, covering both modes at ±2).
    broad = jax.tree.map(lambda v: v, true)
    enc_out = broad["encoder"]["net"]["out"]
    enc_out["bias"] = enc_out["bias"].at[cfg.latent_dim:].add(2.0)
    settings = {
        "fixed_true_decoder": (true, frozen_generative),  # only q(w|x), q(z|w,x) trained
        "fixed_true_decoder_broad_init": (broad, frozen_generative),
        "learned_model": (init, lambda f: f),  # everything trained from a random init
    }
    methods = {"elbo": ("elbo", 1), f"forward-kl_S{args.rws_samples}":
               ("forward-kl", args.rws_samples)}
    methods[f"forward-kl_S{args.bimodal_rws_samples}"] = ("forward-kl", args.bimodal_rws_samples)
    rows = []
    for setting, (params0, wrap) in settings.items():
        out[setting] = {}
        for method, (kind, n_samples) in methods.items():
            loss = wrap(make_loss(kind, graphdef, n_samples))
            params, hist, secs = run_fit(loss, params0, jnp.asarray(x_train),
                                         key=jax.random.key(seed + 1),
                                         epochs=args.bimodal_epochs, batch_size=128, lr=1e-3)
            model = merge_model(graphdef, params)
            res = posterior_modes(model, x_test)
            res["test_iwae"] = float(np.mean(jax.jit(
                lambda m, xx: m.iwae(xx, key=jax.random.key(seed + 3), num_samples=256))(
                    model, jnp.asarray(x_test))))
            res["train_seconds"] = secs
            res["final_train"] = {k: v for k, v in hist[-1].items() if k not in ("epoch", "step")}
            out[setting][method] = res
            rows.append({"setting": setting, "method": method, "iwae": res["test_iwae"],
                         "p_modes": res["mean_posterior_modes"],
                         "multimodal": res["fraction_multimodal"],
                         "kept|multi": res["mean_modes_kept_when_multimodal"],
                         "all_kept|multi": res["fraction_all_modes_kept_when_multimodal"],
                         "KL(p||q)": res["forward_kl_p_q_grid"],
                         "KL(q||p)": res["reverse_kl_q_p_grid"],
                         "q_scale": "{:.2f},{:.2f}".format(*res["mean_q_scale"]),
                         "ess": res["final_train"].get("ess", ""), "s": secs})
    tp = out["true_posterior"]
    print(f"true model: {tp['mean_posterior_modes']:.2f} posterior modes per x "
          f"({tp['fraction_multimodal']:.0%} of test points multimodal)")
    print_table(rows, list(rows[0]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run (tiny budgets, no JSON)")
    p.add_argument("--seed", type=int, default=0, help="bimodal set seed")
    p.add_argument("--rws-samples", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="digits seeds")
    defaults = TrainConfig()
    p.add_argument("--epochs", type=int, default=defaults.epochs,
                   help="digits: joint epochs per method")
    p.add_argument("--pretrain-epochs", type=int, default=defaults.pretrain_epochs)
    p.add_argument("--restarts", type=int, default=defaults.restarts)
    p.add_argument("--bimodal-epochs", type=int, default=150)
    p.add_argument("--bimodal-train", type=int, default=2048)
    p.add_argument("--bimodal-test", type=int, default=200)
    p.add_argument("--bimodal-noise", type=float, default=0.7)
    p.add_argument("--bimodal-rws-samples", type=int, default=256,
                   help="a second, larger S for forward-KL on the bimodal set")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.pretrain_epochs, args.restarts, args.seeds = 2, 2, 1, [0]
        args.bimodal_epochs, args.bimodal_train, args.bimodal_test = 3, 256, 20
        args.bimodal_rws_samples = 32
    print_device()
    t0 = time.perf_counter()
    result = {"seed": args.seed, "rws_samples": args.rws_samples,
              "bimodal_rws_samples": args.bimodal_rws_samples, "elbo_samples": 1}
    result["bimodal"] = bimodal_part(args, args.seed)
    result["digits"] = digits_part(args)
    result["total_seconds"] = time.perf_counter() - t0
    print(f"total {result['total_seconds']:.0f} s")
    if not args.quick:
        write_result("compare_inference", result)
    return result


if __name__ == "__main__":
    main()
