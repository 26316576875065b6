"""Inclusive vs exclusive KL, through the `jaxvi.vi` API.

Fit a Gaussian q to a Gaussian mixture p with unequal weights, both ways:

* inclusive KL(p ‖ q) (forward): q must cover everywhere p has mass; for a Gaussian family the
  optimum is p's mean and covariance (moment matching);
* exclusive KL(q ‖ p) (reverse): q avoids where p has none, so it locks onto one mode, and
  which one depends on where it starts: the loss has one local minimum per mode (and some
  between modes), and a small learning rate leaves a fit stuck where it started.

The experiment has one home, the `jaxvi kl-modes` command (`jaxvi/commands/kl_modes.py`: the
1-D and 2-D targets as `jaxvi.mixture.Mixture`, the sweep over starts and learning rates as
vmapped `jaxvi.vi.fit_many` loops, the table and the pictures); this example runs it with the
command's defaults but `STEPS`, so the two cannot drift apart. `jaxvi kl-modes --help` lists
its options.

Run:  python examples/kl_modes.py [--out examples/output]
Draws kl_modes_1d.png, kl_modes_2d.png (target density and both fits) and kl_modes_sweep.png
(where each exclusive fit ends, by start and learning rate), prints the sweep as a table and
writes it to kl_modes_sweep.json (replacing an earlier run's files there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxvi.cli import main as jaxvi_main

STEPS = 400  # Adam steps per fit (the command's default)


def main(out: Path) -> int:
    return jaxvi_main(["kl-modes", "--out", str(out), "--overwrite", "--steps", str(STEPS)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output")
    raise SystemExit(main(parser.parse_args().out))
