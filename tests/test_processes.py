"""The pure parts of `jaxvi.processes` and of the launcher's command lines, in this process (the
real multi-process runs are in tests/test_multiprocess.py)."""

import sys

import numpy as np
import pytest

from jaxvi import processes
from jaxvi.commands.launch import child_commands


@pytest.mark.parametrize("n_rows, p", [(999, 2), (10, 3), (7, 4), (2, 4), (0, 2), (12, 1)])
def test_process_rows_are_contiguous_blocks_that_cover_the_rows_once(n_rows, p):
    blocks = [processes.process_rows(n_rows, i, p) for i in range(p)]
    assert blocks[0].start == 0 and blocks[-1].stop == n_rows
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:], strict=False))
    sizes = [b.stop - b.start for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_local_rows_of_a_memory_map_in_a_single_process(tmp_path):
    x = np.arange(24.0).reshape(12, 2)
    np.save(tmp_path / "x.npy", x)
    rows = processes.local_rows(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert type(rows) is np.ndarray and np.array_equal(rows, x)  # a copy in memory
    assert processes.init_rows(x) is x


def test_process_config_from_arguments_or_environment():
    env = {processes.ENV_COORDINATOR: "10.0.0.1:1234", processes.ENV_NUM_PROCESSES: "4",
           processes.ENV_PROCESS_ID: "3"}
    assert processes.process_config(environ={}) is None
    assert processes.process_config(environ=env) == ("10.0.0.1:1234", 4, 3)
    assert processes.process_config("h:9", 2, 0, environ=env) == ("h:9", 2, 0)


@pytest.mark.parametrize("args, match", [
    (("h:9", 2, None), "missing process_id"),
    (("h", 2, 0), "HOST:PORT"),
    (("h:70000", 2, 0), "HOST:PORT"),
    (("h:9", 0, 0), "`num_processes` must be an integer >= 1; got 0"),
    (("h:9", 2, 2), r"`process_id` must be in \[0, 2\) for 2 processes; got 2"),
    (("h:9", "two", 0), "`num_processes` must be an integer"),
])
def test_process_config_refuses_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        processes.process_config(*args, environ={})


def test_the_launcher_gives_each_jaxvi_process_its_id():
    cmds = child_commands(["jaxvi", "em", "x.npy", "-k", "3"], "127.0.0.1:5", 2)
    assert cmds == [[sys.executable, "-m", "jaxvi.cli", "em", "x.npy", "-k", "3",
                     "--coordinator", "127.0.0.1:5", "--num-processes", "2",
                     "--process-id", str(i)] for i in range(2)]
    assert child_commands(["python", "run.py"], "127.0.0.1:5", 2) == [["python", "run.py"]] * 2
    with pytest.raises(ValueError, match="jaxvi em or jaxvi train"):
        child_commands(["jaxvi", "kl"], "127.0.0.1:5", 2)
