"""The fast paths equal the plain reference form of the method (dmesr/models/reference.py): forward values
and gradients, in float64, over shapes with padding, items without tokens or views, every integration mode
and every option of the item encoder, the alignment loss on both sides of its shared-exponential bound, and
the whole training loss through each backbone."""

from __future__ import annotations

import copy

import pytest
import torch

from dmesr.config import BACKBONES, ModelConfig, TrainConfig
from dmesr.models import alignment, build_model, losses
from dmesr.models.alignment import SHARED_EXP_MIN_TEMPERATURE, SymmetricInfoNCE, batch_rows
from dmesr.models.fusion import CrossAttentionFusion, LinearTokens
from dmesr.models.item_encoders import build_item_representation
from dmesr.models.losses import full_cross_entropy
from dmesr.models.reference import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    ReferenceCrossAttention,
    ReferenceDMESRItems,
    frozen_inputs,
    info_nce,
    next_item_loss,
    training_loss,
)
from tests.test_item_encoders import DIM, NUM_ITEMS, config, make_features


def assert_same(fast, reference, rtol=1e-10, atol=1e-12, what=""):
    message = (lambda text: f"{what}: {text}") if what else None
    torch.testing.assert_close(fast, reference, rtol=rtol, atol=atol, msg=message)


def gradients(output: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of a loss that reads every element of ``output`` differently (0 where a tensor is unused)."""
    weights = torch.linspace(-1, 2, output.numel(), dtype=output.dtype).view(output.shape)
    loss = (output * weights).sum() + output.square().sum()
    return [torch.zeros_like(t) if g is None else g
            for t, g in zip(tensors, torch.autograd.grad(loss, tensors, allow_unused=True))]


@pytest.mark.parametrize("form", ["factored", "padded", "packed"])
@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("queries", [0, 1, 3])  # 0: one query per item given as [N, d]
def test_cross_attention_equals_the_reference(form, norm, queries):
    generator = torch.Generator().manual_seed(0)
    n, length, base_dim, dim = 6, 5, 4, 8
    mask = torch.arange(length)[None, :] < torch.tensor([5, 3, 1, 0, 2, 4])[:, None]  # item 3: no tokens
    base = torch.randn(n, length, base_dim, generator=generator, dtype=torch.float64) * mask[..., None]
    q = torch.randn(n, max(queries, 1), dim, generator=generator, dtype=torch.float64).requires_grad_()
    torch.manual_seed(1)
    fast = CrossAttentionFusion(dim, num_heads=2, dropout=0.0, norm=norm, output_scale=0.5).double()
    linear = torch.nn.Linear(base_dim, dim).double()
    reference = ReferenceCrossAttention(dim, 2, 0.0, norm, output_scale=1.0).double()
    reference.load_state_dict(fast.state_dict())  # the same parameters under the same names
    tokens = LinearTokens(base, linear)
    given = {"factored": tokens, "padded": tokens.materialise(), "packed": tokens.materialise()[mask]}[form]
    fast_queries = q[:, 0] if queries == 0 else q
    fused, weights = fast(fast_queries, given, mask, return_attention=True)
    expected, expected_weights = reference(q, linear(base), mask)
    if queries == 0:
        expected = expected[:, 0]
    assert_same(fused, expected)
    assert_same(weights, expected_weights)
    assert weights[3].abs().sum() == 0  # no tokens: no weight anywhere
    names = [name for name, _ in fast.named_parameters()]
    expected_parameters = dict(reference.named_parameters())
    got = gradients(fused, [q, *linear.parameters(), *fast.parameters()])
    want = gradients(expected, [q, *linear.parameters(), *(expected_parameters[name] for name in names)])
    for name, grad, expected_grad in zip(["queries", "linear.weight", "linear.bias", *names], got, want):
        assert_same(grad, expected_grad, what=name)


@pytest.mark.parametrize("temperature", [0.02, 0.07, 0.5])  # below the shared exponential's bound; above
@pytest.mark.parametrize("tile_elements", [2**18, 40])  # one tile; tiles of 2 rows, the last one short
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_alignment_loss_equals_the_reference(temperature, tile_elements, dtype, monkeypatch):
    monkeypatch.setattr(alignment, "TILE_ELEMENTS", tile_elements)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(19, 6, generator=generator, dtype=dtype).requires_grad_()
    b = torch.randn(19, 6, generator=generator, dtype=dtype).requires_grad_()
    present = torch.rand(19, generator=generator) > 0.3
    # the lower clamp decides the path: two cross-entropies below the bound, the shared exponential above
    fast = SymmetricInfoNCE(temperature, learnable=True, min_temperature=0.01 if temperature < 0.025 else 0.025)
    assert fast.shared_exp == (temperature > SHARED_EXP_MIN_TEMPERATURE)
    fast = fast.to(dtype)
    loss = fast(a, b, present)
    log_temperature = fast.log_temperature.detach().clone().requires_grad_()  # its float32 rounding included
    expected = info_nce(a[present], b[present], log_temperature.exp())
    tolerance = {} if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    assert_same(loss, expected, **tolerance)
    for got, want in zip(torch.autograd.grad(loss, (a, b, fast.log_temperature)),
                         torch.autograd.grad(expected, (a, b, log_temperature))):
        assert_same(got, want, **tolerance)


@pytest.mark.parametrize("usable", [0, 1, 2])
def test_alignment_with_fewer_than_two_items_is_the_reference_zero(usable):
    a, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    present = torch.arange(4) < usable
    loss, expected = SymmetricInfoNCE()(a, b, present), info_nce(a[present], b[present], 0.07)
    assert_same(loss, expected, rtol=1e-6, atol=1e-7)
    assert (loss.item() == 0) == (usable < 2)


@pytest.mark.parametrize("num_items", [12, 40])  # catalogue smaller than the batch; larger
@pytest.mark.parametrize("gather", [True, False])
def test_batch_rows_give_the_reference_loss_over_the_distinct_items_of_a_batch(num_items, gather):
    torch.manual_seed(0)
    a, b = torch.randn(num_items, 6, dtype=torch.float64), torch.randn(num_items, 6, dtype=torch.float64)
    usable = torch.rand(num_items) > 0.2
    item_ids = torch.tensor([[0, 0, 3, 5, 5, 1], [2, 3, 9, 11, 12, 12], [0, 4, 7, 7, 8, 6]])
    rows, present = batch_rows(item_ids, usable, gather)
    distinct = torch.unique(item_ids[item_ids > 0]) - 1
    distinct = distinct[usable[distinct]]
    loss_fn = SymmetricInfoNCE(0.07).double()
    assert_same(loss_fn(a[rows], b[rows], present), info_nce(a[distinct], b[distinct], loss_fn.temperature))


def test_alignment_kept_in_float32_takes_float64_views():
    """The fixed temperature is a float32 buffer until the module is converted; views of another float type
    are scored at their own precision (the shared-exponential path failed on the mixed types)."""
    a, b = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    loss_fn = SymmetricInfoNCE(0.07)
    loss = loss_fn(a, b)
    assert loss.dtype == torch.float64
    assert_same(loss, info_nce(a, b, loss_fn.temperature.double()), rtol=1e-7, atol=0)


ENCODER_OPTIONS = [
    {},
    *[dict(integration=mode) for mode in ("concat", "gate", "dual")],
    dict(fusion_norm="post"),
    dict(token_pca_dim=0),  # the MLP token adapter over packed tokens
    dict(token_pca_dim=0, integration="gate", fusion_norm="post"),
    dict(fusion="none"),
    dict(fusion="none", integration="gate"),
    dict(use_original_text=False, integration="concat"),
    dict(views=("text",)),  # one view: aligned with the original text
    dict(views=("image",), learnable_temperature=True, temperature=0.02),  # below the shared-exp bound
    dict(views=("text",), align_fallback=False),
    dict(align_weight=0.0, integration="dual"),
    dict(freeze_adapters=True, integration="gate"),
    dict(freeze_adapters=True, token_pca_dim=0),
]


def build_pair(options: dict, dtype=torch.float64):
    """The fast encoder and the reference with the same parameters and frozen inputs."""
    options = dict(options)
    align_fallback = options.pop("align_fallback", True)
    item_config = config(dropout=0.0, **options)
    torch.manual_seed(0)
    fast = build_item_representation(item_config, NUM_ITEMS, DIM, make_features(), align_fallback=align_fallback)
    reference = ReferenceDMESRItems(NUM_ITEMS, DIM, item_config, frozen_inputs(fast.semantics), fast.views,
                                    align_fallback=align_fallback)
    reference.load_state_dict(fast.state_dict())
    fast, reference = fast.to(dtype), reference.to(dtype)
    fast.load_state_dict(fast.state_dict())  # frozen adapters cache their first stage again, now in dtype
    return fast, reference


def trainable(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Trainable parameters by name, in name order (the reference declares some in another order)."""
    return sorted(((name, p) for name, p in module.named_parameters() if p.requires_grad), key=lambda pair: pair[0])


@pytest.mark.parametrize("options", ENCODER_OPTIONS,
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_item_encoder_equals_the_reference(options):
    fast, reference = build_pair(options)
    assert sorted(name for name, _ in trainable(fast)) == sorted(name for name, _ in trainable(reference))
    item_ids = torch.randint(0, NUM_ITEMS + 1, (5, 9), generator=torch.Generator().manual_seed(1))
    results = []
    for encoder in (fast, reference):
        tables = encoder.tables()  # the fast path adapts the views once for the tables and the alignment
        auxiliary = encoder.auxiliary_loss(item_ids)
        loss = sum((table * torch.linspace(-1, 1, table.numel(), dtype=table.dtype).view(table.shape)).sum()
                   for table in tables)
        if auxiliary is not None:
            loss = loss + 3 * auxiliary
        parameters = [p for _, p in trainable(encoder)]
        results.append((tables, auxiliary, torch.autograd.grad(loss, parameters)))
    (tables, auxiliary, grads), (expected_tables, expected_auxiliary, expected_grads) = results
    assert len(tables) == len(expected_tables)
    for table, expected in zip(tables, expected_tables):
        assert_same(table, expected)
    assert (auxiliary is None) == (expected_auxiliary is None) == (options.get("align_weight") == 0
                                                                   or options.get("align_fallback") is False)
    if auxiliary is not None:
        assert auxiliary.item() > 0
        assert_same(auxiliary, expected_auxiliary)
    for (name, _), grad, expected in zip(trainable(fast), grads, expected_grads):
        assert_same(grad, expected, rtol=1e-9, atol=1e-11, what=name)
    if fast.fuse:  # the weights the notebooks draw
        every_item = torch.arange(1, NUM_ITEMS + 1)
        assert_same(fast.attention_weights(every_item), reference.fused_views()[1])


def test_the_reference_temperature_clamp_is_the_encoders():
    assert (SymmetricInfoNCE().min_temperature, SymmetricInfoNCE().max_temperature) == (MIN_TEMPERATURE,
                                                                                        MAX_TEMPERATURE)


@pytest.mark.parametrize("tile_bytes", [2**22, 256])  # one tile; tiles of a few rows and items
def test_next_item_loss_in_tiles_and_with_row_weights_equals_the_reference(tile_bytes, monkeypatch):
    """The tiled cross-entropy, also in the fixed-shape form a compiled step uses (every position, those
    without a target weighted 0), equals the plain softmax cross-entropy over the positions with a target."""
    monkeypatch.setitem(losses.TILE_BYTES, "cpu", tile_bytes)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 7, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    table = torch.randn(NUM_ITEMS + 1, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, NUM_ITEMS + 1, (4, 7), generator=generator)
    targets[0, :3] = 0  # positions without a target
    has_target = targets > 0
    expected = next_item_loss(hidden, table, targets)
    expected_grads = torch.autograd.grad(expected, (hidden, table))
    for loss in (full_cross_entropy(hidden[has_target], table, targets[has_target]),
                 full_cross_entropy(hidden.flatten(0, 1), table, targets.flatten(), has_target.flatten().double())):
        assert_same(loss, expected)
        for grad, expected_grad in zip(torch.autograd.grad(loss, (hidden, table)), expected_grads):
            assert_same(grad, expected_grad)


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("options", [{}, dict(integration="dual", views=("text",))], ids=["sum", "dual-one-view"])
@pytest.mark.parametrize("tile_bytes", [2**22, 512])  # one tile of logits; many (losses.TILE_BYTES)
def test_training_loss_equals_the_reference_through_every_backbone(backbone, options, tile_bytes, monkeypatch):
    """L_rec + lambda * L_align: tiled cross-entropy, shared-exponential InfoNCE, factored attention."""
    monkeypatch.setitem(losses.TILE_BYTES, "cpu", tile_bytes)
    fast_items, reference_items = build_pair(options)
    torch.manual_seed(0)
    model_config = ModelConfig(name=backbone, hidden_size=DIM, num_layers=1, num_heads=2, dropout=0.0)
    fast = build_model(model_config, fast_items, max_len=8).double()
    reference = copy.deepcopy(fast)
    reference.items = reference_items
    windows = torch.randint(0, NUM_ITEMS + 1, (6, 9), generator=torch.Generator().manual_seed(2))
    windows[0, :4] = 0  # a left-padded window
    results = []
    for model, loss_fn in ((fast, lambda: losses.sequence_loss(fast, windows, TrainConfig(loss="ce"))),
                           (reference, lambda: training_loss(reference, windows))):
        torch.manual_seed(3)  # BERT4Rec's cloze masks
        loss = loss_fn()
        results.append((loss, dict(zip([n for n, _ in trainable(model)],
                                        torch.autograd.grad(loss, [p for _, p in trainable(model)])))))
    (loss, grads), (expected, expected_grads) = results
    assert_same(loss, expected)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert_same(grad, expected_grads[name], rtol=1e-9, atol=1e-11, what=name)
