"""Losses against explicit references, collision masking, and the training-step loss wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dmesr.config import LOSSES, ModelConfig, TrainConfig
from dmesr.models import IDEmbedding, build_model, losses
from dmesr.models.losses import bce_sampled, full_cross_entropy, loss_terms, sampled_softmax, sequence_loss


def random_problem(num_rows=7, num_items=9, dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(num_rows, dim, generator=generator)
    table = torch.randn(num_items + 1, dim, generator=generator)
    targets = torch.randint(1, num_items + 1, (num_rows,), generator=generator)
    return hidden, table, targets


def test_full_cross_entropy_by_hand():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    table = torch.tensor([[50.0, 50.0], [1.0, 0.0], [0.0, 1.0]])  # huge padding row must not matter
    targets = torch.tensor([1, 1])
    expected = (-math.log(math.e / (math.e + 1)) - math.log(1 / (1 + math.e**2))) / 2
    assert full_cross_entropy(hidden, table, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("num_rows, num_items", [(7, 9), (1500, 2000)])  # one chunk; several chunks
def test_full_cross_entropy_and_gradients_match_explicit_logits(num_rows, num_items):
    hidden, table, targets = random_problem(num_rows, num_items)
    hidden.requires_grad_(True)
    table.requires_grad_(True)
    expected = F.cross_entropy((hidden @ table.T)[:, 1:], targets - 1)
    expected_grads = torch.autograd.grad(expected * 3, (hidden, table))
    loss = full_cross_entropy(hidden, table, targets)
    grads = torch.autograd.grad(loss * 3, (hidden, table))
    torch.testing.assert_close(loss, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    assert (grads[1][0] == 0).all(), "the padding row must get no gradient"
    with torch.no_grad():
        torch.testing.assert_close(full_cross_entropy(hidden, table, targets), expected)


@pytest.mark.parametrize("tile_bytes", [4 * 2000 * 70, 4 * 300 * 64, 4 * 64])  # whole rows; tiles; one-item tiles
@pytest.mark.parametrize("wanted", [(True, True), (True, False), (False, True)])
def test_tiled_cross_entropy_matches_explicit_logits(monkeypatch, tile_bytes, wanted):
    """Row blocks times item blocks (online log-sum-exp, second sweep for the gradients) give the
    loss and gradients of the explicit logits, for either input alone needing a gradient."""
    monkeypatch.setitem(losses.TILE_BYTES, "cpu", tile_bytes)
    monkeypatch.setattr(losses, "TILE_ROWS", 64)
    hidden, table, targets = random_problem(300, 2000, dim=8, seed=1)
    inputs = [tensor.requires_grad_(want) for tensor, want in zip((hidden, table), wanted)]
    wanted_inputs = [tensor for tensor, want in zip(inputs, wanted) if want]
    expected = F.cross_entropy((hidden @ table.T)[:, 1:], targets - 1)
    expected_grads = torch.autograd.grad(expected * 3, wanted_inputs)
    loss = full_cross_entropy(hidden, table, targets)
    torch.testing.assert_close(loss, expected)
    for grad, expected_grad in zip(torch.autograd.grad(loss * 3, wanted_inputs), expected_grads):
        torch.testing.assert_close(grad, expected_grad)


def test_tile_shape_keeps_rows_sensible_as_the_catalogue_grows():
    cpu = torch.device("cpu")
    assert losses._tile_shape(6400, 1000, cpu) == (1048, 1000)  # whole item rows, one sweep
    rows, columns = losses._tile_shape(6400, 1_000_000, cpu)
    assert rows == losses.TILE_ROWS and rows * columns * 4 <= losses.TILE_BYTES["cpu"]


def drawn_negatives(seed: int, num_items: int, k: int) -> torch.Tensor:
    return torch.randint(1, num_items + 1, (k,), generator=torch.Generator().manual_seed(seed))


def test_sampled_softmax_matches_reference_and_masks_collisions():
    hidden, table, targets = random_problem()
    negatives = drawn_negatives(3, 9, 6)
    loss = sampled_softmax(hidden, table, targets, 6, generator=torch.Generator().manual_seed(3))
    rows = []
    for h, t in zip(hidden, targets):
        others = negatives[negatives != t]  # the positive is never its own negative
        logits = torch.cat([(h * table[t]).sum().view(1), table[others] @ h])
        rows.append(-torch.log_softmax(logits, dim=0)[0])
    torch.testing.assert_close(loss, torch.stack(rows).mean())
    assert any((negatives == t).any() for t in targets), "the seed should produce at least one collision"


def test_bce_matches_reference_and_masks_collisions():
    hidden, table, targets = random_problem()
    negatives = drawn_negatives(3, 9, 6)
    loss = bce_sampled(hidden, table, targets, 6, generator=torch.Generator().manual_seed(3))
    terms = []
    for h, t in zip(hidden, targets):
        terms.append(-F.logsigmoid((h * table[t]).sum()).view(1))
        terms.append(-F.logsigmoid(-(table[negatives[negatives != t]] @ h)))
    torch.testing.assert_close(loss, torch.cat(terms).mean())


def test_single_item_catalogue_has_only_collisions():
    hidden, table, targets = random_problem(num_items=1)
    assert sampled_softmax(hidden, table, targets, 5).item() == 0.0
    expected = F.softplus(-(hidden * table[targets]).sum(dim=1)).mean()
    torch.testing.assert_close(bce_sampled(hidden, table, targets, 5), expected)


@pytest.mark.parametrize("loss_function", [bce_sampled, sampled_softmax])
def test_sampled_losses_need_a_negative(loss_function):
    hidden, table, targets = random_problem()
    with pytest.raises(ValueError, match="num_negatives must be at least 1, got 0"):
        loss_function(hidden, table, targets, 0)


class CountingIDs(IDEmbedding):
    """IDs with a fixed auxiliary loss that records which items it was asked about."""

    auxiliary_weight = 0.25

    def auxiliary_loss(self, item_ids):
        self.seen = item_ids
        return torch.tensor(0.5)


@pytest.mark.parametrize("tile_bytes", [4 * 2000 * 70, 4 * 300 * 64])  # whole rows; tiles
def test_weighted_cross_entropy_is_the_cross_entropy_of_the_rows_weighted_one(monkeypatch, tile_bytes):
    """The fixed-shape form a compiled step uses: rows weighted 0 (target 0 allowed) change neither the
    loss nor any gradient, and the mean is over the rows weighted 1."""
    monkeypatch.setitem(losses.TILE_BYTES, "cpu", tile_bytes)
    monkeypatch.setattr(losses, "TILE_ROWS", 64)
    hidden, table, targets = random_problem(300, 2000, dim=8, seed=2)
    keep = torch.rand(300, generator=torch.Generator().manual_seed(3)) < 0.6
    padded_targets = targets.masked_fill(~keep, 0)
    hidden.requires_grad_(True), table.requires_grad_(True)
    expected = full_cross_entropy(hidden[keep], table, targets[keep])
    expected_grads = torch.autograd.grad(expected * 3, (hidden, table))
    loss = full_cross_entropy(hidden, table, padded_targets, keep.float())
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss * 3, (hidden, table))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    assert grads[0][~keep].abs().sum() == 0  # the rows weighted 0 get no gradient at all


def small_model(name="sasrec", items=None):
    torch.manual_seed(0)
    config = ModelConfig(name=name, hidden_size=8, num_layers=1, num_heads=1, dropout=0.0)
    return build_model(config, items or IDEmbedding(12, 8), max_len=5)


def test_sequence_loss_is_ce_over_target_positions_plus_auxiliary():
    model = small_model(items=CountingIDs(12, 8))
    windows = torch.tensor([[0, 0, 0, 3, 4, 12], [1, 2, 3, 4, 5, 6]])
    hidden, table = model.hidden_and_table(windows[:, :-1])
    targets = torch.tensor([[0, 0, 0, 4, 12], [2, 3, 4, 5, 6]])  # item 3 follows only padding: no target
    assert torch.equal(model.training_inputs(windows)[1], targets)
    logits = hidden[targets > 0] @ table[1:].T
    expected = F.cross_entropy(logits, targets[targets > 0] - 1) + 0.25 * 0.5  # L_rec + lambda L_align
    torch.testing.assert_close(sequence_loss(model, windows, TrainConfig(loss="ce")), expected)
    terms = loss_terms(model, windows, TrainConfig(loss="ce"))  # both terms, unweighted, for the epoch log
    torch.testing.assert_close(terms["rec"], expected - 0.125)
    assert terms["align"].item() == 0.5
    assert torch.equal(model.items.seen, windows)  # every item of the batch (0 = padding), targets included


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_registered_loss_trains_through_sequence_loss(loss):
    model = small_model("gru4rec")
    windows = torch.randint(1, 13, (4, 6))
    value = sequence_loss(model, windows, TrainConfig(loss=loss, num_negatives=5))
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert model.items.embedding.weight.grad.abs().sum() > 0
    inputs, targets = model.training_inputs(windows)
    hidden, table = model.hidden_and_table(inputs)
    spec = LOSSES[loss]
    negatives = (5,) if spec.samples_negatives else ()
    torch.manual_seed(0)
    expected = getattr(losses, spec.function)(hidden[targets > 0], table, targets[targets > 0], *negatives)
    torch.manual_seed(0)  # the same negatives
    torch.testing.assert_close(sequence_loss(model, windows, TrainConfig(loss=loss, num_negatives=5)), expected)


def test_the_loss_registry_is_what_checks_help_identity_and_docs_read():
    from pathlib import Path

    from dmesr.cli import build_parser
    from dmesr.config import IN_EFFECT, RunConfig, load_config

    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    loss_section = readme.split("### Which loss for which catalogue")[1].split("\n#")[0]
    train_help = next(action.help for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                      if action.dest == "loss")
    for name, spec in LOSSES.items():
        assert spec.module == "dmesr.models.losses" and callable(getattr(losses, spec.function))
        assert f"`{name}`" in loss_section, f"README's loss section does not describe {name}"
        assert f"{name}: {spec.about}" in train_help
        config = load_config(overrides=[f"train.loss={name}"])
        assert IN_EFFECT["train.num_negatives"](config) == spec.samples_negatives
    with pytest.raises(ValueError, match="unknown train.loss 'hinge'; known: ce, bce, sampled_softmax"):
        load_config(overrides=["train.loss=hinge"])
    assert RunConfig().train.loss in LOSSES


def test_sequence_loss_rejects_unknown_losses_and_empty_batches():
    model = small_model()
    with pytest.raises(ValueError, match="unknown loss 'hinge'; known: ce, bce, sampled_softmax"):
        sequence_loss(model, torch.ones(2, 6, dtype=torch.long), TrainConfig(loss="hinge"))
    with pytest.raises(ValueError, match="no target item"):
        sequence_loss(model, torch.tensor([[0, 0, 0, 0, 0, 7]]), TrainConfig(loss="ce"))  # one item
