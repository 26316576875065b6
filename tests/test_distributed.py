"""Multi-device runs on 4 simulated CPU devices (a subprocess, so XLA_FLAGS is set before JAX
starts), compared with the single-device result on the same data, and checked for WHERE the
data and the computation live: the rows EM receives are split over the 4 devices (shards,
rows per shard, real rows per shard), its kernels run under `shard_map` over the 4-device
mesh and its result is replicated on all 4; the VAE's batches reach the loss split over the
4 devices and its parameters end replicated on all 4. Code that silently ignores `mesh`
(single-device arrays also report `is_fully_replicated`) fails these."""

import textwrap

import numpy as np
import pytest
from jax_subprocess import run_script

EM_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from jaxvi import em, distributed

    assert jax.device_count() == 4, jax.devices()
    out = {}
    # Spies on where the data goes: every sharded layout EM makes, every shard_map it builds.
    layouts, shard_maps = [], []
    _shard_chunks, _shard_map_data = distributed.shard_chunks, distributed.shard_map_data

    def spy_shard_chunks(x, mesh, fn, **kwargs):
        xb, mb = _shard_chunks(x, mesh, fn, **kwargs)
        shards = sorted(mb.addressable_shards, key=lambda s: s.index[0].start or 0)
        layouts.append(dict(
            n=int(np.asarray(x).shape[0]), devices=len(xb.sharding.device_set),
            mask_devices=len(mb.sharding.device_set), shards=len(xb.addressable_shards),
            shard_devices=len({s.device for s in xb.addressable_shards}),
            chunks=int(xb.shape[0]),
            chunks_per_shard=[int(s.data.shape[0]) for s in xb.addressable_shards],
            real_rows_per_shard=[int(np.asarray(s.data).sum()) for s in shards]))
        return xb, mb

    def spy_shard_map_data(fn, mesh, n_sharded, n_replicated):
        shard_maps.append(dict(devices=int(mesh.devices.size), n_sharded=n_sharded))
        return _shard_map_data(fn, mesh, n_sharded, n_replicated)

    distributed.shard_chunks = spy_shard_chunks
    distributed.shard_map_data = spy_shard_map_data
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        # N = 999: not a multiple of the device count, so shards are padded and masked.
        x = np.concatenate([rng.normal(size=(333, 3)) + 4 * i for i in range(3)])
        mesh = distributed.data_mesh()

        def leaves_diff(a, b):
            return max(float(np.max(np.abs(np.asarray(u, float) - np.asarray(v, float))))
                       for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

        for cov in ["full", "tied", "diag", "spherical"]:
            kw = dict(key=jax.random.key(1), covariance_type=cov, max_iter=15, tol=0.0)
            one = em.fit(x, 3, **kw)
            four = em.fit(x, 3, mesh=mesh, **kw)
            out[f"fit_{cov}"] = leaves_diff(one, four)
            out[f"fit_{cov}_replicated"] = four.gmm.means.sharding.is_fully_replicated
            out[f"fit_{cov}_result_devices"] = min(len(a.sharding.device_set)
                                                   for a in jax.tree.leaves(four))
            out[f"fit_{cov}_layout"] = layouts[-1] if layouts else None
        # Several chunks per device (the lax.scan over chunks runs inside shard_map).
        kw = dict(key=jax.random.key(1), max_iter=10, tol=0.0, chunk_size=64)
        out["chunked"] = leaves_diff(em.fit(x, 3, **kw), em.fit(x, 3, mesh=mesh, **kw))
        # Restarts: the best restart's log-likelihood and its (label-sorted) means agree.
        kw = dict(key=jax.random.key(3), max_iter=20, tol=1e-8, n_init=4)
        one, four = em.fit(x, 3, **kw), em.fit(x, 3, mesh=mesh, **kw)
        order = lambda m: np.asarray(m)[np.argsort(np.asarray(m)[:, 0])]
        out["restarts_ll"] = abs(float(one.log_likelihood) - float(four.log_likelihood))
        out["restarts_means"] = float(np.max(np.abs(order(one.gmm.means)
                                                    - order(four.gmm.means))))
        # Warm start from a GMM.
        warm = em.fit(x, 3, init=one.gmm, max_iter=5, tol=0.0, key=jax.random.key(0))
        warm4 = em.fit(x, 3, init=one.gmm, max_iter=5, tol=0.0, key=jax.random.key(0),
                       mesh=mesh)
        out["warm_start"] = leaves_diff(warm, warm4)
        # Stepwise EM on batches of 201 rows (not a multiple of 4 either).
        batches = [x[rng.permutation(999)[:201]] for _ in range(8)]
        one = em.fit_minibatch(batches, 3, key=jax.random.key(2))
        four = em.fit_minibatch(batches, 3, key=jax.random.key(2), mesh=mesh)
        out["minibatch"] = leaves_diff(one, four)
        # A mesh over 2 of the 4 devices.
        two = em.fit(x, 3, key=jax.random.key(1), max_iter=10, tol=0.0,
                     mesh=distributed.data_mesh(jax.devices()[:2]))
        ref = em.fit(x, 3, key=jax.random.key(1), max_iter=10, tol=0.0)
        out["two_devices"] = leaves_diff(two, ref)
        out["two_devices_layout"] = layouts[-1] if layouts else None
    out["layouts"] = len(layouts)
    out["shard_maps"] = shard_maps
    print("RESULT " + json.dumps(out))
    """
)


VAE_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np, optax
    from flax import nnx
    from jaxvi import data, distributed
    from jaxvi.training.loop import fit
    from jaxvi.vae.losses import elbo_loss as vae_elbo_loss
    from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model

    assert jax.device_count() == 4, jax.devices()
    x = np.asarray(data.load_digits().x_train[:256], np.float32)
    cfg = VAEConfig(data_dim=64, components=3, latent_dim=2, hidden=(32,), head_hidden=(8,))
    graphdef, params = split_model(HierarchicalVAE(cfg, rngs=nnx.Rngs(params=0)))
    # Where each batch is when the loss sees it (reported by the SPMD partitioner at compile
    # time; a no-op for the numbers), and which batch shardings the epoch asks for.
    seen, asked = [], []
    elbo_loss = vae_elbo_loss(graphdef, 2)

    def loss_fn(params, batch, key):
        jax.debug.inspect_array_sharding(batch, callback=lambda s: seen.append(dict(
            devices=len(s.device_set),
            rows_per_device=sorted({int(s.shard_shape(batch.shape)[0])}))))
        return elbo_loss(params, batch, key)

    _batch_sharding = distributed.batch_sharding

    def spy_batch_sharding(mesh, batch_axis=0):
        asked.append(dict(devices=int(mesh.devices.size), batch_axis=batch_axis))
        return _batch_sharding(mesh, batch_axis)

    distributed.batch_sharding = spy_batch_sharding
    # Plain SGD: Adam divides by √v, which turns the rounding noise of gradients that are
    # ~0 at initialisation (the q(z | w, x) head starts at its optimum) into full-size steps.
    run = lambda mesh: fit(
        loss_fn, optax.sgd(1e-3), params, x, key=jax.random.key(1),
        epochs=3, batch_size=64, progress=False, log=False, mesh=mesh)
    one, hist1 = run(None)
    seen_one, seen[:] = list(seen), []
    four, hist4 = run(distributed.data_mesh())
    rel = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(a)) + 1e-6))
              for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)))
    out = {
        "param_rel_diff": rel,
        "elbo_1": [h["elbo"] for h in hist1],
        "elbo_4": [h["elbo"] for h in hist4],
        "replicated": all(a.sharding.is_fully_replicated
                          for a in jax.tree.leaves(four.params)),
        "param_devices": sorted({len(a.sharding.device_set)
                                 for a in jax.tree.leaves(four.params)}),
        "param_devices_one": sorted({len(a.sharding.device_set)
                                     for a in jax.tree.leaves(one.params)}),
        "batch_seen_4": seen,
        "batch_seen_1": seen_one,
        "batch_sharding_asked": asked,
    }
    try:
        run_bad = fit(vae_elbo_loss(graphdef, 1), optax.adam(1e-3), params, x,
                            key=jax.random.key(1), epochs=1, batch_size=66, progress=False,
                            log=False, mesh=distributed.data_mesh())
        out["bad_batch_error"] = ""
    except ValueError as err:
        out["bad_batch_error"] = str(err)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def em_results():
    return run_script(EM_SCRIPT)


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_sharded_fit_equals_single_device(em_results, cov):
    assert em_results[f"fit_{cov}"] < 1e-9
    assert em_results[f"fit_{cov}_replicated"]
    # ... and it really ran on 4 devices: the result lives on all 4 ...
    assert em_results[f"fit_{cov}_result_devices"] == 4
    # ... and the 999 rows were split over them: 4 shards on 4 distinct devices, equal numbers
    # of chunks each, 250, 250, 250 and 249 real rows (N = 999 padded to a multiple of 4).
    lay = em_results[f"fit_{cov}_layout"]
    assert lay is not None, "em.fit(mesh=...) never laid its rows out over the mesh"
    assert lay["n"] == 999 and lay["devices"] == lay["mask_devices"] == 4
    assert lay["shards"] == lay["shard_devices"] == 4
    assert lay["chunks_per_shard"] == [lay["chunks"] // 4] * 4
    assert lay["real_rows_per_shard"] == [250, 250, 250, 249]


def test_sharded_em_runs_under_shard_map_over_the_mesh(em_results):
    # a layout for every sharded run: 4 covariance types, chunked, restarts, warm start,
    # 8 minibatches, the 2-device mesh (single-device runs make none)
    assert em_results["layouts"] >= 4 + 1 + 1 + 1 + 8 + 1
    assert em_results["shard_maps"], "no shard_map was built for the sharded fits"
    assert {m["devices"] for m in em_results["shard_maps"]} == {4, 2}
    assert all(m["n_sharded"] == 2 for m in em_results["shard_maps"])
    two = em_results["two_devices_layout"]
    assert two["devices"] == two["shards"] == 2
    assert two["real_rows_per_shard"] == [500, 499]


def test_sharded_restarts_pick_the_same_best_fit(em_results):
    assert em_results["restarts_ll"] < 1e-10
    assert em_results["restarts_means"] < 1e-8


def test_sharded_warm_start_minibatch_and_submesh(em_results):
    assert em_results["warm_start"] < 1e-9
    assert em_results["minibatch"] < 1e-9
    assert em_results["two_devices"] < 1e-9
    assert em_results["chunked"] < 1e-9


def test_mesh_must_have_a_data_axis():
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from jaxvi import distributed, em

    bad = Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match="mesh"):
        em.fit(np.random.default_rng(0).normal(size=(20, 2)), 2, key=jax.random.key(0),
               mesh=bad)
    with pytest.raises(ValueError, match="mesh"):
        distributed.check_mesh("cpu")


def test_data_parallel_vae_training_equals_single_device():
    res = run_script(VAE_SCRIPT)
    assert res["replicated"]
    # where it ran: parameters replicated on all 4 devices (on 1 without a mesh), every batch
    # the loss saw split over the 4 devices, 64 / 4 = 16 rows each, as the epoch asked
    assert res["param_devices"] == [4] and res["param_devices_one"] == [1]
    assert res["batch_seen_4"] and all(s["devices"] == 4 and s["rows_per_device"] == [16]
                                       for s in res["batch_seen_4"])
    assert all(s["devices"] == 1 for s in res["batch_seen_1"])
    assert {(a["devices"], a["batch_axis"]) for a in res["batch_sharding_asked"]} == {(4, 1)}
    np.testing.assert_allclose(res["elbo_4"], res["elbo_1"], rtol=1e-4)
    assert res["param_rel_diff"] < 1e-3
    assert "batch_size" in res["bad_batch_error"]
