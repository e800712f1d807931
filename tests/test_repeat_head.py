"""The repeat-aware head (model.repeat_head): shapes, causality, a closed gate, learning on repeat data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dmesr.config import DataConfig, ModelConfig, TrainConfig, config_hash, load_config
from dmesr.data import build_split
from dmesr.data.batches import TrainWindows
from dmesr.data.schema import RawDataset
from dmesr.models import IDEmbedding, build_model
from dmesr.models.losses import loss_terms, sequence_loss, total_loss
from dmesr.models.repeats import history_features
from dmesr.training.run import train_run
from dmesr.training.trainer import parameter_groups

BACKBONES = ["sasrec", "bert4rec", "gru4rec"]


def small_model(name: str, repeat_head: bool, num_items: int = 20, max_len: int = 8, context: int = 256):
    torch.manual_seed(0)
    config = ModelConfig(name=name, hidden_size=16, num_layers=1, num_heads=1, repeat_head=repeat_head,
                         repeat_context=context)
    return build_model(config, IDEmbedding(num_items, 16), max_len)


@pytest.mark.parametrize("name", BACKBONES)
def test_shapes_and_a_finite_loss_with_gradients_for_the_head(name):
    model = small_model(name, repeat_head=True)
    windows = torch.randint(1, 21, (4, 9))
    windows[0, :5] = 0  # a left-padded short window
    loss = sequence_loss(model, windows, TrainConfig())
    loss.backward()
    assert torch.isfinite(loss) and model.repeat_head.gate.weight.grad.abs().sum() > 0
    assert model.repeat_head.score[0].weight.grad.abs().sum() > 0
    scores = model.predict_scores(windows[:, 1:])
    assert scores.shape == (4, 21) and torch.isfinite(scores[:, 1:]).all()
    assert torch.allclose(scores[:, 1:].exp().sum(dim=1), torch.ones(4), atol=1e-4)  # log p of a mixture


def test_features_count_recency_and_each_item_once():
    _, features, candidate, gate = history_features(torch.tensor([[0, 3, 5, 3, 3]]))
    last = candidate[0, -1]
    assert last.tolist() == [False, False, True, False, True]  # item 5 at 2, item 3's last occurrence at 4
    assert features[0, -1, 4, 0].expm1().item() == pytest.approx(3.0)  # item 3 three times
    assert features[0, -1, 2, 1].expm1().item() == pytest.approx(2.0)  # item 5 two steps ago
    assert gate[0, -1, 0].item() == pytest.approx(0.5) and gate[0, 0, 0].item() == 0.0  # 2 repeats of 4; padding


def test_no_future_item_reaches_a_position():
    prefix = torch.tensor([[0, 4, 2, 4, 7, 2, 9, 4]])
    changed = prefix.clone()
    changed[0, 5:] = torch.tensor([4, 4, 1])  # rewrite what comes after position 4
    (_, features, candidate, gate), (_, features_changed, candidate_changed, gate_changed) = (
        history_features(p) for p in (prefix, changed))
    assert torch.equal(candidate[:, :5], candidate_changed[:, :5]) and torch.equal(gate[:, :5], gate_changed[:, :5])
    used = candidate[:, :5, :, None]  # the features of non-candidates are never read
    assert torch.equal(features[:, :5] * used, features_changed[:, :5] * used)
    # the training target of a position is never among its candidates: next-item and cloze backbones
    for name in BACKBONES:
        model = small_model(name, repeat_head=True)
        windows = torch.tensor([[0, 4, 2, 4, 7, 2, 9, 4, 3]])
        inputs, targets = model.training_inputs(windows)
        prefix = model.repeat_prefix(inputs, targets)
        _, _, candidate, _ = history_features(prefix)
        for position in torch.nonzero(targets[0] > 0).flatten().tolist():
            history = windows[0, : position + 1] if name != "bert4rec" else windows[0, 1:][:position]
            assert sorted(set(prefix[0][candidate[0, position]].tolist())) == sorted(set(history.tolist()) - {0})


@pytest.mark.parametrize("name", BACKBONES)
def test_a_closed_gate_ranks_exactly_like_the_plain_backbone(name):
    plain, repeat = small_model(name, repeat_head=False), small_model(name, repeat_head=True)
    repeat.load_state_dict({**plain.state_dict(), **{k: v for k, v in repeat.state_dict().items()
                                                      if k.startswith("repeat_head.")}})
    with torch.no_grad():
        repeat.repeat_head.gate.weight.zero_()
        repeat.repeat_head.gate.bias.fill_(-torch.inf)
    plain.eval(), repeat.eval()
    histories = torch.randint(0, 21, (6, 8))
    expected = plain.predict_scores(histories)[:, 1:].log_softmax(dim=1)
    assert torch.equal(repeat.predict_scores(histories)[:, 1:], expected)


def test_the_head_draws_no_random_number_of_the_backbone():
    plain, repeat = small_model("sasrec", repeat_head=False), small_model("sasrec", repeat_head=True)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, repeat.state_dict()[key]), key


def test_earlier_items_count_and_are_candidates_until_the_window_repeats_them():
    # earlier 7, 7, 2 (times -3, -2, -1), then the prefix 3, 7
    slots, features, candidate, gate = history_features(torch.tensor([[3, 7]]), torch.tensor([[0, 7, 7, 2]]),
                                                        num_items=9, context=5)
    assert slots[0].tolist() == [3, 7, 7, 2]  # the prefix, then the earlier items by count
    assert candidate[0].tolist() == [[True, False, True, True], [True, True, False, True]]
    assert features[0, 0, 2, 0].expm1().item() == pytest.approx(2.0)  # item 7 twice before the window
    assert features[0, 0, 2, 1].expm1().item() == pytest.approx(2.0)  # last seen two steps before position 0
    assert features[0, 1, 1, 0].expm1().item() == pytest.approx(3.0)  # at position 1: three times, just now
    assert features[0, 1, 1, 1].item() == 0.0 and features[0, 1, 1, 2].item() == pytest.approx(3 / 5)
    assert gate[0, 1, 0].item() == pytest.approx(2 / 5) and gate[0, 1, 1].expm1().item() == pytest.approx(5.0)
    # a cap keeps the most often consumed earlier items; counts and the history length still see them all
    slots, features, candidate, gate = history_features(torch.tensor([[3, 4]]), torch.tensor([[0, 7, 7, 2]]),
                                                        num_items=9, context=1)
    assert slots[0].tolist() == [3, 4, 7] and gate[0, 1, 1].expm1().item() == pytest.approx(5.0)


def _candidate_features(slots, features, candidate, gate, position: int) -> tuple[dict, list]:
    """``{item: features}`` of a position's candidates and its gate features, whatever the slot layout."""
    items = slots[0][candidate[0, position]].tolist()
    values = features[0, position][candidate[0, position]].numpy().round(5).tolist()
    return dict(zip(items, map(tuple, values))), gate[0, position].numpy().round(5).tolist()


