"""A first fit compiles few programs (issue 27: each program costs tracing and lowering in every
fresh process, even with the persistent cache warm): a GaussianMixture fit compiled 130 (102 of
them the eager operations of the partial_fit state every fit makes), a
BayesianGaussianMixture fit 49; now 10 and 13. The data shapes here are used by no other test,
so the counts are those of a fresh process (or fewer, where another test compiled a program of
the same shapes first)."""

import logging

import jax
import numpy as np
import pytest

from jaxvi.estimators import BayesianGaussianMixture, GaussianMixture


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])


def _programs(fit):
    handler, logger = _Compiles(), logging.getLogger("jax")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with jax.log_compiles(True):
            fit()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return handler.names


@pytest.mark.parametrize("cls,most", [(GaussianMixture, 10), (BayesianGaussianMixture, 13)])
def test_a_first_fit_compiles_few_programs(cls, most):
    x = np.random.default_rng(0).normal(size=(43, 7))  # shapes no other test uses
    names = _programs(lambda: cls(n_components=2, random_state=0).fit(x))
    assert len(names) <= most, names
