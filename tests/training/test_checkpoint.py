"""Checkpoints notice damage: a flipped bit, a cut or deleted array file and a cut JSON are
named (the file or the step), the newest intact checkpoint is used instead, and with none
intact a `ValueError` names the folder. Real orbax checkpoints, really damaged on disk."""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvi.training.checkpoint import (
    DamagedCheckpointWarning,
    checkpoint_steps,
    latest_checkpoint,
    load_meta,
    other_entries,
    remove_saved,
    replace_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    saved_entries,
    set_aside_steps,
)
from jaxvi.training.loop import fit
from jaxvi.training.step import TrainState, init_state


def _state(seed: int) -> TrainState:
    # Random (incompressible) values: a flipped byte in the middle of the data file changes
    # one value and still decodes (what a silent restore looked like).
    w = np.random.default_rng(seed).normal(size=(40, 100)).astype(np.float32)
    return init_state({"w": jnp.asarray(w), "b": jnp.ones(3)}, optax.sgd(0.1))


def _two_checkpoints(folder: Path):
    states = {e: _state(e) for e in (1, 2)}
    for e, s in states.items():
        save_checkpoint(folder, s, {"history": [{"epoch": e}]}, epoch=e)
    return states


def _largest_state_file(folder: Path, step: int) -> Path:
    files = [f for f in (folder / str(step) / "state").rglob("*") if f.is_file()]
    return max(files, key=lambda f: f.stat().st_size)


