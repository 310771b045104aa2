"""Evaluation metrics: mean log-likelihood with its error bar, Amari distance, mean correlation coefficient."""

from __future__ import annotations

import math

import numpy as np


def mean_and_2se(values: np.ndarray) -> tuple[float, float]:
    """Mean of per-sample values and two standard errors of that mean, 2·s/√n (s: sample std, ddof=1)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(2.0 * v.std(ddof=1) / math.sqrt(v.size))


def mean_and_2se_distinct(values: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """:func:`mean_and_2se` over the distinct rows only: ``mask`` (e.g. ``distinct_rows_mask`` of the test rows,
    True at the first copy of each row) selects the values, so the mean and n = mask.sum() count each row once.

    Repeated rows are not independent draws; counting them would shrink the error bar without adding information.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    m = np.asarray(mask, dtype=bool).ravel()
    if m.shape != v.shape:
        raise ValueError(f"mask has {m.size} entries but there are {v.size} values")
    return mean_and_2se(v[m])


def amari_distance(P: np.ndarray) -> float:
    """Amari distance of a square matrix P (e.g. W_est·A): 0 exactly when P is a scaled permutation.

    With Q = |P|²: d(P) = (1/2D) [Σ_i (Σ_j Q_ij / max_j Q_ij − 1) + Σ_j (Σ_i Q_ij / max_i Q_ij − 1)],
    the squared-ratio form used by Picard and the ICA literature; it lies in [0, D − 1].
    """
    Q = np.abs(np.asarray(P, dtype=np.float64)) ** 2
    rows = (Q.sum(1) / Q.max(1) - 1.0).sum()
    cols = (Q.sum(0) / Q.max(0) - 1.0).sum()
    return float((rows + cols) / (2 * Q.shape[0]))


def mean_corr_coef(z: np.ndarray, s: np.ndarray) -> float:
    """Mean absolute Pearson correlation between estimated and true sources after the best one-to-one matching
    (Hungarian algorithm on |corr|). 1 means every source is recovered up to scale and sign."""
    from scipy.optimize import linear_sum_assignment

    z = np.asarray(z, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    d = z.shape[1]
    corr = np.abs(np.corrcoef(z, s, rowvar=False)[:d, d:])
    corr = np.nan_to_num(corr)
    r, c = linear_sum_assignment(-corr)
    return float(corr[r, c].mean())
