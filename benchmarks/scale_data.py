"""An MNIST-shaped image set generated from scikit-learn's 8×8 digits, nothing downloaded: each
image is a source digit drawn at 20×20 inside a 28×28 canvas (as MNIST centres its digits),
under a random affine map (rotation, scale, shear, shift), bilinearly sampled, with Gaussian
pixel noise, stored as uint8 0–255. Training and test images come from disjoint source images
(`jaxvi.data.stratified_split` of the digits: 1437 and 360 sources).

    python benchmarks/scale_data.py OUT.npz [--n-train 60000] [--n-test 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDE = 28
DIGIT_SIDE = 20  # pixels the 8 source pixels span, as in MNIST's 20×20 box
_CHUNK = 5000


def _affine_images(src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random affine views of 8×8 images src: (n, 8, 8) in [0, 1] -> (n, 28, 28) float32."""
    n = src.shape[0]
    angle = rng.uniform(-0.25, 0.25, n)  # radians, about ±15°
    scale = rng.uniform(0.85, 1.15, n)
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-2.0, 2.0, (n, 2))  # output pixels
    cos, sin = np.cos(angle), np.sin(angle)
    # output offset from the centre -> source offset: (rotation · shear)^-1 / scale, in
    # source pixels (8 / DIGIT_SIDE per output pixel).
    a = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    sh = np.zeros((n, 2, 2))
    sh[:, 0, 0] = sh[:, 1, 1] = 1.0
    sh[:, 0, 1] = shear
    inv = np.linalg.inv(a @ sh) * (8.0 / DIGIT_SIDE) / scale[:, None, None]
    grid = np.stack(np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij"), -1)
    offset = grid.reshape(1, -1, 2) - (SIDE - 1) / 2 - shift[:, None, :]  # (n, 784, 2)
    coords = np.einsum("nij,npj->npi", inv, offset) + 3.5  # source (row, col)
    padded = np.pad(src, ((0, 0), (1, 1), (1, 1)))  # zeros outside the source
    c = np.clip(coords + 1.0, 0.0, 9.0 - 1e-6)
    r0, c0 = np.floor(c[..., 0]).astype(np.int64), np.floor(c[..., 1]).astype(np.int64)
    fr, fc = c[..., 0] - r0, c[..., 1] - c0
    rows = np.arange(n)[:, None]

    def at(r, cc):
        return padded[rows, r, cc]

    out = ((1 - fr) * (1 - fc) * at(r0, c0) + (1 - fr) * fc * at(r0, c0 + 1)
           + fr * (1 - fc) * at(r0 + 1, c0) + fr * fc * at(r0 + 1, c0 + 1))
    return out.reshape(n, SIDE, SIDE).astype(np.float32)


def make_images(n: int, sources: np.ndarray, *, seed: int, noise: float = 0.05) -> np.ndarray:
    """n images (n, 28, 28) uint8 from the 8×8 sources (m, 8, 8) in [0, 1], each source drawn
    uniformly at random. -> (images, index of each image's source)."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, sources.shape[0], n)
    out = np.empty((n, SIDE, SIDE), np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        img = _affine_images(sources[which[sl]], rng)
        img = img + rng.normal(0.0, noise, img.shape).astype(np.float32)
        out[sl] = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out, which


def scale_dataset(n_train: int = 60000, n_test: int = 10000, *, seed: int = 0):
    """-> dict of x_train (n_train, 28, 28) uint8, y_train, x_test (n_test, 28, 28) uint8,
    y_test: training images from the digits' training sources, test images from the disjoint
    test sources (the fixed split of `jaxvi.data.load_digits`)."""
    from sklearn.datasets import load_digits

    from jaxvi.data import stratified_split

    bunch = load_digits()
    src = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y)
    x_train, w_train = make_images(n_train, src[tr], seed=seed)
    x_test, w_test = make_images(n_test, src[te], seed=seed + 1_000_003)
    return {"x_train": x_train, "y_train": y[tr][w_train], "x_test": x_test,
            "y_test": y[te][w_test]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float", action="store_true", help="store float32 in [0, 1], not uint8")
    args = p.parse_args(argv)
    d = scale_dataset(args.n_train, args.n_test, seed=args.seed)
    if args.float:
        d = {k: (v.astype(np.float32) / 255.0 if k.startswith("x") else v) for k, v in d.items()}
    np.savez(args.out, **d)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in d.items()))


if __name__ == "__main__":
    main()
