"""One process of the multi-process tests (tests/test_multiprocess.py), run as a job of 2
processes × 2 CPU devices and as 1 process × 4 devices: EM in float64 (every covariance type
on 999 rows, 500 and 499 per process, restarts from k-means++, stepwise EM) and two VAE
training epochs with an orbax checkpoint, all on the mesh over every device of the job; the
single-process job also runs the one-device EM references. Process 0 writes the results as
JSON to --out. With --die-at-end, process 1 then exits abruptly after one more fit.

    python tests/multiprocess_worker.py --out R.json [--coordinator H:P --num-processes N
        --process-id I] [--checkpoint DIR] [--die-at-end]
"""

import argparse
import json
import os
import sys

import jax
import numpy as np

from jaxvi import distributed, processes

COVS = ("full", "tied", "diag", "spherical")


def em_data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(333, 3)) + 4 * i for i in range(3)])  # N = 999


def tolist(tree) -> dict:
    """Every leaf of `tree` as nested lists of float64, keyed by its path."""
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64).tolist()
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def start_gmm(cov: str):
    """The same initial GMM for every run: a mean near each blob, unit covariances."""
    from jaxvi.em import GMM

    k, d = 3, 3
    covs = {"full": np.tile(np.eye(d), (k, 1, 1)), "tied": np.eye(d), "diag": np.ones((k, d)),
            "spherical": np.ones(k)}[cov]
    return GMM(np.full(k, 1 / k), 4.0 * np.arange(k)[:, None] + np.full((k, d), 0.5), covs,
               cov)


def em_checks(out: dict, reference: bool) -> None:
    from jaxvi import em

    x = em_data()
    mine = processes.local_rows(x)  # rows 0–499 and 500–998 with 2 processes
    mesh = distributed.data_mesh()
    out["rows"] = int(processes.sum_over_processes(mine.shape[0]))
    out["local_rows"] = mine.shape[0]
    out["devices"] = jax.device_count()
    kw = dict(key=jax.random.key(1), max_iter=15, tol=0.0)
    for cov in COVS[1:]:  # "full" below, with restarts
        out[f"fit_{cov}"] = tolist(em.fit(mine, 3, init=start_gmm(cov), covariance_type=cov,
                                          mesh=mesh, **kw))
        if reference:
            out[f"one_fit_{cov}"] = tolist(em.fit(x, 3, init=start_gmm(cov),
                                                  covariance_type=cov, **kw))
    # Restarts from keys (full covariances), initialised by k-means++ on every process's
    # rows (gathered: `init_rows`), the best of 4 kept.
    restarts = dict(kw, key=jax.random.key(3), n_init=4)
    out["fit_full"] = tolist(em.fit(mine, 3, mesh=mesh, **restarts))
    if reference:
        out["one_fit_full"] = tolist(em.fit(x, 3, **restarts))
    # Stepwise EM on 4 batches of 201 rows, each split over the processes, initialised by
    # k-means++ on the (whole) first batch.
    rng = np.random.default_rng(1)
    batches = [x[rng.permutation(999)[:201]] for _ in range(4)]
    out["minibatch"] = tolist(em.fit_minibatch([processes.local_rows(b) for b in batches], 3,
                                               key=jax.random.key(2), mesh=mesh))
    if reference:
        out["one_minibatch"] = tolist(em.fit_minibatch(batches, 3, key=jax.random.key(2)))
    # VB-EM: default priors and k-means++ from every process's rows (`init_rows`).
    vb = dict(key=jax.random.key(4), covariance_type="diag", max_iter=10, tol=0.0)
    out["variational"] = tolist(em.fit_variational(mine, 4, mesh=mesh, **vb))
    if reference:
        out["one_variational"] = tolist(em.fit_variational(x, 4, **vb))


def vae_checks(out: dict, checkpoint: str | None) -> None:
    import optax
    from flax import nnx

    from jaxvi.training.loop import fit
    from jaxvi.vae.losses import elbo_loss
    from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model

    x = np.random.default_rng(2).uniform(size=(256, 16)).astype(np.float32)
    cfg = VAEConfig(data_dim=16, components=2, latent_dim=2, hidden=(8,), head_hidden=(4,))
    graphdef, params = split_model(HierarchicalVAE(cfg, rngs=nnx.Rngs(params=0)))
    state, hist = fit(elbo_loss(graphdef, 1), optax.sgd(1e-3), params, x,
                      key=jax.random.key(1), epochs=2, batch_size=64, progress=False,
                      log=False, mesh=distributed.data_mesh(), checkpoint_dir=checkpoint)
    out["vae_loss"], out["vae_params"] = [h["loss"] for h in hist], tolist(state.params)


def die_in_process_1() -> None:
    """Fit after fit over the mesh; process 1 exits abruptly after the first, the others go
    on until JAX notices that it has gone."""
    from jaxvi import em

    x = processes.local_rows(em_data())
    for i in range(10_000):
        em.fit(x, 3, key=jax.random.key(i), init=start_gmm("spherical"), max_iter=5,
               covariance_type="spherical", mesh=distributed.data_mesh())
        print(f"fit {i} done", flush=True)
        if jax.process_index() == 1:
            os._exit(3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--coordinator")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--checkpoint")
    p.add_argument("--die-at-end", action="store_true",
                   help="after the results are written, process 1 dies (`die_in_process_1`)")
    args = p.parse_args()
    processes.initialize(args.coordinator, args.num_processes, args.process_id,
                         timeout_s=args.timeout)
    out: dict = {"processes": jax.process_count()}
    with jax.enable_x64(True):
        em_checks(out, reference=jax.process_count() == 1)
    vae_checks(out, args.checkpoint)
    if processes.is_main_process():
        with open(args.out, "w") as f:
            json.dump(out, f)
    print("worker done", file=sys.stderr, flush=True)
    if args.die_at_end:
        die_in_process_1()


if __name__ == "__main__":
    main()
