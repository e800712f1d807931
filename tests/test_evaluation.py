"""Protocols and breakdowns on hand-built splits and tiny fake models."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dmesr.config import EvalConfig
from dmesr.data.batches import evaluation_inputs
from dmesr.data.schema import SequenceSplit
from dmesr.evaluation import breakdown, evaluate, head_items, item_popularity


def make_split(sequences, num_items, valid_negatives=None, test_negatives=None):
    lengths = [len(s) for s in sequences]
    return SequenceSplit(
        name="tiny",
        item_ids=np.array([f"i{i}" for i in range(1, num_items + 1)]),
        user_ids=np.array([f"u{u}" for u in range(len(sequences))]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        flat_items=np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]),
        items=pd.DataFrame({"item": [f"i{i}" for i in range(1, num_items + 1)]}),
        fingerprint="test",
        valid_negatives=None if valid_negatives is None else np.asarray(valid_negatives),
        test_negatives=None if test_negatives is None else np.asarray(test_negatives),
    )


class TableModel(nn.Module):
    """Scores = a fixed row per last history item; records the mode it was called in."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.num_items = table.shape[1] - 1
        self.calls = []

    def predict_scores(self, histories):
        self.calls.append((self.training, torch.is_inference_mode_enabled(), len(histories)))
        return self.table[histories[:, -1]]


def ranked_by_id_model(num_items):
    """Every user gets score(item) = -item, so item 1 is best; column 0 (padding) gets the maximum."""
    row = -torch.arange(num_items + 1, dtype=torch.float32)
    row[0] = 1e9
    return TableModel(row.expand(num_items + 1, -1).clone())


def constant_model(num_items):
    return TableModel(torch.ones(num_items + 1, num_items + 1))


# user 0: long history, truncated to max_len = 2 for the model, but fully excluded
# user 1: the validation target 3 repeats an item of its history: still ranked
SEQUENCES = [[1, 2, 3, 4, 5], [3, 1, 3, 5]]
NUM_ITEMS = 8


def test_full_protocol_excludes_full_history_but_never_the_target():
    split = make_split(SEQUENCES, NUM_ITEMS)
    model = ranked_by_id_model(NUM_ITEMS)
    valid = evaluation_inputs(split, "valid", max_len=2)
    # user 0: target 4, history {1,2,3} excluded (not only the window [2,3]) -> rank 0
    # user 1: target 3, history {3,1}: 1 excluded, 3 is the target -> only item 2 above -> rank 1
    assert evaluate(model, valid, EvalConfig(exclude_history=True)).ranks.tolist() == [0, 1]
    assert evaluate(model, valid, EvalConfig(exclude_history=False)).ranks.tolist() == [3, 2]
    test = evaluation_inputs(split, "test", max_len=2)
    # user 0: target 5, history {1,2,3,4} -> 0; user 1: target 5, history {1,3} -> items 2, 4 above
    assert evaluate(model, test, EvalConfig(exclude_history=True)).ranks.tolist() == [0, 2]


def test_constant_model_gets_worst_rank_after_exclusions():
    split = make_split(SEQUENCES, NUM_ITEMS)
    inputs = evaluation_inputs(split, "test", max_len=2)
    result = evaluate(constant_model(NUM_ITEMS), inputs, EvalConfig(exclude_history=True))
    # n - 1 - (distinct history items other than the target): user 0 excludes 4, user 1 excludes 2
    assert result.ranks.tolist() == [NUM_ITEMS - 1 - 4, NUM_ITEMS - 1 - 2]
    no_exclusion = evaluate(constant_model(NUM_ITEMS), inputs, EvalConfig(exclude_history=False))
    assert no_exclusion.ranks.tolist() == [NUM_ITEMS - 1, NUM_ITEMS - 1]
    assert no_exclusion.metrics["HR@5"] == 0.0


def test_result_metrics_are_means_of_per_user_values():
    split = make_split(SEQUENCES, NUM_ITEMS)
    result = evaluate(ranked_by_id_model(NUM_ITEMS), evaluation_inputs(split, "valid", 2),
                      EvalConfig(ks=(1, 5), exclude_history=True))
    assert set(result.metrics) == {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (1, 5)}
    assert result.per_user["HR@1"].tolist() == [1.0, 0.0]
    assert result.per_user["NDCG@5"].tolist() == pytest.approx([1.0, 1 / math.log2(3)])
    for name, values in result.per_user.items():
        assert result.metrics[name] == pytest.approx(values.mean())


