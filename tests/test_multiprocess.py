"""Real multi-process jobs on localhost (jax.distributed, gloo collectives on CPU), each under a
timeout: 2 processes × 2 CPU devices against 1 process × 4 devices and against one device
(tests/multiprocess_worker.py: EM for every covariance type over uneven process row counts,
restarts, stepwise EM, two VAE training epochs with an orbax checkpoint; then process 1 of the
2-process job dies); a process that cannot reach its coordinator; `jaxvi launch` of
`jaxvi em`, and of a command that fails.

The worker jobs start in the background with the first test (once per session, also under
pytest-xdist) and run while the other tests do; the tests of their results wait for them."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from jax_subprocess import ROOT, jax_env

WORKER = Path(__file__).with_name("multiprocess_worker.py")
JOB_TIMEOUT_S = 600  # a whole worker job, on a loaded machine (a bound on hangs)
COVS = ("full", "tied", "diag", "spherical")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, cpu_devices: int, log: Path) -> subprocess.Popen:
    """Start `python args...`, its stdout and stderr going to log.out and log.err."""
    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        return subprocess.Popen([sys.executable, *map(str, args)], env=jax_env(cpu_devices),
                                cwd=ROOT, stdout=out, stderr=err)


class Job(NamedTuple):
    code: int  # exit code
    ended: float  # time.time() when it was seen to have ended
    out: str
    err: str


def _watch(procs: dict, folder: Path) -> None:
    """Wait for the processes (killed past `JOB_TIMEOUT_S`), then write jobs.json: each one's
    Job."""
    deadline, done = time.monotonic() + JOB_TIMEOUT_S, {}
    while len(done) < len(procs):
        for name, proc in procs.items():
            if name not in done and proc.poll() is not None:
                done[name] = Job(proc.returncode, time.time(),
                                 (folder / name).with_suffix(".out").read_text(),
                                 (folder / name).with_suffix(".err").read_text())._asdict()
        if time.monotonic() > deadline:
            for name, proc in procs.items():
                if name not in done:
                    proc.kill()
                    proc.wait()
                    done[name] = Job(-9, time.time(), "",
                                     f"killed after {JOB_TIMEOUT_S} s")._asdict()
        time.sleep(0.1)
    (folder / "jobs.tmp").write_text(json.dumps(done))
    (folder / "jobs.tmp").rename(folder / "jobs.json")


@pytest.fixture(scope="module")
def worker_jobs(tmp_path_factory):
    """Start the worker as 2 processes × 2 devices (heartbeat timeout 20 s; process 1 dies at
    the end) and as 1 process × 4 devices, once per test session (under pytest-xdist the first
    worker to get here starts them, in a folder all workers share); -> a function that waits
    for all three and returns ({"p0", "p1", "one": Job}, the 2-process results, the 1-process
    results, the 2-process job's checkpoint folder)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "multiprocess"
    folder.mkdir(exist_ok=True)
    try:
        os.close(os.open(folder / "started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        watcher = None  # another xdist worker runs them
    else:
        address = f"127.0.0.1:{free_port()}"
        procs = {f"p{i}": spawn([WORKER, "--out", folder / "two.json", "--coordinator",
                                 address, "--num-processes", 2, "--process-id", i,
                                 "--timeout", 20, "--checkpoint", folder / "ckpt",
                                 "--die-at-end"], 2, folder / f"p{i}")
                 for i in range(2)}
        procs["one"] = spawn([WORKER, "--out", folder / "one.json"], 4, folder / "one")
        watcher = threading.Thread(target=_watch, args=(procs, folder))
        watcher.start()

    def results():
        deadline = time.monotonic() + JOB_TIMEOUT_S + 60
        while not (folder / "jobs.json").exists():
            assert time.monotonic() < deadline, "the worker jobs never finished"
            time.sleep(0.2)
        jobs = {k: Job(**v) for k, v in json.loads((folder / "jobs.json").read_text()).items()}
        for name, file in (("p0", "two.json"), ("one", "one.json")):
            assert (folder / file).exists(), f"{name} wrote no results:\n{jobs[name].err[-4000:]}"
        return (jobs, json.loads((folder / "two.json").read_text()),
                json.loads((folder / "one.json").read_text()), folder / "ckpt")

    yield results
    if watcher is not None:  # the other xdist worker may still be waiting for them
        watcher.join()


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.asarray(a[k], float) - np.asarray(b[k], float))))
               for k in a)


# ----------------------------------------------------------------------------- failures first
# (they run while the worker jobs compute)


@pytest.mark.usefixtures("worker_jobs")  # they start now, in the background
def test_a_process_that_cannot_reach_its_coordinator_fails_in_one_line(tmp_path, capsys):
    from jaxvi import cli

    np.save(tmp_path / "x.npy", np.zeros((10, 2)))
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    # (in this process: the probe of the coordinator fails before JAX is touched)
    assert cli.main(["em", str(tmp_path / "x.npy"), "-k", "2", "--coordinator",
                     f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
                     "--timeout", "2"]) == 2
    assert 2 <= time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"jaxvi em: error: process 1 of 2 cannot reach the coordinator at "
                          f"127.0.0.1:{port} within 2 s")
    assert not (tmp_path / "gmm_params.npz").exists()


def launch(monkeypatch, *args, time_limit: float = 180) -> int:
    """`jaxvi launch --time-limit T ARGS` in this process (its children are real processes,
    with the environment of `jax_subprocess.jax_env`)."""
    from jaxvi import cli

    for name, value in jax_env(1).items():
        monkeypatch.setenv(name, value)
    return cli.main(["launch", "--time-limit", str(time_limit), *map(str, args)])


