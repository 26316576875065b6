"""The checks of the hierarchical VAE's training recipe (`jaxvi.vae.recipe.train_vae`), run
before anything is trained: its inputs (`check_train_inputs`), a fresh run's checkpoint folder
(`check_fresh_checkpoint_dir`) and, when resuming, that a checkpoint was written for the model
being trained. Every public name here is importable from `jaxvi.vae.recipe` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from jaxvi._validate import check_gaussian_scale, check_unit_interval
from jaxvi.data import check_data
from jaxvi.training.checkpoint import latest_checkpoint
from jaxvi.training.loop import check_batch_size_on_mesh
from jaxvi.vae.model import VAEConfig

if TYPE_CHECKING:  # recipe imports this module
    from jaxvi.vae.recipe import TrainConfig

PRETRAIN_DIR = "pretrain"  # the subfolder of a `train_vae` checkpoint folder for pretraining


def check_train_inputs(
    x_train, model_config: VAEConfig, train_config: TrainConfig, *, x_test=None,
    mesh: jax.sharding.Mesh | None = None, where: str = "",
) -> None:
    """Check everything `train_vae` needs of its inputs, before anything is trained.

    The data's shape, features and values (in [0, 1] for a Bernoulli decoder; for a Gaussian
    one of a scale float32 training holds, `jaxvi._validate.check_gaussian_scale`), a
    `batch_size` no larger than the training set (and a multiple of the mesh's devices), and,
    with pretraining, at least `components` training points for the GMM on the codes.

    Args:
      x_train: (N, D) training data.
      model_config: the model.
      train_config: the recipe.
      x_test: (M, D) held-out data, or None.
      mesh: the mesh of data-parallel training, or None.
      where: prefix of the messages, e.g. "`--data` 'x.npy': ".

    Raises:
      ValueError: naming the argument (after `where`, if given).
    """
    mc, tc = model_config, train_config
    check_data("x_train", x_train, mc.data_dim)
    if x_test is not None:
        check_data("x_test", x_test, mc.data_dim)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x is None:
            continue
        if mc.likelihood == "bernoulli":
            check_unit_interval(name, x, "a Bernoulli decoder (likelihood='bernoulli')")
        else:
            check_gaussian_scale(f"{where}`{name}`", x, mc.min_scale)
    n = np.shape(x_train)[0]
    if n < tc.batch_size:
        raise ValueError(
            f"`batch_size` ({tc.batch_size}) must not exceed the number of training points "
            f"({n}); use a batch size of at most {n}."
        )
    if tc.pretrain_epochs > 0 and n < mc.components:
        raise ValueError(
            f"`components` ({mc.components}) must not exceed the number of training points "
            f"({n}): the prior starts from a {mc.components}-component GMM on their codes."
        )
    check_batch_size_on_mesh(tc.batch_size, mesh)


def check_fresh_checkpoint_dir(directory, resume: bool) -> None:
    """Check that a run that does not resume does not start in a folder holding checkpoints.

    Of the run or of its pretraining, in `PRETRAIN_DIR`: its saves would collide with them,
    and a user who meant to resume would lose that run.

    Args:
      directory: the checkpoint folder, or None (nothing to check).
      resume: whether the run resumes (nothing to check).

    Raises:
      ValueError: the folder already holds checkpoints.
    """
    if directory is None or resume:
        return
    step = latest_checkpoint(directory)
    pre = latest_checkpoint(Path(directory) / PRETRAIN_DIR)
    if step is not None or pre is not None:
        latest = f"epoch {step}" if step is not None else f"pretraining epoch {pre}"
        raise ValueError(
            f"{str(directory)!r} already holds checkpoints (latest: {latest}); resume from "
            "it (`resume=True`, `--resume`), write to another folder, or delete it first "
            "(`jaxvi train --overwrite`)."
        )


def _check_saved_config(directory, saved: dict, mc: VAEConfig, tc: TrainConfig | None = None,
                        train_fields: Sequence[str] = ()) -> None:
    """The checkpoint in `directory` was written for this model (and these `train_fields`)."""
    if "model_config" not in saved:
        raise ValueError(f"the checkpoint in {str(directory)!r} has no model config: it was "
                         "not written by `train_vae`.")
    saved_cfg = VAEConfig.from_dict(saved["model_config"])
    if saved_cfg != mc:
        raise ValueError(
            f"the checkpoint in {str(directory)!r} was written for model config "
            f"{saved_cfg}, not {mc}."
        )
    for name in train_fields:
        was = saved.get("train_config", {}).get(name)
        if was != getattr(tc, name):
            raise ValueError(f"the checkpoint in {str(directory)!r} was written with `{name}` "
                             f"{was!r}, not {getattr(tc, name)!r}.")
