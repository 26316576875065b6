"""Fresh Python processes for tests that need JAX started differently (several simulated CPU
devices: XLA_FLAGS must be set before JAX starts). (On `sys.path` through pytest's
`pythonpath` setting.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def jax_env(cpu_devices: int) -> dict:
    """The environment of a spawned process: this checkout's jaxvi, the test run's XLA_FLAGS
    (tests/conftest.py) and `cpu_devices` CPU devices."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    flags = (f"{os.environ.get('XLA_FLAGS', '')} "
             f"--xla_force_host_platform_device_count={cpu_devices}").strip()
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", XLA_FLAGS=flags)


def run_script(script: str, cpu_devices: int = 4, timeout_s: float = 600) -> dict:
    """Run `script` in a fresh process with `cpu_devices` CPU devices; -> the JSON it printed
    on its last line starting "RESULT "."""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=jax_env(cpu_devices), cwd=ROOT, timeout=timeout_s)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def run_jaxvi(*args, cwd, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """The real `jaxvi` command (this checkout's) with `args` in a fresh process, from cwd."""
    return subprocess.run([sys.executable, "-m", "jaxvi.cli", *map(str, args)], cwd=cwd,
                          env=jax_env(1), capture_output=True, text=True, timeout=timeout_s)
