import numpy as np
import pytest
import torch

from dmesr.data.batches import TrainWindows, evaluation_inputs, pad_left
from tests.conftest import make_tiny_split


def test_pad_left_keeps_the_most_recent_items():
    out = pad_left([np.array([1, 2, 3, 4]), np.array([7]), np.array([], dtype=np.int64)], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 7], [0, 0, 0]]


def test_last_window_per_user_excludes_valid_and_test_items():
    split = make_tiny_split(num_users=3, length=12)
    windows = TrainWindows(split, max_len=4)
    assert len(windows) == 3
    for row, user in enumerate(windows.users):
        assert windows[row].tolist() == split.sequence(user)[-7:-2].tolist()


def test_all_windows_cover_every_training_transition_once():
    split = make_tiny_split(num_users=5, length=12)
    windows = TrainWindows(split, max_len=4, all_windows=True)
    for user in range(split.num_users):
        part = split.sequence(user)[:-2]
        expected = sorted(zip(part[:-1], part[1:]))
        rows = windows.windows[torch.from_numpy(windows.users == user)]
        seen = sorted((a, b) for row in rows.tolist() for a, b in zip(row[:-1], row[1:]) if a and b)
        assert seen == expected


def test_evaluation_inputs_targets_and_full_history():
    split = make_tiny_split(num_users=2, length=12)
    valid = evaluation_inputs(split, "valid", max_len=3)
    test = evaluation_inputs(split, "test", max_len=3)
    seq = split.sequence(1)
    assert valid.targets[1] == seq[-2] and test.targets[1] == seq[-1]
    assert valid.histories[1].tolist() == seq[-5:-2].tolist()
    # the seen set is the whole history, not only the truncated model input
    start, end = test.seen_offsets[1], test.seen_offsets[2]
    assert test.seen_items[start:end].tolist() == seq[:-1].tolist()
    assert test.negatives.shape == (2, 5)


def test_unknown_stage():
    with pytest.raises(ValueError, match="unknown evaluation stage 'train'"):
        evaluation_inputs(make_tiny_split(), "train", 3)
