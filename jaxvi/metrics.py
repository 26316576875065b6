"""Clustering metrics: accuracy under the best one-to-one matching of clusters to labels
(Hungarian algorithm, scipy) and normalised mutual information."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _check(y_true, y_pred):
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"`y_true` and `y_pred` must have the same length; got {y_true.size} and {y_pred.size}."
        )
    if y_true.size == 0:
        raise ValueError("`y_true` must not be empty.")
    return y_true, y_pred


def contingency(y_true, y_pred) -> np.ndarray:
    """Counts n[i, j] of points with the i-th label value and the j-th cluster value.

    Args:
      y_true: (N,) labels.
      y_pred: (N,) cluster assignments.

    Returns:
      (T, P) int64 counts, for the T distinct labels and P distinct clusters (sorted).

    Raises:
      ValueError: lengths that differ, or no points.
    """
    y_true, y_pred = _check(y_true, y_pred)
    _, ti = np.unique(y_true, return_inverse=True)
    _, pi = np.unique(y_pred, return_inverse=True)
    table = np.zeros((ti.max() + 1, pi.max() + 1), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def cluster_accuracy(y_true, y_pred) -> float:
    """Fraction of points correct under the best one-to-one map clusters -> labels.

    Args:
      y_true: (N,) labels.
      y_pred: (N,) cluster assignments.

    Returns:
      The accuracy in [0, 1], a Python float.

    Raises:
      ValueError: lengths that differ, or no points.
    """
    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def nmi(y_true, y_pred) -> float:
    """Normalised mutual information I(T; P) / ((H(T) + H(P)) / 2) (arithmetic mean, as
    scikit-learn's default).

    Args:
      y_true: (N,) labels.
      y_pred: (N,) cluster assignments.

    Returns:
      The NMI in [0, 1], a Python float; 1.0 when both labelings are constant.

    Raises:
      ValueError: lengths that differ, or no points.
    """
    table = contingency(y_true, y_pred).astype(np.float64)
    n = table.sum()
    p = table / n
    pt, pp = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float(np.sum(p[nz] * (np.log(p[nz]) - np.log(np.outer(pt, pp)[nz]))))
    ht = -float(np.sum(pt[pt > 0] * np.log(pt[pt > 0])))
    hp = -float(np.sum(pp[pp > 0] * np.log(pp[pp > 0])))
    if ht == 0.0 and hp == 0.0:
        return 1.0
    denom = 0.5 * (ht + hp)
    return float(max(mi, 0.0) / denom) if denom > 0 else 0.0