def test_launch_stops_the_others_when_one_process_fails(monkeypatch, capsys):
    script = ("import os, sys, time; i = os.environ['JAX_PROCESS_ID']; "
              "print('hello from', i, os.environ['JAX_NUM_PROCESSES'], flush=True); "
              "time.sleep(0.5 if i == '1' else 120); sys.exit(3)")
    t0 = time.monotonic()
    assert launch(monkeypatch, "-n", 2, "--", sys.executable, "-c", script) == 3
    assert time.monotonic() - t0 < 50  # process 0 (sleeping 120 s) was stopped
    out, err = capsys.readouterr()
    assert "[0] hello from 0 2" in out and "[1] hello from 1 2" in out
    assert ("jaxvi launch: error: process 1 of 2 exited with code 3; stopped the other 1"
            in err)


def test_launch_refuses_a_jaxvi_command_without_process_options(monkeypatch, capsys):
    assert launch(monkeypatch, "-n", 2, "--", "jaxvi", "kl") == 2
    assert "`jaxvi launch` runs `jaxvi em or jaxvi train`" in capsys.readouterr().err


def test_launch_stops_a_job_past_its_time_limit(monkeypatch, capsys):
    t0 = time.monotonic()
    script = "import time; time.sleep(120)"
    assert launch(monkeypatch, "-n", 2, "--", sys.executable, "-c", script,
                  time_limit=1) == 1
    assert time.monotonic() - t0 < 30
    assert "ran past --time-limit 1 s; stopped its 2 process(es)" in capsys.readouterr().err


def test_launch_of_jaxvi_em_writes_one_file_equal_to_a_single_process_run(tmp_path,
                                                                          monkeypatch, capsys):
    from jaxvi import cli

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(301, 2)) + 5 * i for i in range(3)])  # 903 rows
    np.save(tmp_path / "x.npy", x)
    opts = ["-k", "3", "--n-init", "2", "--covariance-type", "diag"]
    code = launch(monkeypatch, "-n", 2, "--cpu-devices", 2, "--", "jaxvi", "em",
                  tmp_path / "x.npy", *opts, "--out", tmp_path / "two" / "gmm.npz")
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "[0] data: 903 points, 2 features over 2 processes" in out
    assert "[0] saved" in out and "[1] saved" not in out
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["gmm.npz"]
    monkeypatch.undo()
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
    jobs, two, one, _ = worker_jobs()
    assert jobs["one"].code == 0, jobs["one"].err[-3000:]
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
    return {**out, ".log_likelihood": fit[".objective"]}  # EMFitResult.objective


@pytest.mark.parametrize("cov", COVS[1:])
def test_em_fit_over_two_processes_equals_one_process_and_one_device(worker_jobs, cov):
    _, two, one, _ = worker_jobs()
    assert max_diff(two[f"fit_{cov}"], one[f"fit_{cov}"]) < 1e-10
    assert max_diff(two[f"fit_{cov}"], one[f"one_fit_{cov}"]) < 1e-10


def test_em_restarts_over_two_processes_equal_one_process_and_one_device(worker_jobs):
    _, two, one, _ = worker_jobs()
    # 4 restarts (full covariances) from k-means++ on all the job's rows; the best kept
    assert max_diff(by_component(two["fit_full"]), by_component(one["fit_full"])) < 1e-10
    assert max_diff(by_component(two["fit_full"]), by_component(one["one_fit_full"])) < 1e-10


def test_minibatch_em_over_two_processes_equals_one_process_and_one_device(worker_jobs):
    _, two, one, _ = worker_jobs()
    assert max_diff(two["minibatch"], one["minibatch"]) < 1e-10
    assert max_diff(two["minibatch"], one["one_minibatch"]) < 1e-10


def test_variational_em_over_two_processes_equals_one_process_and_one_device(worker_jobs):
    _, two, one, _ = worker_jobs()
    assert max_diff(two["variational"], one["variational"]) < 1e-10
    assert max_diff(two["variational"], one["one_variational"]) < 1e-10


def test_vae_epochs_over_two_processes_equal_one_process(worker_jobs):
    _, two, one, _ = worker_jobs()
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

    _, two, _, ckpt = worker_jobs()
    assert checkpoint_steps(ckpt) == [2]
    cfg = VAEConfig(data_dim=16, components=2, latent_dim=2, hidden=(8,), head_hidden=(4,))
    _, params = split_model(HierarchicalVAE(cfg, rngs=nnx.Rngs(params=0)))
    state, meta = restore_checkpoint(ckpt, init_state(params, optax.sgd(1e-3)))
    assert [h["loss"] for h in meta["history"]] == two["vae_loss"]
    restored = {jax.tree_util.keystr(p): np.asarray(v, float).tolist()
                for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    assert max_diff(restored, two["vae_params"]) == 0


def test_a_dead_process_ends_the_others_with_a_message(worker_jobs):
    jobs, *_ = worker_jobs()
    p0, p1 = jobs["p0"], jobs["p1"]
    # process 1 died (exit 3) after a fit that both processes ran ...
    assert p1.code == 3 and "fit 0 done" in p1.out, p1.err[-3000:]
    # ... and process 0 did not hang, nor end as if all were well, but failed within a
    # bounded time (heartbeat timeout 20 s) with JAX's error naming the silent task
    assert p0.code != 0 and "worker done" in p0.err, p0.err[-3000:]
    assert p0.ended - p1.ended < 60
    assert "heartbeat" in p0.err and re.search(r"[Tt]ask:? ?1\b|\n1\n", p0.err), p0.err[-3000:]
