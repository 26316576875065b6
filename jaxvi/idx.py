"""IDX files, the format MNIST is distributed in and torchvision keeps on disk
(`MNIST/raw/train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte`, `t10k-...`): read
safely (no pickles, sizes checked against the header), optionally gzipped.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

# The IDX type byte -> the big-endian NumPy dtype of the values.
_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
TRAIN_IMAGES = "train-images-idx3-ubyte"
SUFFIXES = ("", ".gz")


def is_idx_path(path: str | Path) -> bool:
    """Whether `path` is one `load_idx` reads.

    Args:
      path: a file or folder path.

    Returns:
      True for a folder holding `TRAIN_IMAGES`[.gz], or a file whose name says it is IDX
      (`...-idx<d>-ubyte[.gz]`).
    """
    path = Path(path)
    if path.is_dir():
        return _find(path, TRAIN_IMAGES) is not None
    return "-idx" in path.name and path.name.removesuffix(".gz").endswith("-ubyte")


def read_idx(path: str | Path, name: str = "data") -> np.ndarray:
    """The array of one IDX file, in native byte order.

    Args:
      path: the file, gzipped when its name ends in .gz.
      name: the argument named in error messages.

    Returns:
      The array, of the shape and dtype its header gives (e.g. (N, 28, 28) uint8 images).

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming `name` and the file when it is not IDX or is cut short.
    """
    path = Path(path)
    where = f"`{name}` file {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist.")
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{where} cannot be read (cut short or not gzip): {err}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _DTYPES or raw[3] == 0:
        raise ValueError(f"{where} is not an IDX file: it does not start with the IDX "
                         "signature (two zero bytes, a type byte, the number of dimensions).")
    ndim, dtype = raw[3], _DTYPES[raw[2]]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{where} is cut short: its header names {ndim} dimensions.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{where} holds {len(raw) - header} bytes of values where its header "
                         f"(shape {shape}, {dtype.name}) needs {expected}: cut short or corrupt.")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def idx_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """MNIST's IDX files as the arrays `jaxvi.data.load_array` reads.

    The images' labels (`...-labels-idx1-ubyte`) and, for a training file, the test images
    and labels (`t10k-...`) beside it are read when present.

    Args:
      path: an images file (`train-images-idx3-ubyte[.gz]` or any `*-images-idx3-ubyte`) or
        a folder holding `TRAIN_IMAGES`.

    Returns:
      {"x"[, "y"]} or {"x_train", "x_test"[, "y_train", "y_test"]}: images (N, H, W) and
      labels (N,).

    Raises:
      FileNotFoundError: no such file, or a folder without `TRAIN_IMAGES`.
      ValueError: a file that is not IDX or is cut short.
    """
    path = Path(path)
    if path.is_dir():
        found = _find(path, TRAIN_IMAGES)
        if found is None:
            raise FileNotFoundError(f"`data` folder {str(path)!r} holds no {TRAIN_IMAGES}[.gz].")
        path = found
    images = read_idx(path)
    labels = _find(path.parent, path.name.removesuffix(".gz").replace("images-idx3",
                                                                       "labels-idx1"))
    stem = path.name.removesuffix(".gz")
    test = (_find(path.parent, "t10k-" + stem.removeprefix("train-"))
            if stem.startswith("train-") else None)
    if test is None:
        out = {"x": images}
        if labels is not None:
            out["y"] = read_idx(labels)
        return out
    out = {"x_train": images, "x_test": read_idx(test)}
    test_labels = _find(test.parent, test.name.removesuffix(".gz").replace("images-idx3",
                                                                            "labels-idx1"))
    if labels is not None and test_labels is not None:
        out["y_train"], out["y_test"] = read_idx(labels), read_idx(test_labels)
    return out


def _find(folder: Path, stem: str) -> Path | None:
    """folder/stem or folder/stem.gz, whichever exists (the plain file first)."""
    for suffix in SUFFIXES:
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None