def test_full_protocol_matches_brute_force_reference_for_any_batch_size():
    rng = np.random.default_rng(0)
    num_items = 15
    sequences = [rng.integers(1, num_items + 1, size=rng.integers(3, 12)) for _ in range(30)]
    split = make_split(sequences, num_items)
    inputs = evaluation_inputs(split, "test", max_len=4)
    table = torch.from_numpy(rng.integers(0, 4, size=(num_items + 1, num_items + 1))).float()  # many ties
    model = TableModel(table)
    expected = []
    for seq in sequences:
        history, target = seq[:-1], seq[-1]
        scores = table[history[-1]]
        others = [i for i in range(1, num_items + 1) if i != target and i not in set(history)]
        expected.append(sum(1 for i in others if scores[i] >= scores[target]))
    for batch_size in (1, 7, 1024):
        result = evaluate(model, inputs, EvalConfig(batch_size=batch_size, exclude_history=True))
        assert result.ranks.tolist() == expected
    assert model.calls[-1][2] == 30  # batch_size 1024: one call for all users


def test_model_mode_restored_and_scoring_runs_in_inference_mode():
    split = make_split(SEQUENCES, NUM_ITEMS)
    inputs = evaluation_inputs(split, "valid", 2)
    model = ranked_by_id_model(NUM_ITEMS)
    model.train()
    evaluate(model, inputs, EvalConfig(batch_size=1))
    assert model.training
    assert model.calls == [(False, True, 1), (False, True, 1)]
    model.eval()
    evaluate(model, inputs, EvalConfig(exclude_history=True))
    assert not model.training


def test_sampled_protocol_ranks_among_exactly_one_plus_k_candidates():
    negatives = [[6, 7, 8], [2, 6, 7]]
    split = make_split(SEQUENCES, NUM_ITEMS, valid_negatives=negatives, test_negatives=negatives)
    inputs = evaluation_inputs(split, "valid", 2)
    config = EvalConfig(protocol="sampled")
    # constant scores: the target ties with all k = 3 negatives -> rank k
    assert evaluate(constant_model(NUM_ITEMS), inputs, config).ranks.tolist() == [3, 3]
    # score = -id: user 0 target 4 beats 6, 7, 8; user 1 target 3 loses only to negative 2.
    # Non-candidate items 1, 2 (user 0) score higher but are not among the candidates.
    assert evaluate(ranked_by_id_model(NUM_ITEMS), inputs, config).ranks.tolist() == [0, 1]


def test_sampled_protocol_errors():
    split = make_split(SEQUENCES, NUM_ITEMS)
    inputs = evaluation_inputs(split, "valid", 2)
    with pytest.raises(ValueError, match="sampled protocol needs negatives"):
        evaluate(constant_model(NUM_ITEMS), inputs, EvalConfig(protocol="sampled"))
    clashing = make_split(SEQUENCES, NUM_ITEMS, valid_negatives=[[4, 7], [2, 6]])
    with pytest.raises(ValueError, match="negatives contain the target item for 1 users"):
        evaluate(constant_model(NUM_ITEMS), evaluation_inputs(clashing, "valid", 2), EvalConfig(protocol="sampled"))


def test_bad_protocol_model_output_and_nan_rejected():
    split = make_split(SEQUENCES, NUM_ITEMS)
    inputs = evaluation_inputs(split, "valid", 2)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'loo'; known: full, sampled"):
        evaluate(constant_model(NUM_ITEMS), inputs, EvalConfig(protocol="loo"))
    too_narrow = constant_model(NUM_ITEMS)
    too_narrow.num_items = NUM_ITEMS + 1
    with pytest.raises(ValueError, match=r"returned shape \(2, 9\), expected \[2, 10\]"):
        evaluate(too_narrow, inputs, EvalConfig(exclude_history=True))
    broken = constant_model(NUM_ITEMS)
    broken.table[:, 3] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(broken, inputs, EvalConfig(exclude_history=True))


