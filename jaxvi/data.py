"""Data: scikit-learn's bundled 8×8 digits (nothing is downloaded) with a fixed stratified
train/test split, any `.npy`/`.npz` array a user passes (Keras's `mnist.npz` included) or
MNIST's IDX files as torchvision keeps them (`jaxvi.idx`), images (N, H, W) flattened and
uint8 0–255 scaled to [0, 1], and batching with explicit keys."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvi._validate import check_finite, check_ndim
from jaxvi.idx import idx_arrays, is_idx_path

SPLIT_SEED = 0
TEST_FRACTION = 0.2
# The smallest data sets `load_array` takes: an 80/20 split of MIN_POINTS leaves MIN_TRAIN
# points to train on (the default 5 pretraining neighbours need 6) and MIN_TEST to test on.
MIN_POINTS = 10
MIN_TRAIN = 8
MIN_TEST = 2
_MIN_WHY = {
    "x": f" (an {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} split into at least {MIN_TRAIN} "
         f"training and {MIN_TEST} test points)",
    "x_train": " to train on",
    "x_test": " to test on",
}
_NPY_MAGIC = (b"\x93NUMPY",)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive; an empty one


class Dataset(NamedTuple):
    """x_*: (N, D) float32 in the units the model sees; y_*: (N,) int labels or None;
    input_scale: what the stored values were multiplied by to get x_* (`input_scale`)."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    name: str
    input_scale: float = 1.0


def input_scale(a) -> float:
    """The factor that brings an array's values to the units the model sees.

    Args:
      a: an array of any shape.

    Returns:
      1/255 for uint8 (images as users have them, 0–255, to [0, 1]), 1 for anything else.
    """
    return 1.0 / 255.0 if np.asarray(a).dtype == np.uint8 else 1.0


def as_features(a, scale: float = 1.0) -> np.ndarray:
    """Flatten to a float32 feature matrix (no checks: see `load_array` and
    `jaxvi.MixtureVAE` for those).

    Args:
      a: (N, ...) an array; images (N, H, W) or (N, H, W, C) are flattened.
      scale: the factor the values are multiplied by.

    Returns:
      (N, D) float32, times `scale`.
    """
    a = np.asarray(a)
    x = a.reshape(a.shape[0], -1).astype(np.float32)
    return x * np.float32(scale) if scale != 1.0 else x


