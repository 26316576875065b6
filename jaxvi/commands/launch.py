"""`jaxvi launch -n N -- COMMAND ...`: run COMMAND as a job of N processes on this machine.

The coordinator is process 0 on 127.0.0.1 at a free port. Every process gets the job in its
environment (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, which
`jaxvi.processes.initialize` reads) and, when COMMAND is `jaxvi em` or `jaxvi train`, as
the options `--coordinator`, `--num-processes`, `--process-id`. Their output is streamed
line by line, prefixed `[i]`. When a process fails, the others are stopped at once and the
launch exits non-zero with one line naming the process that failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

MULTIPROCESS_COMMANDS = ("em", "train")  # the jaxvi subcommands with the process options
POLL_S = 0.05
STOP_GRACE_S = 5.0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "launch",
        help="run a command as a job of N processes on this machine",
        description="Run COMMAND (`jaxvi em ...`, `jaxvi train ...` or any program that calls "
        "jaxvi.processes.initialize()) as N processes joined by jax.distributed, the "
        "coordinator on 127.0.0.1 at a free port. Output is prefixed [i]; if one process "
        "fails, the others are stopped and the launch exits non-zero.",
    )
    p.add_argument("-n", "--num-processes", type=int, required=True, help="processes N")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="CPU devices per process (XLA_FLAGS="
                   "--xla_force_host_platform_device_count; default: as the environment says)")
    p.add_argument("--port", type=int, default=None,
                   help="coordinator port on 127.0.0.1 (default: a free one)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop every process and fail once the job has run this many seconds "
                   "(default: no limit)")
    p.add_argument("child", nargs="+", metavar="-- COMMAND",
                   help="the command each process runs, after --")
    p.set_defaults(func=run)


def child_commands(command: list[str], address: str, n: int) -> list[list[str]]:
    """Process i's command line: `jaxvi SUB ...` runs as `python -m jaxvi.cli SUB ...` with
    the process options appended (SUB must be one of `MULTIPROCESS_COMMANDS`); any other
    command as given."""
    if command[0] != "jaxvi":
        return [list(command)] * n
    sub = command[1] if len(command) > 1 else None
    if sub not in MULTIPROCESS_COMMANDS:
        raise ValueError(f"`jaxvi launch` runs `jaxvi {' or jaxvi '.join(MULTIPROCESS_COMMANDS)}` "
                         f"(or another program) over several processes; got `jaxvi {sub or ''}`.")
    base = [sys.executable, "-m", "jaxvi.cli", *command[1:]]
    return [base + ["--coordinator", address, "--num-processes", str(n), "--process-id", str(i)]
            for i in range(n)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> int:
    n = args.num_processes
    if n < 1:
        raise ValueError(f"`--num-processes` must be at least 1; got {n}.")
    if args.cpu_devices is not None and args.cpu_devices < 1:
        raise ValueError(f"`--cpu-devices` must be at least 1; got {args.cpu_devices}.")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"`--time-limit` must be a positive number of seconds; got "
                         f"{args.time_limit}.")
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"`--port` must be in 1..65535; got {args.port}.")
    # `child`, not `command`: that is the subcommand's name ("launch"), which errors print.
    command = args.child[1:] if args.child[:1] == ["--"] else args.child
    if not command:
        raise ValueError("`jaxvi launch` needs a command after --, e.g. "
                         "`jaxvi launch -n 2 -- jaxvi em data.npy -k 4`.")
    address = f"127.0.0.1:{args.port or free_port()}"
    commands = child_commands(command, address, n)
    procs = [_start(cmd, _child_env(address, n, i, args.cpu_devices))
             for i, cmd in enumerate(commands)]
    streams = [threading.Thread(target=_stream, args=(pipe, i, out), daemon=True)
               for i, p in enumerate(procs)
               for pipe, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))]
    for t in streams:
        t.start()
    try:
        failed = _wait(procs, args.time_limit)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    if failed is not None:
        _stop(procs)
    for t in streams:
        t.join(timeout=STOP_GRACE_S)
    if failed is None:
        return 0
    if failed == "time limit":
        print(f"jaxvi launch: error: the job ran past --time-limit {args.time_limit:g} s; "
              f"stopped its {n} process(es)", file=sys.stderr, flush=True)
        return 1
    i, code = failed
    how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in
           signal.valid_signals() else f"exited with code {code}")
    others = f"; stopped the other {n - 1}" if n > 1 else ""
    print(f"jaxvi launch: error: process {i} of {n} {how}{others} (its output above, "
          f"prefixed [{i}])", file=sys.stderr, flush=True)
    return code if 0 < code < 128 else 1


def _child_env(address: str, n: int, i: int, cpu_devices: int | None) -> dict:
    from jaxvi import processes

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update({processes.ENV_COORDINATOR: address, processes.ENV_NUM_PROCESSES: str(n),
                processes.ENV_PROCESS_ID: str(i)})
    if cpu_devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={cpu_devices}")
        env["XLA_FLAGS"] = " ".join(flags)
    return env


def _start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, bufsize=1,
                            errors="backslashreplace")


def _stream(pipe, i: int, out) -> None:
    """Copy `pipe` to `out` line by line, prefixed "[i] " (gloo's connection chatter left
    out)."""
    for line in pipe:
        if not line.startswith("[Gloo]"):
            out.write(f"[{i}] {line}")
            out.flush()
    pipe.close()


def _wait(procs, time_limit: float | None) -> tuple[int, int] | str | None:
    """Wait until every process has ended well (-> None), one has failed (-> (its index,
    its exit code)) or `time_limit` seconds have passed (-> "time limit")."""
    deadline = None if time_limit is None else time.monotonic() + time_limit
    while deadline is None or time.monotonic() < deadline:
        codes = [p.poll() for p in procs]
        for i, code in enumerate(codes):
            if code not in (None, 0):
                return i, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(POLL_S)
    return "time limit"


def _stop(procs) -> None:
    """Terminate the processes still running; kill those that outlast `STOP_GRACE_S`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