@pytest.mark.parametrize("name", BACKBONES)
def test_a_training_position_sees_what_inference_sees_after_the_same_history(name):
    """Each training position's candidates, counts, recency and gate features, with the items before the
    window, equal those of an inference over the user's whole history up to that position: the earlier
    items are placed right, and nothing after a position (its target included) reaches it."""
    model = small_model(name, repeat_head=True, max_len=6)
    generator = torch.Generator().manual_seed(3)
    history = torch.randint(1, 6, (1, 20), generator=generator)  # five items: many repeats
    windows, earlier = history[:, -7:], history[:, :-7]  # a training window of max_len + 1, and before it
    inputs, targets = model.training_inputs(windows)
    training = history_features(model.repeat_prefix(inputs, targets), model.repeat_earlier(windows, earlier), 20,
                                 context=256)
    for position in torch.nonzero(targets[0] > 0).flatten().tolist():
        seen = history[:, : 14 + position]  # everything before the position's target
        assert targets[0, position].item() == history[0, seen.shape[1]].item()
        window, before = seen[:, -6:], seen[:, :-6]
        inference = history_features(window, before, 20, context=256, last=1)  # the last position only
        assert _candidate_features(*training, position) == _candidate_features(*inference, -1)
        every_position = history_features(window, before, 20, context=256)
        assert all(torch.equal(a[:, -1:], b) for a, b in zip(every_position[1:], inference[1:]))


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_a_future_item_never_changes_a_training_score(name):
    """A next-item position's loss, with the items before the window, is the same whatever follows its target
    (BERT4Rec's cloze encoder reads both sides by design; its head's features are checked above)."""
    model = small_model(name, repeat_head=True, max_len=6)
    model.eval()  # no dropout: the two losses differ only by the data
    earlier = torch.tensor([[0, 9, 9, 4, 7]])
    windows = torch.tensor([[1, 4, 2, 4, 7, 2, 9]])
    changed = windows.clone()
    changed[0, 5:] = torch.tensor([3, 3])  # the items after the target of position 3

    def first_positions_loss(rows: torch.Tensor) -> torch.Tensor:
        inputs, targets = model.training_inputs(rows)
        targets[:, 4:] = 0  # score positions 0..3 only
        hidden, table = model.hidden_and_table(inputs)
        return model.repeat_head.loss(hidden, table, model.repeat_prefix(inputs, targets), targets,
                                      earlier=model.repeat_earlier(rows, earlier))

    assert torch.equal(first_positions_loss(windows), first_positions_loss(changed))


