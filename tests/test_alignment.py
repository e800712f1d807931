"""Symmetric InfoNCE: known values, exclusion of items lacking a view, the degenerate batch, and a toy
problem where the loss must make matched pairs each other's nearest neighbours."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dmesr.models import alignment
from dmesr.models.alignment import SHARED_EXP_MIN_TEMPERATURE, SymmetricInfoNCE, _SharedExpInfoNCE, batch_rows
from dmesr.models.reference import info_nce  # the plain two cross-entropies


def test_perfectly_aligned_one_hot_views_give_the_analytic_loss():
    n, tau = 5, 0.5
    views = torch.eye(n)
    loss = SymmetricInfoNCE(temperature=tau)(views, views)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_symmetric_in_its_views():
    torch.manual_seed(0)
    a, b = torch.randn(8, 6), torch.randn(8, 6)
    loss = SymmetricInfoNCE()
    assert loss(a, b).item() == pytest.approx(loss(b, a).item(), rel=1e-6)


def test_items_lacking_a_view_are_excluded_not_zero_filled():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    present = torch.tensor([True, False, True, True, False, True])
    loss = SymmetricInfoNCE()
    reference = loss(a[present], b[present])
    a_missing, b_missing = a.clone(), b.clone()
    a_missing[~present] = float("nan")  # whatever an absent view holds must not leak in
    b_missing[~present] = 0.0
    assert loss(a_missing, b_missing, present).item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("usable", [0, 1])
def test_fewer_than_two_items_give_a_zero_loss_that_still_backpropagates(usable):
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    present = torch.arange(3) < usable
    loss = SymmetricInfoNCE()(a, b, present)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_learnable_temperature_gets_gradient_and_is_clamped():
    torch.manual_seed(0)
    loss = SymmetricInfoNCE(temperature=0.1, learnable=True, min_temperature=0.02, max_temperature=0.5)
    loss(torch.randn(6, 4), torch.randn(6, 4)).backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.item() != 0.0
    with torch.no_grad():
        loss.log_temperature.fill_(-50.0)
    assert loss.temperature.item() == pytest.approx(0.02)
    fixed = SymmetricInfoNCE(temperature=0.1)
    assert not any(p.requires_grad for p in fixed.parameters())


@pytest.mark.parametrize("temperature", [0.01, 0.03, 0.07, 0.5])
@pytest.mark.parametrize("tile_elements", [2**18, 150])  # one tile; tiles of 3 rows, the last one short
def test_loss_and_gradients_equal_two_cross_entropies_above_and_below_the_shared_exp_bound(
        temperature, tile_elements, monkeypatch):
    monkeypatch.setattr(alignment, "TILE_ELEMENTS", tile_elements)
    torch.manual_seed(0)
    a, b = torch.randn(50, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
    loss_fn = SymmetricInfoNCE(temperature, learnable=True, min_temperature=min(temperature, SHARED_EXP_MIN_TEMPERATURE))
    loss = loss_fn(a, b)
    got = torch.autograd.grad(loss, (a, b, loss_fn.log_temperature))
    log_temperature = torch.tensor(math.log(temperature), requires_grad=True)
    reference = info_nce(a, b, log_temperature.exp())
    expected = torch.autograd.grad(reference, (a, b, log_temperature))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-7)
    assert (temperature >= SHARED_EXP_MIN_TEMPERATURE) == (temperature != 0.01)  # both paths covered


def test_half_precision_views_take_the_cross_entropy_path_and_stay_finite():
    torch.manual_seed(0)
    a, b = torch.randn(40, 8), -torch.randn(40, 8)
    loss = SymmetricInfoNCE(0.03)(a.half(), b.half())  # the shared exponential would give -inf here
    reference = info_nce(a, b, torch.tensor(0.03))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(reference.item(), rel=1e-2)


@pytest.mark.parametrize("tile_elements", [2**18, 14])  # one tile; tiles of 2 rows, the last one short
def test_shared_exp_backward_passes_gradcheck(tile_elements, monkeypatch):
    monkeypatch.setattr(alignment, "TILE_ELEMENTS", tile_elements)
    torch.manual_seed(0)
    a = F.normalize(torch.randn(7, 4, dtype=torch.float64), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(7, 4, dtype=torch.float64), dim=-1).requires_grad_()
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    present = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(_SharedExpInfoNCE.apply, (a, b, scale, present))
    assert torch.autograd.gradcheck(_SharedExpInfoNCE.apply, (a, b, scale, torch.ones_like(present)))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        SymmetricInfoNCE(temperature=5.0)
    with pytest.raises(ValueError, match="views must both be"):
        SymmetricInfoNCE()(torch.randn(4, 3), torch.randn(4, 5))


def _retrieval_accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
    similarity = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    return (similarity.argmax(dim=1) == torch.arange(len(a))).float().mean().item()


def test_training_two_linear_maps_makes_matched_pairs_nearest_neighbours():
    torch.manual_seed(0)
    n = 128
    latent = torch.randn(n, 8)
    image_view = latent @ torch.randn(8, 12) + 0.05 * torch.randn(n, 12)  # two different spaces
    text_view = latent @ torch.randn(8, 10) + 0.05 * torch.randn(n, 10)
    map_image, map_text = torch.nn.Linear(12, 16), torch.nn.Linear(10, 16)
    before = _retrieval_accuracy(map_image(image_view), map_text(text_view))
    loss_fn = SymmetricInfoNCE(temperature=0.1)
    optimizer = torch.optim.Adam([*map_image.parameters(), *map_text.parameters()], lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(map_image(image_view), map_text(text_view))
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = _retrieval_accuracy(map_image(image_view), map_text(text_view))
    assert before < 0.3
    assert after > 0.97


@pytest.mark.parametrize("num_items", [12, 40])  # catalogue smaller than the batch; larger
@pytest.mark.parametrize("temperature", [0.07, 0.01])  # shared exponential; two cross-entropies
def test_fixed_shape_batch_rows_give_the_gathered_loss_and_gradients(num_items, temperature):
    """The forms a device uses (all items flagged, or the sorted batch without repeats) give the loss
    and gradients of the distinct items gathered; a repeated item or padding counts nothing."""
    torch.manual_seed(0)
    a, b = torch.randn(num_items, 6, requires_grad=True), torch.randn(num_items, 6, requires_grad=True)
    usable = torch.rand(num_items) > 0.2
    item_ids = torch.tensor([[0, 0, 3, 5, 5, 1], [2, 3, 9, 11, 12, 12], [0, 4, 7, 7, 8, 6]])
    loss_fn = SymmetricInfoNCE(temperature)
    results = []
    for gather in (True, False):
        rows, present = batch_rows(item_ids, usable, gather)
        loss = loss_fn(a[rows], b[rows], present)
        results.append((loss, *torch.autograd.grad(loss, (a, b))))
    assert results[0][0].item() > 0
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected)
    distinct = torch.unique(item_ids[item_ids > 0]) - 1
    assert len(batch_rows(item_ids, usable, gather=True)[0]) == len(distinct)
