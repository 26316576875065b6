"""jaxvi.em.covariance: the one table of covariance types agrees with scikit-learn's layouts
and parameter counts."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGMM

from jaxvi.em import covariance


@pytest.mark.parametrize("name", covariance.COVARIANCE_TYPES)
def test_covariance_table_matches_sklearn(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    sk = SkGMM(2, covariance_type=name, max_iter=3, random_state=0).fit(x)
    kind = covariance.of(name)
    assert kind.name == name and kind.matrix == (name in ("full", "tied"))
    assert kind.shape(2, 3) == sk.covariances_.shape
    # scikit-learn counts K - 1 weights and K·D means beside the covariances.
    assert kind.n_parameters(2, 3) + 2 * 3 + 1 == sk._n_parameters()
    dense = kind.dense(sk.covariances_, 2, 3)
    assert dense.shape == (2, 3, 3)
    ref = {"full": lambda c: c, "tied": lambda c: np.broadcast_to(c, (2, 3, 3)),
           "diag": lambda c: np.stack([np.diag(v) for v in c]),
           "spherical": lambda c: np.stack([v * np.eye(3) for v in c])}[name](sk.covariances_)
    np.testing.assert_array_equal(dense, ref)
    assert kind.n_point_features(3) == (6 if kind.matrix else 3) + 3