def test_the_whole_history_head_equals_the_window_head_when_the_history_fits():
    """Same weights, histories no longer than the window: the same loss and the same scores."""
    window_only, whole = small_model("sasrec", True, context=0), small_model("sasrec", True, context=256)
    whole.load_state_dict(window_only.state_dict())
    window_only.eval(), whole.eval()  # no dropout: the two differ only by the head's reach
    windows = torch.randint(1, 21, (4, 9))
    windows[0, :5] = 0
    train_windows_earlier = torch.zeros(4, 3, dtype=torch.int64)  # nobody has items before the window
    assert torch.equal(sequence_loss(window_only, windows, TrainConfig()),
                       total_loss(whole, loss_terms(whole, windows, TrainConfig(), earlier=train_windows_earlier)))
    assert not window_only.reads_full_history and whole.reads_full_history
    histories = windows[:, 3:]  # at most 6 items: shorter than the window, as the evaluation pads them
    assert torch.equal(window_only.predict_scores(F.pad(histories, (2, 0))), whole.predict_scores(histories))


def test_the_head_ranks_a_staple_from_before_the_window():
    """Item 7, bought ten times long ago, is a repeat candidate only for the whole-history head."""
    model = small_model("sasrec", True, context=256)
    model.eval()
    with torch.no_grad():  # the gate wide open: the repeat channel decides
        model.repeat_head.gate.bias.fill_(20.0)
    history = torch.tensor([[7] * 10 + [1, 2, 3, 4, 5, 6, 8, 9]])
    scores = model.predict_scores(history)
    assert torch.isfinite(scores[0, 7]) and scores[0, 7] > scores[0, 10]
    window_only = small_model("sasrec", True, context=0)
    window_only.eval()
    assert window_only.predict_scores(history[:, -8:])[0, 7] < scores[0, 7]


def test_train_windows_carry_the_items_before_each_window(tiny_split):
    windows = TrainWindows(tiny_split, max_len=3, all_windows=True)
    for row in range(len(windows)):
        part = tiny_split.train_part(int(windows.users[row]))
        earlier = windows.earlier(torch.tensor([row]))[0]
        real_window = windows.windows[row][windows.windows[row] > 0].numpy()
        joined = np.concatenate([earlier[earlier > 0].numpy(), real_window])
        assert np.array_equal(joined, part[: len(joined)])  # the earlier items run right up to the window


