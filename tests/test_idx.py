"""`jaxvi.idx` and the loaders: MNIST as its users have it on disk, Keras's `mnist.npz` and
torchvision's raw IDX files (plain and gzipped), written here byte by byte from the format's
definition, load as the arrays they hold; damaged IDX files give a clear error naming the file."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from jaxvi import data, idx


def _write_idx(path, a: np.ndarray, type_byte: int = 0x08):
    """The IDX encoding: 0, 0, the type byte, ndim, each dimension as big-endian uint32, then
    the values big-endian."""
    body = bytes([0, 0, type_byte, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    body += a.astype(a.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(body)
    else:
        path.write_bytes(body)
    return path


def _mnist_like(rng, n):
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_torchvision_raw_folder_loads_train_and_test(tmp_path, suffix):
    rng = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = _mnist_like(rng, 30), _mnist_like(rng, 12)
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", xtr)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", ytr)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", xte)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", yte)
    for where in (tmp_path, tmp_path / f"train-images-idx3-ubyte{suffix}"):
        ds = data.load(where)
        np.testing.assert_allclose(ds.x_train, xtr.reshape(30, -1) / 255, rtol=1e-6)
        np.testing.assert_allclose(ds.x_test * 255, xte.reshape(12, -1), rtol=1e-6)
        np.testing.assert_array_equal(ds.y_train, ytr)
        np.testing.assert_array_equal(ds.y_test, yte)
        assert ds.input_scale == pytest.approx(1 / 255)


def test_idx_file_without_test_files_is_split(tmp_path):
    rng = np.random.default_rng(1)
    x, y = _mnist_like(rng, 50)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", x)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", y)
    ds = data.load(tmp_path / "t10k-images-idx3-ubyte")
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 50
    assert sorted(np.concatenate([ds.y_train, ds.y_test])) == sorted(y.tolist())
    floats = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    got = idx.read_idx(_write_idx(tmp_path / "f-idx3-ubyte", floats, 0x0D))
    np.testing.assert_array_equal(got, floats)
    assert got.dtype == np.float32 and got.dtype.isnative


def test_keras_mnist_npz(tmp_path):
    rng = np.random.default_rng(2)
    (xtr, ytr), (xte, yte) = _mnist_like(rng, 20), _mnist_like(rng, 10)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = data.load(tmp_path / "mnist.npz")
    assert ds.x_train.shape == (20, 784) and ds.x_test.shape == (10, 784)
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.x_train.max() <= 1.0 and ds.input_scale == pytest.approx(1 / 255)


def test_damaged_idx_files_are_named(tmp_path):
    x, _ = _mnist_like(np.random.default_rng(3), 10)
    path = _write_idx(tmp_path / "train-images-idx3-ubyte", x)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*cut short"):
        data.load(path)
    path.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*not an IDX file"):
        data.load(path)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*cannot be read"):
        idx.read_idx(gz)