def stratified_split(y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """Indices (train, test) with every class split in the same proportion; deterministic.

    Args:
      y: (N,) class labels.
      test_fraction: the fraction of each class put in the test set (rounded).
      seed: the seed of the permutation of each class.

    Returns:
      (train, test): sorted int index arrays, of sizes summing to N.
    """
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
    """A user's data set from a `.npy`, `.npz` or IDX file.

    Without a given test set, a fixed 80/20 split (stratified when labels exist).
    Images (N, H, W) are flattened; uint8 arrays (0–255) are scaled to [0, 1] (the factor is
    the `Dataset`'s `input_scale`, taken from `x` or `x_train`).

    Args:
      path: a `.npy` file (an (N, D) array, or images (N, ...) flattened), a `.npz` file
        (arrays `x` and optionally `y`; or `x_train`, `x_test`, `y_train`, `y_test`, as
        Keras's `mnist.npz`; or a single array), or IDX files (`jaxvi.idx.idx_arrays`: an
        `...-images-idx3-ubyte[.gz]` file with its labels and test files beside it, or the
        folder holding `train-images-idx3-ubyte[.gz]`).

    Returns:
      A `Dataset`: x_* (N, D) float32, y_* (N,) int64 or None, named after the file's stem.

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file: a file that is not a valid .npy/.npz array file (empty,
        text, cut short, object arrays: nothing is ever unpickled); fewer than `MIN_POINTS`
        points (`MIN_TRAIN` training and `MIN_TEST` test points for a given split); complex,
        non-numeric or non-finite features, or values beyond float32's range; labels that
        are not integer-valued.
    """
    path = Path(path)
    arrays = idx_arrays(path) if is_idx_path(path) else read_arrays(path)
    where = f"`data` file {str(path)!r}"
    if len(arrays) == 1:
        arrays = {"x": next(iter(arrays.values()))}
    lower = {k.lower(): v for k, v in arrays.items()}
    if "x_train" in lower:
        if "x_test" not in lower:
            raise ValueError(f"`data` {path.name} has `x_train` but no `x_test`.")
        scale = input_scale(lower["x_train"])
        xtr = _feature_matrix(lower["x_train"], "x_train", where, MIN_TRAIN, scale)
        xte = _feature_matrix(lower["x_test"], "x_test", where, MIN_TEST, scale)
        if xtr.shape[1] != xte.shape[1]:
            raise ValueError(
                f"`x_train` and `x_test` must have the same feature count; got {xtr.shape[1]} "
                f"and {xte.shape[1]}."
            )
        ytr, yte = lower.get("y_train"), lower.get("y_test")
        return Dataset(xtr, _labels(ytr, xtr, "y_train", where), xte,
                       _labels(yte, xte, "y_test", where), path.stem, scale)
    if "x" not in lower:
        raise ValueError(
            f"`data` {path.name} must hold an array `x` (or `x_train`/`x_test`); got "
            f"{sorted(arrays)}."
        )
    scale = input_scale(lower["x"])
    x = _feature_matrix(lower["x"], "x", where, MIN_POINTS, scale)
    y = _labels(lower.get("y"), x, "y", where)
    if y is not None:
        tr, te = stratified_split(y)
        if tr.size < MIN_TRAIN or te.size < MIN_TEST:
            raise ValueError(
                f"{where}: the {TEST_FRACTION:.0%} test split stratified by the labels `y` "
                f"({np.unique(y).size} classes) leaves {tr.size} training and {te.size} test "
                f"points; at least {MIN_TRAIN} and {MIN_TEST} are needed (a class of fewer "
                f"than {int(np.ceil(0.5 / TEST_FRACTION))} points puts none in the test set)."
            )
    else:
        perm = np.random.default_rng(SPLIT_SEED).permutation(x.shape[0])
        n_test = int(round(TEST_FRACTION * x.shape[0]))
        tr, te = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    return Dataset(x[tr], None if y is None else y[tr], x[te], None if y is None else y[te],
                   path.stem, scale)


def read_arrays(path: str | Path, name: str = "data",
                formats: tuple[str, ...] = (".npy", ".npz"), *,
                mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays of a `.npy` or `.npz` file, read safely: never unpickled.

    Args:
      path: the file; its content must match its suffix.
      name: the argument named in error messages.
      formats: the suffixes accepted.
      mmap: a `.npy` array is a read-only memory map (only what is indexed is read).

    Returns:
      {"x": array} for a `.npy` file; a `.npz` file's arrays by their names.

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming `name`, the file and what is wrong with it (a suffix not in
        `formats`, a folder, empty, not a NumPy file, cut short or corrupt, an object array).
    """
    path = Path(path)
    where = f"`{name}` file {str(path)!r}"
    if not path.exists():
        raise FileNotFoundError(f"{where} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in formats:
        kinds = " or ".join(formats)
        raise ValueError(f"`{name}` must be a {kinds} file; got {str(path)!r}.")
    if path.is_dir():
        raise ValueError(f"{where} is a folder; expected a {suffix} array file.")
    with path.open("rb") as f:
        head = f.read(6)
    if not head:
        raise ValueError(f"{where} is empty (0 bytes); it is not a valid {suffix} array file.")
    magic, what, saver = ((_NPY_MAGIC, "NumPy .npy", "numpy.save") if suffix == ".npy"
                          else (_ZIP_MAGIC, "NumPy .npz (zip)", "numpy.savez"))
    if not any(head.startswith(m) for m in magic):
        raise ValueError(
            f"{where} is not a valid {suffix} array file: it does not start with the {what} "
            f"signature (a text or CSV file renamed? Write it with {saver})."
        )
    try:
        loaded = np.load(path, allow_pickle=False,
                         mmap_mode="r" if mmap and suffix == ".npy" else None)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return {"x": loaded}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Python objects" in str(err):  # never unpickled
            raise ValueError(
                f"{where} holds an object (dtype=object) array, which jaxvi does not load "
                f"(unpickling can run arbitrary code); save a numeric array instead."
            ) from None
        cut = " (cut short or corrupt)" if "mmap length" in str(err) else ""
        raise ValueError(f"{where} is not a valid {suffix} array file{cut}: "
                         f"{_one_line(err)}") from None
    except (EOFError, zipfile.BadZipFile, zlib.error, OSError) as err:
        raise ValueError(f"{where} is not a valid {suffix} array file (cut short or "
                         f"corrupt): {_one_line(err)}") from None


def load(data: str | Path | None = None) -> Dataset:
    """The bundled digits or a user's data set.

    Args:
      data: None or "digits" for the bundled digits; otherwise a `.npy`/`.npz`/IDX path
        (`load_array`).

    Returns:
      The `Dataset`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a file `load_array` refuses.
    """
    if data is None or str(data) == "digits":
        return load_digits()
    return load_array(data)


def _feature_matrix(a, name: str, where: str, min_points: int = 2,
                    scale: float = 1.0) -> np.ndarray:
    """(N, ...) numeric, real, finite and within float32's range -> (N, D) float32, times
    `scale`."""
    a = np.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"{where}: `{name}` must have 2 dimensions (N, D) (or more: images "
                         f"(N, ...) are flattened); got shape {a.shape}.")
    check_real_values(a, f"{where}: `{name}`", np.float32)
    if a.shape[0] < min_points:
        raise ValueError(f"{where}: `{name}` holds {a.shape[0]} data points; at least "
                         f"{min_points} are needed{_MIN_WHY.get(name, '')}.")
    if int(np.prod(a.shape[1:])) == 0:
        raise ValueError(f"{where}: `{name}` must have at least one feature; got shape "
                         f"{a.reshape(a.shape[0], -1).shape}.")
    return as_features(a, scale)


def check_real_values(a: np.ndarray, what: str, dtype=np.float32) -> None:
    """Check a real numeric array, finite and within the range of `dtype`.

    Args:
      a: an array of any shape.
      what: how messages name it (e.g. "`data` file 'x.npz': `x`").
      dtype: the float dtype whose range the values must fit.

    Raises:
      ValueError: starting with `what` and saying what was given (complex values, a
        non-numeric dtype, NaN/Inf, the largest magnitude).
    """
    if np.iscomplexobj(a):
        raise ValueError(f"{what} must be real; got complex values (dtype {a.dtype}), whose "
                         "imaginary part would be lost.")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{what} must be numeric; got dtype {a.dtype}.")
    if a.size == 0 or np.issubdtype(a.dtype, np.integer):
        return  # every int64 value is finite in float32
    finite = np.isfinite(a)
    if not finite.all():
        bad = int(a.size - np.count_nonzero(finite))
        raise ValueError(f"{what} must be finite; got {bad} NaN or Inf value(s).")
    biggest = float(np.max(np.abs(a)))
    limit = float(np.finfo(dtype).max)
    if biggest > limit:
        raise ValueError(
            f"{what} has values up to {biggest:.3g} in magnitude, which overflow "
            f"{np.dtype(dtype).name} (largest {limit:.3g}); rescale the data."
        )


def _labels(y, x, name: str, where: str) -> np.ndarray | None:
    """Class labels, one per point: integers, bools or integer-valued floats -> int64."""
    if y is None:
        return None
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{where}: labels `{name}` must have one entry per data point; got "
                         f"{y.shape[0]} for {x.shape[0]} points.")
    if y.dtype == np.bool_:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating):
            raise ValueError(f"{where}: `{name}` must hold integer class labels; got dtype "
                             f"{y.dtype}.")
        bad = ~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) > 2.0**62)
        if bad.any():
            raise ValueError(
                f"{where}: `{name}` must hold integer class labels; got {int(bad.sum())} "
                f"non-integer value(s) such as {float(y[bad][0]):g} (dtype {y.dtype})."
            )
    return y.astype(np.int64)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def check_data(name: str, x, data_dim: int | None = None) -> None:
    """Public-boundary check: (N, D), finite, and D == data_dim when given.

    Args:
      name: the argument named in messages.
      x: (N, D) data.
      data_dim: the model's D, or None.

    Raises:
      ValueError: x not 2-D, with another feature count, or not finite.
    """
    check_ndim(name, x, 2, "(N, D)")
    if data_dim is not None and np.shape(x)[1] != data_dim:
        raise ValueError(
            f"`{name}` must have {data_dim} features (the model's data_dim); got "
            f"{np.shape(x)[1]}."
        )
    check_finite(name, x)


def epoch_batches(x: jax.Array, batch_size: int, *, key: jax.Array,
                  n_batches: int | None = None) -> jax.Array:
    """One shuffled epoch of full batches (the last partial batch is dropped). Works under jit.

    Args:
      x: (N, D) data on device.
      batch_size: rows per batch.
      key: PRNG key of the shuffle.
      n_batches: keep only the first this many of the N // batch_size batches (None: all).

    Returns:
      (n_batches, batch_size, D) the batches.
    """
    n = x.shape[0]
    n_batches = n // batch_size if n_batches is None else min(n_batches, n // batch_size)
    perm = jax.random.permutation(key, n)[: n_batches * batch_size]
    return jnp.take(x, perm, axis=0).reshape(n_batches, batch_size, x.shape[1])