def flip_bit(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def _assert_state_equal(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _damage(folder: Path, step: int, how: str) -> None:
    big = _largest_state_file(folder, step)
    if how == "bit flip":
        flip_bit(big)
    elif how == "truncated":
        big.write_bytes(big.read_bytes()[:100])
    elif how == "deleted":
        big.unlink()
    elif how == "manifest cut":
        (folder / str(step) / "state" / "manifest.ocdbt").write_bytes(b"")


@pytest.mark.parametrize("how, reason", [
    ("bit flip", "checksum"), ("truncated", "cannot be read"), ("deleted", "cannot be read"),
    ("manifest cut", "cannot be read"),
])
def test_damaged_latest_state_falls_back_to_the_newest_intact(tmp_path, how, reason):
    states = _two_checkpoints(tmp_path)
    _damage(tmp_path, 2, how)
    target = _state(0)
    with pytest.warns(DamagedCheckpointWarning, match=f"epoch 2: .*{reason}") as rec:
        state, meta = restore_checkpoint(tmp_path, target)
    assert "using epoch 1" in str(rec[0].message) and str(tmp_path) in str(rec[0].message)
    assert meta["epoch"] == 1 and meta["history"] == [{"epoch": 1}]
    assert "checksum" not in meta  # integrity data stays internal
    _assert_state_equal(state, states[1])


def test_intact_checkpoints_restore_without_a_warning(tmp_path):
    states = _two_checkpoints(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, meta = restore_checkpoint(tmp_path, _state(0))
    assert meta["epoch"] == 2
    _assert_state_equal(state, states[2])


def test_no_intact_checkpoint_is_a_value_error_naming_the_folder(tmp_path):
    save_checkpoint(tmp_path, _state(1), {}, epoch=1)
    flip_bit(_largest_state_file(tmp_path, 1))
    with pytest.raises(ValueError, match=f"no intact checkpoint in '{tmp_path}'.*epoch 1"):
        restore_checkpoint(tmp_path, _state(0))


def test_cut_meta_json_names_the_file(tmp_path):
    save_checkpoint(tmp_path, _state(1), {"history": []}, epoch=1)
    meta_file = tmp_path / "1" / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text()[:7])
    with pytest.raises(ValueError, match=f"{meta_file}.* is not valid JSON"):
        load_meta(tmp_path)
    # With an intact older checkpoint, it is used, saying which file was cut.
    save_checkpoint(tmp_path / "two", _state(1), {"history": []}, epoch=1)
    save_checkpoint(tmp_path / "two", _state(2), {"history": []}, epoch=2)
    cut = tmp_path / "two" / "2" / "meta" / "metadata"
    cut.write_text("")
    with pytest.warns(DamagedCheckpointWarning, match=f"{cut}.*not valid JSON"):
        assert load_meta(tmp_path / "two")["epoch"] == 1


def test_edited_meta_json_fails_its_checksum(tmp_path):
    save_checkpoint(tmp_path, _state(1), {"history": [{"loss": 1.5}]}, epoch=1)
    meta_file = tmp_path / "1" / "meta" / "metadata"
    meta_file.write_text(meta_file.read_text().replace("1.5", "2.5"))
    with pytest.raises(ValueError, match="does not match its SHA-256 checksum"):
        load_meta(tmp_path)


def test_another_structure_is_an_error_not_damage(tmp_path):
    save_checkpoint(tmp_path, _state(1), {}, epoch=1)
    other = init_state({"w": jnp.zeros((40, 99)), "b": jnp.ones(3)}, optax.sgd(0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="another structure"):
            restore_checkpoint(tmp_path, other)


def test_resume_sets_a_damaged_checkpoint_aside_and_matches_an_uninterrupted_run(tmp_path):
    """fit resumes from the newest intact checkpoint; the damaged newer one is renamed (kept),
    the resumed run writes that epoch again, and it ends where an uninterrupted run ends."""

    def loss_fn(params, batch, key):
        return jnp.mean(jnp.square(params["w"] - jnp.mean(batch))) + jnp.sum(params["b"]), {}

    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    kw = dict(key=jax.random.key(0), batch_size=4, checkpoint_every=1, progress=False, log=False)
    full, _ = fit(loss_fn, optax.adam(0.01), _state(7).params, x, epochs=4, **kw)
    fit(loss_fn, optax.adam(0.01), _state(7).params, x, epochs=3,
              checkpoint_dir=tmp_path, **kw)
    assert checkpoint_steps(tmp_path) == [2, 3]
    flip_bit(_largest_state_file(tmp_path, 3))
    with pytest.warns(DamagedCheckpointWarning,
                      # The flipped bit reads back as changed values (checksum) or, when
                      # it lands in a chunk's framing, as an unreadable array: both damage.
                      match="epoch 3: .*(checksum|cannot be read).*resuming from epoch 2"
                            ".*'damaged-3'"):
        resumed, history = fit(loss_fn, optax.adam(0.01), _state(7).params, x, epochs=4,
                                     checkpoint_dir=tmp_path, resume=True, **kw)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert (tmp_path / "damaged-3").is_dir() and latest_checkpoint(tmp_path) == 4
    _assert_state_equal(resumed, full)


def test_replacing_and_removing_touch_only_what_saves_wrote(tmp_path):
    """`replace_checkpoint` leaves one checkpoint (an old one of a higher epoch goes too) and
    every entry no save wrote; `set_aside_steps` moves steps only; `remove_saved` refuses
    anything a save did not write (nothing is deleted then)."""
    state = init_state({"a": jnp.ones(2)}, optax.sgd(1.0))
    folder = tmp_path / "ckpt"
    for epoch in (3, 9):
        save_checkpoint(folder, state, {"v": epoch}, epoch=epoch)
    (folder / "notes.txt").write_text("n")
    (folder / "7x").mkdir()
    replace_checkpoint(folder, state, {"v": 1}, epoch=3)
    assert checkpoint_steps(folder) == [3] and load_meta(folder)["v"] == 1
    assert [p.name for p in other_entries(folder)] == ["7x", "notes.txt"]
    aside = set_aside_steps(folder)
    assert checkpoint_steps(folder) == [] and checkpoint_steps(aside) == [3]
    assert saved_entries(folder) == [aside]
    with pytest.raises(ValueError, match="notes.txt.*not a folder a save wrote"):
        remove_saved([aside, folder / "notes.txt"])
    assert aside.is_dir() and (folder / "notes.txt").exists()
    remove_saved([aside])
    assert sorted(p.name for p in folder.iterdir()) == ["7x", "notes.txt"]