def test_the_head_learns_at_its_own_rate_when_set():
    model = small_model("sasrec", True)
    trainable = list(model.parameters())
    (everything,) = parameter_groups(model, trainable, TrainConfig(repeat_head_lr=0))  # 0: train.lr
    assert len(everything["params"]) == len(trainable)
    backbone, head = parameter_groups(model, trainable, TrainConfig(repeat_head_lr=0.02))
    assert head["lr"] == 0.02 and "lr" not in backbone
    assert {id(p) for p in head["params"]} == {id(p) for p in model.repeat_head.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(trainable)


def favourites_split(num_users: int = 120, num_items: int = 120, length: int = 24, seed: int = 0):
    """Every user buys mostly from three favourites of their own (80%), else anything: repeat-heavy."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        favourites = rng.choice(num_items, size=3, replace=False)
        for step in range(length):
            item = rng.choice(favourites) if rng.random() < 0.8 else rng.integers(num_items)
            rows.append((f"u{user}", f"i{item}", step))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    raw = RawDataset(name="favourites", interactions=frame,
                     items=pd.DataFrame({"item": frame["item"].unique(), "text": ""}))
    return build_split(raw, DataConfig(min_user_interactions=1, min_item_interactions=1, num_sampled_negatives=5))


def _run(tmp_path, split, name: str, repeat_head: bool, epochs: int = 6) -> dict:
    pairs = {"model.name": name, "model.repeat_head": repeat_head, "data.max_len": 20, "model.hidden_size": 16,
             "model.num_layers": 1, "model.num_heads": 1, "train.batch_size": 32, "train.lr": 0.005,
             "train.max_epochs": epochs, "train.patience": 50, "train.device": "cpu", "train.seed": 1,
             "output_dir": str(tmp_path / "runs")}
    config = load_config(overrides=[f"{k}={v}" for k, v in pairs.items()])
    return json.loads((train_run(config, show_progress=False, split=split) / "final.json").read_text())


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_the_head_learns_repeats_the_plain_backbone_misses(tmp_path, name):
    split = favourites_split()
    plain, repeat = _run(tmp_path, split, name, False), _run(tmp_path, split, name, True)
    assert repeat["test"]["NDCG@10"] > plain["test"]["NDCG@10"] + 0.1
    assert repeat["test_breakdown"]["repeat"]["NDCG@10"] > plain["test_breakdown"]["repeat"]["NDCG@10"]


def test_without_repeats_the_backbone_trains_as_without_the_head(tmp_path, tiny_split):
    """No target is ever in its history, so the mixture sends the backbone the plain gradient."""
    plain, repeat = (_run(tmp_path, tiny_split, "sasrec", head, epochs=3) for head in (False, True))
    assert repeat["test"]["NDCG@10"] == pytest.approx(plain["test"]["NDCG@10"], abs=1e-3)


def test_the_repeat_settings_change_an_identity_only_where_they_act():
    """At their former values they leave every identity as it was (config.ADDED_SETTINGS); the repeat head
    renames a trained run, the history repeat-pop counts renames only a repeat-pop run."""
    assert config_hash(load_config(overrides=["model.repeat_head=true"])) != config_hash(load_config())
    assert config_hash(load_config(overrides=["model.repeat_history=window"])) == config_hash(load_config())
    repeat_pop = ["model.name=repeat-pop"]
    assert (config_hash(load_config(overrides=repeat_pop + ["model.repeat_history=window"]))
            != config_hash(load_config(overrides=repeat_pop)))
    with pytest.raises(ValueError, match="model.repeat_head needs train.loss=ce"):
        load_config(overrides=["model.repeat_head=true", "train.loss=bce"])


class TwoTables(IDEmbedding):
    """An item side with two tables, as LLM-ESR-style ``dual`` integration gives: hidden states are twice as wide."""

    def __init__(self, num_items: int, dim: int):
        super().__init__(num_items, dim)
        self.second = IDEmbedding(num_items, dim)

    def tables(self) -> list[torch.Tensor]:
        return [self.embedding.weight, self.second.embedding.weight]


def test_the_head_runs_over_an_item_side_with_two_tables():
    torch.manual_seed(0)
    config = ModelConfig(name="sasrec", hidden_size=16, num_layers=1, num_heads=1, repeat_head=True)
    model = build_model(config, TwoTables(20, 16), 8)
    windows = torch.randint(1, 21, (4, 9))
    loss = sequence_loss(model, windows, TrainConfig())
    loss.backward()
    assert torch.isfinite(loss) and model.repeat_head.item_weight.grad is not None
    assert model.predict_scores(windows[:, 1:]).shape == (4, 21)


@pytest.mark.parametrize("with_earlier", [False, True])
def test_a_batch_without_repeat_targets_takes_the_gate_only_path_with_the_same_loss_and_gradients(
        monkeypatch, with_earlier):
    from dmesr.models.repeats import RepeatHead

    torch.manual_seed(0)
    num_items, width, length = 400, 8, 12
    items = torch.randperm(num_items)[: 4 * (length + 1 + 6)].view(4, -1) + 1  # every row: distinct items
    windows, earlier = items[:, 6:], items[:, :6] if with_earlier else None
    windows[0, :4] = 0  # a short history
    if earlier is not None:
        earlier[1, :3] = 0
    prefix, targets = windows[:, :-1], windows[:, 1:] * (windows[:, :-1] > 0)
    head = RepeatHead(width, context=4)
    with torch.no_grad():
        head.item_weight.fill_(0.5)
    hidden = torch.randn(4, length, width, requires_grad=True)
    table = torch.randn(num_items + 1, width, requires_grad=True)

    def loss_and_gradients():
        head.zero_grad()
        hidden.grad = table.grad = None
        loss = head.loss(hidden, table, prefix, targets, earlier=earlier)
        loss.backward()
        return loss.detach(), [hidden.grad.clone(), table.grad.clone()] + [p.grad.clone() for p in head.parameters()]

    assert not head._repeats_a_target(prefix, targets, earlier, num_items)
    shortcut, shortcut_gradients = loss_and_gradients()
    monkeypatch.setattr(RepeatHead, "_repeats_a_target", lambda *args: True)  # the full mixture
    full, full_gradients = loss_and_gradients()
    assert torch.equal(shortcut, full)
    for a, b in zip(shortcut_gradients, full_gradients, strict=True):
        assert torch.equal(a, b)
    assert all((p.grad == 0).all() for p in (head.item_weight, *head.score.parameters()))
    monkeypatch.undo()
    # one repeated target, in the window or before it, sends the batch through the full mixture
    repeated = targets.clone()
    repeated[2, -1] = prefix[2, 3]
    assert head._repeats_a_target(prefix, repeated, earlier, num_items)
    if earlier is not None:
        repeated = targets.clone()
        repeated[3, -1] = earlier[3, -1]
        assert head._repeats_a_target(prefix, repeated, earlier, num_items)
