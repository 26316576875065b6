"""`jaxvi.data`: the digits split is fixed and stratified, `.npy`/`.npz` files load, an
epoch's batches are a permutation; broken files, too few points, values float32 cannot hold,
complex data and non-integer labels give a clear ValueError naming the file (in process; the
same cases through the `jaxvi` command are in test_cli_errors.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvi import data


def test_empty_and_non_numpy_files(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'.*empty\.npy' is empty"):
        data.load(tmp_path / "empty.npy")
    (tmp_path / "t.npy").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"t\.npy' is not a valid \.npy") as info:
        data.load(tmp_path / "t.npy")
    assert "pickle" not in str(info.value).lower()
    (tmp_path / "t.npz").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"t\.npz' is not a valid \.npz"):
        data.load(tmp_path / "t.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object") as info:
        data.load(tmp_path / "obj.npy")
    assert "allow_pickle" not in str(info.value)
    np.save(tmp_path / "cut.npy", np.ones((100, 4)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut\.npy' is not a valid \.npy"):
        data.load(tmp_path / "cut.npy")


def test_too_few_points(tmp_path):
    np.save(tmp_path / "three.npy", np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"three\.npy': `x` holds 3 data points; at least 10"):
        data.load(tmp_path / "three.npy")
    data.load_array(_save(tmp_path / "ten.npy", np.arange(20.0).reshape(10, 2)))  # enough
    # Labels with every class of 2 points: the stratified split would leave no test set.
    x = np.arange(40.0).reshape(20, 2)
    np.savez(tmp_path / "pairs.npz", x=x, y=np.repeat(np.arange(10), 2))
    with pytest.raises(ValueError, match=r"pairs\.npz.*0 test points"):
        data.load(tmp_path / "pairs.npz")
    np.savez(tmp_path / "split.npz", x_train=x[:5], x_test=x[5:])
    with pytest.raises(ValueError, match=r"`x_train` .* 5 data points; at least 8"):
        data.load(tmp_path / "split.npz")


def test_values_float32_cannot_hold(tmp_path):
    x = np.ones((20, 3))
    x[2, 1] = 1e39
    with pytest.raises(ValueError, match=r"big\.npy.*1e\+39 in magnitude, which overflow float"):
        data.load(_save(tmp_path / "big.npy", x))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"nan\.npy.*finite"):
        data.load(_save(tmp_path / "nan.npy", x))


def test_complex_and_non_integer_labels(tmp_path):
    with pytest.raises(ValueError, match=r"c\.npy.*complex64"):
        data.load(_save(tmp_path / "c.npy", np.ones((20, 2), np.complex64)))
    x = np.random.default_rng(0).normal(size=(20, 2))
    np.savez(tmp_path / "f.npz", x=x, y=np.linspace(0, 2, 20))
    with pytest.raises(ValueError, match=r"f\.npz.*`y` must hold integer"):
        data.load(tmp_path / "f.npz")
    np.savez(tmp_path / "c.npz", x=x, y=np.ones(20, np.complex128))
    with pytest.raises(ValueError, match=r"c\.npz.*`y`"):
        data.load(tmp_path / "c.npz")
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["a", "b"] * 10))
    with pytest.raises(ValueError, match=r"s\.npz.*`y`"):
        data.load(tmp_path / "s.npz")
    # Integer-valued floats are labels.
    np.savez(tmp_path / "i.npz", x=x, y=np.repeat([0.0, 1.0, 3.0, 4.0], 5))
    ds = data.load(tmp_path / "i.npz")
    assert ds.y_train.dtype == np.int64
    assert set(ds.y_train.tolist()) | set(ds.y_test.tolist()) == {0, 1, 3, 4}


def _save(path, x):
    np.save(path, x)
    return path


def test_digits_split_is_fixed_and_stratified(digits):
    assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1
    counts = np.bincount(digits.y_test)
    assert counts.min() >= 35 and counts.max() <= 37
    again = data.load_digits()
    np.testing.assert_array_equal(again.x_test, digits.x_test)


def test_load_array_npy_and_npz(tmp_path, digits):
    x, y = digits.x_train[:100], digits.y_train[:100]
    np.save(tmp_path / "a.npy", x.reshape(100, 8, 8))
    ds = data.load(tmp_path / "a.npy")
    assert ds.x_train.shape == (80, 64) and ds.y_train is None
    np.savez(tmp_path / "b.npz", x=x, y=y)
    ds = data.load(tmp_path / "b.npz")
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 100 and ds.y_test is not None
    np.savez(tmp_path / "c.npz", x_train=x[:70], x_test=x[70:], y_train=y[:70], y_test=y[70:])
    ds = data.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(ds.x_test, x[70:])
    bad = x.copy()
    bad[3, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="finite"):
        data.load(tmp_path / "nan.npy")
    with pytest.raises(FileNotFoundError):
        data.load(tmp_path / "missing.npy")
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=".npy or .npz"):
        data.load(tmp_path / "d.csv")


def test_epoch_batches_is_a_permutation():
    x = jnp.arange(20.0).reshape(10, 2)
    b = jax.jit(lambda x, k: data.epoch_batches(x, 3, key=k))(x, jax.random.key(0))
    assert b.shape == (3, 3, 2)
    rows = np.asarray(b).reshape(-1, 2)[:, 0] / 2
    assert len(set(rows.tolist())) == 9 and set(rows.tolist()) <= set(range(10))


def test_uint8_images_are_flattened_and_scaled(tmp_path):
    """uint8 images (N, H, W), 0–255, load as (N, H·W) float32 in [0, 1], the factor kept;
    other dtypes keep their units."""
    r = np.random.default_rng(0)
    imgs = r.integers(0, 256, (20, 4, 5)).astype(np.uint8)
    np.savez(tmp_path / "u8.npz", x_train=imgs[:16], x_test=imgs[16:])
    ds = data.load_array(tmp_path / "u8.npz")
    assert ds.x_train.shape == (16, 20) and ds.x_train.dtype == np.float32
    assert ds.input_scale == pytest.approx(1 / 255)
    np.testing.assert_allclose(ds.x_test, imgs[16:].reshape(4, 20) / 255.0, rtol=1e-6)
    np.save(tmp_path / "f.npy", imgs.astype(np.float32))
    ds = data.load_array(tmp_path / "f.npy")
    assert ds.input_scale == 1.0 and ds.x_train.max() > 1.0
