"""`jaxvi.metrics`: the clustering metrics match scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from jaxvi import metrics


def test_metrics_match_references():
    r = np.random.default_rng(0)
    y = r.integers(0, 5, 200)
    noisy = np.where(r.random(200) < 0.2, r.integers(0, 5, 200), y)
    perm = np.array([3, 0, 4, 1, 2])
    pred = perm[noisy]
    assert metrics.cluster_accuracy(y, pred) == pytest.approx(np.mean(noisy == y))
    assert metrics.cluster_accuracy(y, perm[y]) == 1.0
    np.testing.assert_allclose(metrics.nmi(y, pred), normalized_mutual_info_score(y, pred))
    other = r.integers(0, 3, 200)
    np.testing.assert_allclose(metrics.nmi(y, other), normalized_mutual_info_score(y, other))
    with pytest.raises(ValueError, match="same length"):
        metrics.cluster_accuracy(y, pred[:-1])
