"""Data: scikit-learn's bundled 8×8 digits (nothing is downloaded) with a fixed stratified
train/test split, any `.npy`/`.npz` array a user passes, and batching with explicit keys."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi._validate import check_finite, check_ndim

SPLIT_SEED = 0
TEST_FRACTION = 0.2


class Dataset(NamedTuple):
    """x_*: (N, D) float32 in the units the model sees; y_*: (N,) int labels or None."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    name: str


def stratified_split(y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """Indices (train, test) with every class split in the same proportion; deterministic."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits() -> Dataset:
    """scikit-learn's bundled digits: 1797 images 8×8 scaled to [0, 1], a fixed stratified
    80/20 split (1437 train, 360 test)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    tr, te = stratified_split(y)
    return Dataset(x[tr], y[tr], x[te], y[te], "digits")


def load_array(path: str | Path) -> Dataset:
    """A user's data set from `.npy` (an (N, D) array, or images (N, ...) flattened) or `.npz`
    (arrays `x` and optionally `y`; or `x_train`, `x_test`, `y_train`, `y_test`; or a single
    array). Without a given test set, a fixed 80/20 split (stratified when labels exist)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`data` file {str(path)!r} does not exist.")
    if path.suffix == ".npy":
        arrays = {"x": np.load(path, allow_pickle=False)}
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        if len(arrays) == 1:
            arrays = {"x": next(iter(arrays.values()))}
    else:
        raise ValueError(f"`data` must be a .npy or .npz file; got {str(path)!r}.")
    lower = {k.lower(): v for k, v in arrays.items()}
    if "x_train" in lower:
        if "x_test" not in lower:
            raise ValueError(f"`data` {path.name} has `x_train` but no `x_test`.")
        xtr, xte = _features(lower["x_train"], "x_train"), _features(lower["x_test"], "x_test")
        if xtr.shape[1] != xte.shape[1]:
            raise ValueError(
                f"`x_train` and `x_test` must have the same feature count; got {xtr.shape[1]} "
                f"and {xte.shape[1]}."
            )
        ytr, yte = lower.get("y_train"), lower.get("y_test")
        return Dataset(xtr, _labels(ytr, xtr), xte, _labels(yte, xte), path.stem)
    if "x" not in lower:
        raise ValueError(
            f"`data` {path.name} must hold an array `x` (or `x_train`/`x_test`); got "
            f"{sorted(arrays)}."
        )
    x = _features(lower["x"], "x")
    y = _labels(lower.get("y"), x)
    if y is not None:
        tr, te = stratified_split(y)
    else:
        perm = np.random.default_rng(SPLIT_SEED).permutation(x.shape[0])
        n_test = int(round(TEST_FRACTION * x.shape[0]))
        tr, te = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    return Dataset(x[tr], None if y is None else y[tr], x[te], None if y is None else y[te],
                   path.stem)


def load(data: str | Path | None = None) -> Dataset:
    """`None` or "digits" -> the bundled digits; otherwise a `.npy`/`.npz` path."""
    if data is None or str(data) == "digits":
        return load_digits()
    return load_array(data)


def _features(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    check_min = a.ndim >= 2
    if not check_min:
        check_ndim(name, a, 2, "(N, D)")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"`{name}` must be numeric; got dtype {a.dtype}.")
    a = a.reshape(a.shape[0], -1).astype(np.float32)
    if a.shape[0] < 2:
        raise ValueError(f"`{name}` must hold at least 2 data points; got {a.shape[0]}.")
    check_finite(name, a)
    return a


def _labels(y, x) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have one entry per data point; got {y.shape[0]} for "
                         f"{x.shape[0]} points.")
    return y.astype(np.int64)


def check_data(name: str, x, data_dim: int | None = None) -> None:
    """Public-boundary check: (N, D), finite, and D == data_dim when given."""
    check_ndim(name, x, 2, "(N, D)")
    if data_dim is not None and np.shape(x)[1] != data_dim:
        raise ValueError(
            f"`{name}` must have {data_dim} features (the model's data_dim); got "
            f"{np.shape(x)[1]}."
        )
    check_finite(name, x)


def epoch_batches(x: jax.Array, batch_size: int, *, key: jax.Array) -> jax.Array:
    """One shuffled epoch as (n_batches, batch_size, D); the last partial batch is dropped.
    Works under jit (x: (N, D) on device)."""
    n = x.shape[0]
    n_batches = n // batch_size
    perm = jax.random.permutation(key, n)[: n_batches * batch_size]
    return jnp.take(x, perm, axis=0).reshape(n_batches, batch_size, x.shape[1])