# training parts: [1,2,3], [2,2], [4], [5,2,6]  ->  counts: 1:1, 2:4, 3:1, 4:1, 5:1, 6:1, 7:0, 8:0
BREAKDOWN_SEQUENCES = [[1, 2, 3, 4, 5], [2, 2, 1, 3], [4, 5, 6], [5, 2, 6, 7, 1]]


def test_item_popularity_counts_training_parts_only():
    split = make_split(BREAKDOWN_SEQUENCES, NUM_ITEMS)
    assert item_popularity(split).tolist() == [0, 1, 4, 1, 1, 1, 1, 0, 0]


def test_head_items_most_popular_with_ties_broken_by_smaller_id():
    split = make_split(BREAKDOWN_SEQUENCES, NUM_ITEMS)
    assert head_items(split, fraction=0.25).tolist() == [1, 2]  # round(0.25 * 8) = 2: item 2, then tie -> 1
    assert head_items(split, fraction=0.5).tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="head fraction must lie strictly between 0 and 1"):
        head_items(split, fraction=1.0)


def test_breakdown_groups_partition_users_and_average_their_members():
    split = make_split(BREAKDOWN_SEQUENCES, NUM_ITEMS)
    inputs = evaluation_inputs(split, "test", max_len=3)  # targets 5, 3, 6, 1
    config = EvalConfig(ks=(1, 3), head_fraction=0.25, exclude_history=True)  # head items {1, 2}
    result = evaluate(ranked_by_id_model(NUM_ITEMS), inputs, config)
    table = breakdown(result, inputs, split, config)
    assert table["head"]["num_users"] == 1 and table["tail"]["num_users"] == 3  # only user 3 (target 1)
    assert table["head"]["num_head_items"] == 2
    # training lengths 3, 2, 1, 3 -> median 2.5: short = users 1, 2; long = users 0, 3
    assert table["short"]["median_train_length"] == 2.5
    assert table["short"]["num_users"] == 2 and table["long"]["num_users"] == 2
    assert result.ranks.tolist() == [0, 0, 3, 0]  # user 2: target 6 after excluded 4, 5 -> 1, 2, 3 above
    assert table["new"]["num_users"] == 4 and table["repeat"]["num_users"] == 0  # no target was seen before
    assert table["head"]["MRR@3"] == 1.0 and table["tail"]["HR@3"] == pytest.approx(2 / 3)
    for name, values in result.per_user.items():
        assert table["long"][name] == pytest.approx(values[[0, 3]].mean())
        assert table["short"][name] == pytest.approx(values[[1, 2]].mean())
        # each pair of groups partitions the users, so the weighted means add up to the overall mean
        for first, second in (("head", "tail"), ("short", "long")):
            weighted = [table[group][name] * table[group]["num_users"] for group in (first, second)]
            pooled = sum(weighted) / 4
            assert pooled == pytest.approx(result.metrics[name])


def test_breakdown_rejects_mismatched_inputs():
    split = make_split(BREAKDOWN_SEQUENCES, NUM_ITEMS)
    inputs = evaluation_inputs(split, "test", max_len=3)
    result = evaluate(constant_model(NUM_ITEMS), inputs, EvalConfig(exclude_history=True))
    with pytest.raises(ValueError, match="must cover the same users"):
        breakdown(result, inputs, make_split(SEQUENCES, NUM_ITEMS), EvalConfig(exclude_history=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ranks_match_cpu():
    rng = np.random.default_rng(1)
    num_items = 40
    sequences = [rng.integers(1, num_items + 1, size=rng.integers(3, 30)) for _ in range(50)]
    catalogue = np.arange(1, num_items + 1)
    negatives = np.stack([rng.choice(np.setdiff1d(catalogue, s), 5, replace=False) for s in sequences])
    split = make_split(sequences, num_items, test_negatives=negatives)
    inputs = evaluation_inputs(split, "test", max_len=8)
    table = torch.from_numpy(rng.integers(0, 6, size=(num_items + 1, num_items + 1))).float()
    for config in (EvalConfig(batch_size=16), EvalConfig(exclude_history=False), EvalConfig(protocol="sampled")):
        on_cpu = evaluate(TableModel(table), inputs, config)
        on_cuda = evaluate(TableModel(table.cuda()), inputs, config, device="cuda")
        assert on_cuda.ranks.tolist() == on_cpu.ranks.tolist()
        assert on_cuda.metrics == on_cpu.metrics
