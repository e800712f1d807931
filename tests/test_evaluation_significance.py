"""Paired significance tests on inputs whose results are known by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from dmesr.evaluation import paired_test

CANDIDATE = np.array([0.30, 0.32, 0.31, 0.35])
BASELINE = np.array([0.28, 0.30, 0.30, 0.31])


def test_ttest_hand_computed():
    # differences 0.02, 0.02, 0.01, 0.04: mean 0.0225, sd sqrt(4.75e-4 / 3), t = mean / (sd / sqrt(4))
    t = 0.0225 / (math.sqrt(4.75e-4 / 3) / 2)
    result = paired_test(CANDIDATE, BASELINE, method="ttest")
    assert result["statistic"] == pytest.approx(t)  # ~3.576
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(t, df=3))
    assert result["mean_diff"] == pytest.approx(0.0225)
    assert result["rel_improvement_pct"] == pytest.approx(100 * 0.0225 / 0.2975)


def test_direction_follows_candidate_minus_baseline():
    swapped = paired_test(BASELINE, CANDIDATE)
    assert swapped["statistic"] < 0 and swapped["mean_diff"] == pytest.approx(-0.0225)


def test_wilcoxon_exact_p_value_when_every_difference_favours_the_candidate():
    # 5 pairs, all differences positive and distinct: exact two-sided p = 2 / 2**5
    a = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    b = a - np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    result = paired_test(a, b, method="wilcoxon")
    assert result["statistic"] == 0.0
    assert result["p_value"] == pytest.approx(0.0625)


@pytest.mark.parametrize("method", ["ttest", "wilcoxon"])
def test_identical_samples_are_not_significant(method):
    result = paired_test(CANDIDATE, CANDIDATE.copy(), method=method)
    assert result == {"statistic": 0.0, "p_value": 1.0, "mean_diff": 0.0, "rel_improvement_pct": 0.0}


def test_zero_baseline_gives_nan_relative_improvement():
    assert math.isnan(paired_test(np.array([0.1, 0.2]), np.zeros(2))["rel_improvement_pct"])


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match="unknown significance test 'sign'; known: ttest, wilcoxon"):
        paired_test(CANDIDATE, BASELINE, method="sign")
    with pytest.raises(ValueError, match="equal length"):
        paired_test(CANDIDATE, BASELINE[:3])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_test(CANDIDATE[:1], BASELINE[:1])
    with pytest.raises(ValueError, match="NaN"):
        paired_test(np.array([0.1, np.nan]), np.array([0.1, 0.2]))
