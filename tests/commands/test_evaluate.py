"""`jaxvi evaluate` on a folder that holds no checkpoint: one line naming it, no traceback."""

import subprocess
import sys


def _jaxvi(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxvi.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_evaluate_on_a_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes" / "0").mkdir(parents=True)  # a numbered folder, but no checkpoint
    (tmp_path / "plain").mkdir()
    for folder in ("notes", "plain"):
        proc = _jaxvi("evaluate", folder, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert folder in proc.stderr and "checkpoint" in proc.stderr
