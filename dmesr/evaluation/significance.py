"""Paired significance tests between a candidate model and a baseline.

Pairs are either per-seed means (one value per seed, both models trained with the same seeds) or
per-user values from :class:`~dmesr.evaluation.protocols.EvalResult` (same users, same order).
``a`` is the candidate and ``b`` the baseline, so a positive statistic and ``mean_diff`` mean the
candidate is better.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

METHODS = ("ttest", "wilcoxon")


def paired_test(a: np.ndarray, b: np.ndarray, method: str = "ttest") -> dict[str, float]:
    """Two-sided paired test of ``a`` (candidate) against ``b`` (baseline).

    Returns ``statistic``, ``p_value``, ``mean_diff = mean(a - b)`` and
    ``rel_improvement_pct = 100 * (mean(a) - mean(b)) / mean(b)`` (NaN when ``mean(b)`` is 0).
    Identical samples (every difference 0) cannot be told apart: statistic 0, p-value 1.
    """
    if method not in METHODS:
        raise ValueError(f"unknown significance test {method!r}; known: {', '.join(METHODS)}")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired samples must be 1-D arrays of equal length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {len(a)}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired samples contain NaN")
    differences = a - b
    baseline_mean = float(b.mean())
    summary = {
        "mean_diff": float(differences.mean()),
        "rel_improvement_pct": 100.0 * (float(a.mean()) - baseline_mean) / baseline_mean if baseline_mean else math.nan,
    }
    if not differences.any():
        return {"statistic": 0.0, "p_value": 1.0, **summary}
    test = stats.ttest_rel(a, b) if method == "ttest" else stats.wilcoxon(a, b)
    return {"statistic": float(test.statistic), "p_value": float(test.pvalue), **summary}
