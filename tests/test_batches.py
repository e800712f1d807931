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


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_strided_windows_train_every_transition_once_with_enough_context(stride):
    split = make_tiny_split(num_users=5, length=14)  # train parts of 12 items
    windows = TrainWindows(split, max_len=4, stride=stride)
    inputs, targets = windows.windows[:, :-1], windows.windows[:, 1:]
    kept = torch.arange(4) >= 4 - windows.trained.unsqueeze(1)  # what loss_terms keeps of each window
    trained = []
    for row in range(len(windows)):
        for position in torch.nonzero(kept[row] & (inputs[row] > 0)).flatten().tolist():
            context = inputs[row, : position + 1]
            trained.append((int(windows.users[row]), tuple(context[context > 0].tolist()), int(targets[row, position])))
    for user in range(split.num_users):
        part = split.sequence(user)[:-2].tolist()
        # each of the 11 transitions once, with at least the max_len - stride + 1 items before it as context
        # (stride 1: all max_len of them)
        seen = sorted((context[-1], target) for who, context, target in trained if who == user)
        assert seen == sorted(zip(part[:-1], part[1:]))
        for who, context, target in trained:
            if who == user:
                j = part.index(target)
                assert list(context) == part[j - len(context) : j] and len(context) >= min(j, 4 - stride + 1)
    assert windows.covered_interactions == windows.train_interactions


def test_strided_loss_trains_only_each_windows_last_targets():
    from dmesr.config import load_config
    from dmesr.models import build_model
    from dmesr.models.item_encoders import build_item_representation
    from dmesr.models.losses import loss_terms

    config = load_config(overrides=["model.hidden_size=8", "model.num_layers=1", "model.num_heads=1",
                                    "model.dropout=0", "data.max_len=4", "train.window_stride=1"])
    torch.manual_seed(0)
    model = build_model(config.model, build_item_representation(config.items, 30, 8, None), 4)
    windows = TrainWindows(make_tiny_split(num_users=3, length=8), max_len=4, stride=1)
    last_only = loss_terms(model, windows.windows, config.train, torch.ones(len(windows), dtype=torch.int64))["rec"]
    hidden, table = model.hidden_and_table(windows.windows[:, :-1])
    expected = torch.nn.functional.cross_entropy(hidden[:, -1] @ table[1:].T, windows.windows[:, -1] - 1)
    assert torch.allclose(last_only, expected, atol=1e-5)  # stride 1: the loss at each prefix's last position
