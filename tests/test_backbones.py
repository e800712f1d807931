"""Backbones: causality, bidirectionality, padding invariance, cloze masking, learning, dual tables."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dmesr.config import BACKBONES, ModelConfig, TrainConfig
from dmesr.models import IDEmbedding, ItemRepresentation, build_model
from dmesr.models.losses import sequence_loss

NUM_ITEMS, WIDTH, MAX_LEN = 30, 16, 16


class RandomTables(ItemRepresentation):
    """``count`` trainable tables whose padding row is NOT zero, so a leak of padding would show."""

    def __init__(self, num_items: int, dim: int, count: int):
        super().__init__(num_items, dim)
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(num_items + 1, dim)) for _ in range(count))

    def tables(self) -> list[torch.Tensor]:
        return list(self.weights)


def make_model(name: str, tables: int = 1, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = ModelConfig(name=name, hidden_size=WIDTH, num_layers=2, num_heads=2, dropout=0.1, **overrides)
    return build_model(config, RandomTables(NUM_ITEMS, WIDTH, tables), MAX_LEN).eval()


def left_pad(items: list[int], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(items)) + items])


def hidden(model, seqs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.hidden_and_table(seqs)[0]


def test_build_model_rejects_bad_names_and_widths():
    with pytest.raises(ValueError, match="unknown model 'transformer'; known: sasrec, bert4rec, gru4rec"):
        build_model(ModelConfig(name="transformer"), IDEmbedding(5, 64), 10)
    with pytest.raises(ValueError, match="32 wide but model hidden_size is 64"):
        build_model(ModelConfig(name="sasrec"), IDEmbedding(5, 32), 10)
    with pytest.raises(ValueError, match="not divisible by num_heads 3"):
        build_model(ModelConfig(name="sasrec", hidden_size=16, num_heads=3), IDEmbedding(5, 16), 10)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_transformers_refuse_sequences_longer_than_max_len(name):
    model = make_model(name)
    with pytest.raises(ValueError, match="exceeds the model's max_len 16"):
        hidden(model, torch.ones(1, MAX_LEN + 1, dtype=torch.long))


def test_sasrec_position_never_sees_later_items():
    model = make_model("sasrec")
    seqs = torch.randint(1, NUM_ITEMS + 1, (4, MAX_LEN))
    seqs[0, :5] = 0
    cut = 9
    changed = seqs.clone()
    changed[:, cut + 1 :] = torch.randint(1, NUM_ITEMS + 1, (4, MAX_LEN - cut - 1))
    before, after = hidden(model, seqs), hidden(model, changed)
    torch.testing.assert_close(before[:, : cut + 1], after[:, : cut + 1])
    assert not torch.allclose(before[:, cut + 1 :], after[:, cut + 1 :])


def test_bert4rec_is_bidirectional():
    model = make_model("bert4rec")
    seqs = torch.randint(1, NUM_ITEMS + 1, (1, MAX_LEN))
    changed = seqs.clone()
    changed[0, -1] = seqs[0, -1] % NUM_ITEMS + 1
    assert not torch.allclose(hidden(model, seqs)[:, 0], hidden(model, changed)[:, 0])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_amount_of_left_padding_changes_nothing(name):
    model = make_model(name)
    items = [4, 17, 9, 30, 2, 11]
    short, long = left_pad(items, len(items) + 3), left_pad(items, len(items) + 10)
    torch.testing.assert_close(hidden(model, short)[:, 3:], hidden(model, long)[:, 10:], atol=1e-5, rtol=1e-5)
    padded_outputs = hidden(model, long)[:, :10]
    assert torch.isfinite(padded_outputs).all() and (padded_outputs == 0).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_all_padding_rows_stay_finite(name):
    model = make_model(name)
    seqs = torch.cat([torch.zeros(1, MAX_LEN, dtype=torch.long), torch.randint(1, NUM_ITEMS + 1, (1, MAX_LEN))])
    out = hidden(model, seqs)
    assert torch.isfinite(out).all() and (out[0] == 0).all() and (out[1] != 0).any()


def test_gru4rec_states_do_not_depend_on_the_item_vectors_scale():
    # item encoders start at std 0.02; normalised GRU inputs keep such small vectors from leaving
    # every user with the same bias-driven state (the popularity plateau in gru4rec.py's docstring)
    model = make_model("gru4rec")
    seqs = left_pad([4, 17, 9, 30, 2, 11], MAX_LEN)
    with torch.no_grad():
        table = model.items.tables()[0]
        small, large = (model.encode(seqs, scale * table) for scale in (0.02, 1.0))  # the table has std 1
    torch.testing.assert_close(small, large, atol=1e-2, rtol=5e-2)  # up to LayerNorm's eps
    assert small.abs().max() > 0.1  # the state moves: inputs are not drowned by the biases


def test_bert4rec_cloze_masking_rate_padding_and_targets():
    torch.manual_seed(0)
    model = make_model("bert4rec", mask_prob=0.2)
    windows = torch.randint(1, NUM_ITEMS + 1, (3000, MAX_LEN + 1))
    lengths = torch.randint(0, MAX_LEN + 2, (3000, 1))
    windows[torch.arange(MAX_LEN + 1) < MAX_LEN + 1 - lengths] = 0
    inputs, targets = model.training_inputs(windows)
    seqs = windows[:, -MAX_LEN:]
    masked = inputs == model.mask_token
    real = seqs > 0
    assert inputs.shape == targets.shape == (3000, MAX_LEN)
    assert not (masked & ~real).any(), "padding was masked"
    assert (masked.any(dim=1) == real.any(dim=1)).all(), "a non-empty row has no masked item (or an empty one has)"
    assert torch.equal(targets, torch.where(masked, seqs, 0))
    assert torch.equal(inputs[~masked], seqs[~masked])
    # long rows: forcing one mask per row barely moves the rate there
    long_rows = real.sum(dim=1) >= 12
    rate = masked[long_rows].sum() / real[long_rows].sum()
    assert abs(rate.item() - 0.2) < 0.01


def test_bert4rec_inference_appends_the_mask_token():
    model = make_model("bert4rec")
    histories = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    assert model.inference_inputs(histories).tolist() == [[0, 5, 6, 31], [2, 3, 4, 31]]


def test_bert4rec_rejects_bad_mask_prob():
    with pytest.raises(ValueError, match=r"mask_prob must be in \(0, 1\), got 0.0"):
        build_model(ModelConfig(name="bert4rec", hidden_size=WIDTH, mask_prob=0.0), IDEmbedding(5, WIDTH), 10)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_two_tables_concatenate_and_scores_add_up(name):
    model = make_model(name, tables=2)
    histories = torch.randint(0, NUM_ITEMS + 1, (3, MAX_LEN))
    hidden_states, table = model.hidden_and_table(model.inference_inputs(histories))
    assert hidden_states.shape == (3, MAX_LEN, 2 * WIDTH) and table.shape == (NUM_ITEMS + 1, 2 * WIDTH)
    with torch.no_grad():
        scores = model.predict_scores(histories)
        inputs = model.inference_inputs(histories)
        per_view = sum(model.encode(inputs, t)[:, -1] @ t.T for t in model.items.tables())
    assert scores.shape == (3, NUM_ITEMS + 1)
    torch.testing.assert_close(scores, per_view)


# Cloze training learns from the ~20% masked positions only, so BERT4Rec needs more steps.
STEPS = 40
CLOZE_STEPS = 100


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_a_few_adam_steps_learn_a_cyclic_walk(name):
    """Every user walks the catalogue in order: after a few steps the next item is clearly predictable."""
    torch.manual_seed(1)
    config = ModelConfig(name=name, hidden_size=WIDTH, num_layers=1, num_heads=1, dropout=0.1)
    model = build_model(config, IDEmbedding(NUM_ITEMS, WIDTH), MAX_LEN)
    starts = torch.randint(0, NUM_ITEMS, (64, 1))
    windows = (starts + torch.arange(MAX_LEN + 1)) % NUM_ITEMS + 1
    windows[:16, :8] = 0  # some short histories
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(CLOZE_STEPS if name == "bert4rec" else STEPS):
        loss = sequence_loss(model, windows, TrainConfig(loss="ce"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    model.eval()
    with torch.no_grad():
        predicted = model.predict_scores(windows[:, :-1])[:, 1:].argmax(dim=1) + 1
    assert (predicted == windows[:, -1]).float().mean() > 0.5


RECBOLE_LAYOUT = {"norm_layout": "post", "scale_embeddings": False, "init": "normal", "positions": "oldest",
                  "inner_dropout": False}


@pytest.mark.parametrize("overrides", [{"norm_layout": "post"}, {"positions": "oldest"}, RECBOLE_LAYOUT])
def test_sasrec_layouts_stay_causal_and_padding_exact(overrides):
    model = make_model("sasrec", **overrides)
    items = [4, 17, 9, 30, 2, 11]
    short, long = left_pad(items, len(items) + 3), left_pad(items, len(items) + 10)
    torch.testing.assert_close(hidden(model, short)[:, 3:], hidden(model, long)[:, 10:], atol=1e-5, rtol=1e-5)
    assert (hidden(model, long)[:, :10] == 0).all()
    changed = left_pad(items[:-1] + [items[-1] % NUM_ITEMS + 1], len(items) + 3)
    torch.testing.assert_close(hidden(model, short)[:, :-1], hidden(model, changed)[:, :-1])


def test_sasrec_layout_settings_build_what_they_say():
    default, recbole = make_model("sasrec"), make_model("sasrec", **RECBOLE_LAYOUT)
    assert isinstance(default.final_norm, nn.LayerNorm) and isinstance(default.embedding_norm, nn.Identity)
    assert isinstance(recbole.final_norm, nn.Identity) and isinstance(recbole.embedding_norm, nn.LayerNorm)
    assert default.embedding_scale == WIDTH**0.5 and recbole.embedding_scale == 1.0
    linears = [m for m in recbole.blocks.modules() if isinstance(m, nn.Linear)]
    assert all((m.bias == 0).all() for m in linears)
    assert abs(torch.cat([m.weight.flatten() for m in linears]).std().item() - 0.02) < 0.002
    # dropout inside the feed-forward (after its activation) only where inner_dropout says so
    assert [type(m) for m in default.blocks[0].feed_forward][2] is nn.Dropout
    assert [type(m) for m in recbole.blocks[0].feed_forward][2] is nn.Identity

