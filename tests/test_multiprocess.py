"""Real multi-process jobs on localhost (jax.distributed, gloo collectives on CPU), each under a
timeout: 2 processes × 2 CPU devices against 1 process × 4 devices and against one device
(tests/multiprocess_worker.py: EM for every covariance type over uneven process row counts,
restarts, stepwise EM, two VAE training epochs with an orbax checkpoint); a job whose process
dies; a process that cannot reach its coordinator; `jaxvi launch` of `jaxvi em`, and of a
command that fails.

The two worker jobs start in the background when the first test asks for them and run while
the other tests do; the comparisons wait for them."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("multiprocess_worker.py")
JOB_TIMEOUT_S = 300  # a whole worker job, on a loaded machine
COVS = ("full", "tied", "diag", "spherical")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with(cpu_devices: int) -> dict:
    """The spawned processes' environment: this checkout's jaxvi, `cpu_devices` CPU devices,
    XLA's backend optimisations off (a third less compile time; the values compared are
    computed under the same flags, or agree to far below the tolerances)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    flags = (f"--xla_force_host_platform_device_count={cpu_devices} "
             "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", XLA_FLAGS=flags)


def spawn(args, cpu_devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], env=env_with(cpu_devices),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for `proc` (killed past `timeout`) -> (exit code, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process still running after {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def jaxvi(*args, timeout: float = 120, cpu_devices: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxvi.cli", *map(str, args)],
                          env=env_with(cpu_devices), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def worker_jobs(tmp_path_factory):
    """Start the worker as 2 processes × 2 devices and as 1 process × 4 devices; -> a
    function that waits for both and returns (2-process results, 1-process results, the
    2-process job's checkpoint folder)."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    address = f"127.0.0.1:{free_port()}"
    two = [spawn([WORKER, "--out", tmp / "two.json", "--coordinator", address,
                  "--num-processes", 2, "--process-id", i, "--checkpoint", tmp / "ckpt"], 2)
           for i in range(2)]
    one = spawn([WORKER, "--out", tmp / "one.json"], 4)
    started, done = time.monotonic(), {}

    def results():
        if not done:
            for name, proc in [("process 0", two[0]), ("process 1", two[1]), ("one", one)]:
                left = JOB_TIMEOUT_S - (time.monotonic() - started)
                code, _, err = finish(proc, max(left, 1))
                assert code == 0, f"worker {name} failed:\n{err[-4000:]}"
            done.update(two=json.loads((tmp / "two.json").read_text()),
                        one=json.loads((tmp / "one.json").read_text()))
        return done["two"], done["one"], tmp / "ckpt"

    yield results
    for proc in [*two, one]:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.asarray(a[k], float) - np.asarray(b[k], float))))
               for k in a)


# ----------------------------------------------------------------------------- failures first
# (they run while the worker jobs compute)


@pytest.mark.usefixtures("worker_jobs")  # they start now and run in the background
def test_a_dead_process_ends_the_others_with_a_message():
    address = f"127.0.0.1:{free_port()}"
    procs = [spawn([WORKER, "--out", os.devnull, "--coordinator", address, "--num-processes",
                    2, "--process-id", i, "--timeout", 5, "--die-after-first-fit"], 2)
             for i in range(2)]
    code1, out1, _ = finish(procs[1], 120)
    died = time.monotonic()
    code0, out0, err0 = finish(procs[0], 60)
    assert code1 == 3 and "fit 0 done" in out1  # it died after a fit both processes ran
    assert code0 != 0  # the survivor did not hang, nor end as if all were well ...
    assert time.monotonic() - died < 30  # ... within a bounded time (heartbeat: 5 s) ...
    # ... with JAX's error naming the silent task
    assert re.search(r"heartbeat", err0) and re.search(r"[Tt]ask:? ?1\b|\n1\n", err0), err0[-2000:]


def test_a_process_that_cannot_reach_its_coordinator_fails_in_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 2)))
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    res = jaxvi("em", tmp_path / "x.npy", "-k", 2, "--coordinator", f"127.0.0.1:{port}",
                "--num-processes", 2, "--process-id", 1, "--timeout", 2)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert (f"process 1 of 2 cannot reach the coordinator at 127.0.0.1:{port} within 2 s"
            in res.stderr)
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "gmm_params.npz").exists()


def test_launch_stops_the_others_when_one_process_fails():
    script = ("import os, sys, time; i = os.environ['JAX_PROCESS_ID']; "
              "print('hello from', i, os.environ['JAX_NUM_PROCESSES'], flush=True); "
              "time.sleep(0.5 if i == '1' else 120); sys.exit(3)")
    t0 = time.monotonic()
    res = jaxvi("launch", "-n", 2, "--", sys.executable, "-c", script, timeout=60)
    assert time.monotonic() - t0 < 50  # process 0 (sleeping 120 s) was stopped
    assert res.returncode == 3
    assert "[0] hello from 0 2" in res.stdout and "[1] hello from 1 2" in res.stdout
    assert ("jaxvi launch: error: process 1 of 2 exited with code 3; stopped the other 1"
            in res.stderr)


def test_launch_refuses_a_jaxvi_command_without_process_options():
    from jaxvi import cli

    assert cli.main(["launch", "-n", "2", "--", "jaxvi", "kl", "gaussian"]) == 2


def test_launch_of_jaxvi_em_writes_one_file_equal_to_a_single_process_run(tmp_path):
    from jaxvi import cli

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(301, 2)) + 5 * i for i in range(3)])  # 903 rows
    np.save(tmp_path / "x.npy", x)
    opts = ["-k", "3", "--n-init", "2", "--covariance-type", "diag"]
    res = jaxvi("launch", "-n", 2, "--cpu-devices", 2, "--", "jaxvi", "em", tmp_path / "x.npy",
                *opts, "--out", tmp_path / "two" / "gmm.npz", timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[0] data: 903 points, 2 features over 2 processes" in res.stdout
    assert "[0] saved" in res.stdout and "[1] saved" not in res.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["gmm.npz"]
    assert cli.main(["em", str(tmp_path / "x.npy"), *opts, "--out",
                     str(tmp_path / "one.npz")]) == 0
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two" / "gmm.npz")
    assert one.files == two.files
    for k in one.files:
        if one[k].dtype.kind == "f":
            np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-10, err_msg=k)
        else:
            assert (one[k] == two[k]).all(), k


# ----------------------------------------------------------------------------- the workers


def test_the_jobs_ran_as_asked(worker_jobs):
    two, one, _ = worker_jobs()
    assert (two["processes"], two["devices"], one["processes"], one["devices"]) == (2, 4, 1, 4)
    # 999 rows: 500 on process 0, 499 on process 1
    assert two["rows"] == one["rows"] == 999
    assert (two["local_rows"], one["local_rows"]) == (500, 999)


def by_component(fit: dict) -> dict:
    """The fitted mixture's parameters with the components in the order of their first mean
    coordinate, and the log-likelihood (restarts that reach the same optimum with labels
    permuted tie up to rounding, so which of them is kept may differ)."""
    order = np.argsort(np.asarray(fit[".gmm.means"])[:, 0])
    out = {k: np.asarray(fit[k])[order] for k in (".gmm.weights", ".gmm.means",
                                                   ".gmm.covariances", ".gmm.scale_tril")}
    return {**out, ".log_likelihood": fit[".log_likelihood"]}


@pytest.mark.parametrize("cov", COVS[1:])
def test_em_fit_over_two_processes_equals_one_process_and_one_device(worker_jobs, cov):
    two, one, _ = worker_jobs()
    assert max_diff(two[f"fit_{cov}"], one[f"fit_{cov}"]) < 1e-10
    assert max_diff(two[f"fit_{cov}"], one[f"one_fit_{cov}"]) < 1e-10


def test_em_restarts_over_two_processes_equal_one_process_and_one_device(worker_jobs):
    two, one, _ = worker_jobs()
    # 4 restarts (full covariances) from k-means++ on all the job's rows; the best kept
    assert max_diff(by_component(two["fit_full"]), by_component(one["fit_full"])) < 1e-10
    assert max_diff(by_component(two["fit_full"]), by_component(one["one_fit_full"])) < 1e-10


def test_minibatch_em_over_two_processes_equals_one_process_and_one_device(worker_jobs):
    two, one, _ = worker_jobs()
    assert max_diff(two["minibatch"], one["minibatch"]) < 1e-10
    assert max_diff(two["minibatch"], one["one_minibatch"]) < 1e-10


def test_vae_epochs_over_two_processes_equal_one_process(worker_jobs):
    two, one, _ = worker_jobs()
    assert len(two["vae_loss"]) == 2
    np.testing.assert_allclose(two["vae_loss"], one["vae_loss"], rtol=1e-5)
    assert max_diff(two["vae_params"], one["vae_params"]) < 1e-5


def test_the_two_process_checkpoint_is_one_intact_orbax_copy(worker_jobs):
    import jax
    import optax
    from flax import nnx

    from jaxvi.training.checkpoint import checkpoint_steps, restore_checkpoint
    from jaxvi.training.step import init_state
    from jaxvi.vae.model import HierarchicalVAE, VAEConfig, split_model

    two, _, ckpt = worker_jobs()
    assert checkpoint_steps(ckpt) == [2]
    cfg = VAEConfig(data_dim=16, components=2, latent_dim=2, hidden=(8,), head_hidden=(4,))
    _, params = split_model(HierarchicalVAE(cfg, rngs=nnx.Rngs(params=0)))
    state, meta = restore_checkpoint(ckpt, init_state(params, optax.sgd(1e-3)))
    assert [h["loss"] for h in meta["history"]] == two["vae_loss"]
    restored = {jax.tree_util.keystr(p): np.asarray(v, float).tolist()
                for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    assert max_diff(restored, two["vae_params"]) == 0
