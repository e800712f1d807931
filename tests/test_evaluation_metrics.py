"""Ranks and metrics on hand-computed examples, plus a brute-force cross-check."""

import math

import numpy as np
import pytest
import torch

from dmesr.evaluation import metrics_from_ranks, ranks_from_scores, summarize

# 5 items; column 0 is padding and gets the highest score on purpose: it must never be ranked.
SCORES = torch.tensor(
    [
        [9.0, 0.1, 0.5, 0.3, 0.9, 0.2],  # target 3 (0.3): items 2 and 4 above -> rank 2
        [9.0, 0.1, 0.5, 0.3, 0.9, 0.2],  # target 4 (0.9): best -> rank 0
        [9.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # constant scores: pessimistic -> rank 4 = n - 1
    ]
)
TARGETS = torch.tensor([3, 4, 2])


def test_ranks_hand_computed_with_padding_ignored_and_pessimistic_ties():
    ranks = ranks_from_scores(SCORES, TARGETS)
    assert ranks.dtype == torch.long
    assert ranks.tolist() == [2, 0, 4]


def test_tie_with_one_item_counts_it_above():
    scores = torch.tensor([[0.0, 0.2, 0.7, 0.7, 0.1]])
    assert ranks_from_scores(scores, torch.tensor([3])).tolist() == [1]
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [1]


def test_excluded_items_do_not_count_and_target_is_always_ranked():
    excluded = torch.zeros_like(SCORES, dtype=torch.bool)
    excluded[0, [2, 4]] = True  # both items above target 3 removed
    excluded[1, 4] = True  # the target itself: still ranked
    excluded[2, [1, 3]] = True  # constant row: n - 1 - 2 excluded
    assert ranks_from_scores(SCORES, TARGETS, excluded).tolist() == [0, 0, 2]


def test_excluded_items_scored_minus_inf_do_not_tie_with_a_minus_inf_target():
    scores = torch.tensor([[0.0, -math.inf, -math.inf, 1.0, -math.inf]])
    excluded = torch.tensor([[False, True, False, False, False]])
    # target 2 at -inf: item 3 above, item 4 ties (above), item 1 excluded
    assert ranks_from_scores(scores, torch.tensor([2]), excluded).tolist() == [2]


def test_ranks_match_brute_force_on_random_scores_with_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40, 13), generator=generator).float()
    targets = torch.randint(1, 13, (40,), generator=generator)
    excluded = torch.rand(40, 13, generator=generator) < 0.3
    ranks = ranks_from_scores(scores, targets, excluded)
    for row in range(40):
        t = int(targets[row])
        expected = sum(
            1
            for item in range(1, 13)
            if item != t and not excluded[row, item] and scores[row, item] >= scores[row, t]
        )
        assert int(ranks[row]) == expected


def test_nan_scores_rejected_but_nan_padding_ignored():
    scores = SCORES.clone()
    scores[1, 5] = math.nan
    with pytest.raises(ValueError, match="NaN in 1 of 3 rows"):
        ranks_from_scores(scores, TARGETS)
    scores = SCORES.clone()
    scores[:, 0] = math.nan
    assert ranks_from_scores(scores, TARGETS).tolist() == [2, 0, 4]


@pytest.mark.parametrize("bad_target", [0, 6])
def test_target_outside_catalogue_rejected(bad_target):
    with pytest.raises(ValueError, match="target ids must lie in 1..5"):
        ranks_from_scores(SCORES, torch.tensor([3, 4, bad_target]))


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match="targets must have shape"):
        ranks_from_scores(SCORES, TARGETS[:2])
    with pytest.raises(ValueError, match="excluded must be a bool tensor"):
        ranks_from_scores(SCORES, TARGETS, torch.zeros(3, 5, dtype=torch.bool))


def test_metrics_hand_computed():
    per_user = metrics_from_ranks(torch.tensor([0, 2, 4, 9]), ks=(1, 3, 5))
    assert list(per_user) == ["HR@1", "HR@3", "HR@5", "NDCG@1", "NDCG@3", "NDCG@5", "MRR@1", "MRR@3", "MRR@5"]
    assert per_user["HR@1"].tolist() == [1, 0, 0, 0]
    assert per_user["HR@3"].tolist() == [1, 1, 0, 0]
    assert per_user["HR@5"].tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(per_user["NDCG@3"], [1.0, 0.5, 0.0, 0.0])  # 1/log2(2+2) = 0.5
    np.testing.assert_allclose(per_user["NDCG@5"], [1.0, 0.5, 1 / math.log2(6), 0.0])
    np.testing.assert_allclose(per_user["MRR@5"], [1.0, 1 / 3, 1 / 5, 0.0])
    np.testing.assert_allclose(per_user["MRR@1"], [1.0, 0.0, 0.0, 0.0])
    means = summarize(per_user)
    assert means["HR@5"] == pytest.approx(0.75)
    assert means["NDCG@5"] == pytest.approx((1.5 + 1 / math.log2(6)) / 4)


def test_metrics_reject_bad_input_and_summarize_empty_is_nan():
    with pytest.raises(ValueError, match="cut-offs must be positive integers"):
        metrics_from_ranks(torch.tensor([0]), ks=(0, 5))
    with pytest.raises(ValueError, match="ranks must be >= 0"):
        metrics_from_ranks(torch.tensor([-1]))
    assert math.isnan(summarize({"HR@5": np.array([])})["HR@5"])
