"""Contrastive alignment of two views of the same items (DMESR's fix for misaligned MLLM views).

The plain form of this loss, to read it, is :func:`dmesr.models.reference.info_nce`; this one computes the
same values faster (``tests/test_reference.py`` checks it).

The MLLM describes an item once from its image and once from its text; encoded separately, the
two descriptions land in different regions of the embedding space. A symmetric InfoNCE loss
(CLIP-style) pulls the two views of one item together and pushes them away from the other items
of the batch: row i of ``a`` must pick row i of ``b`` among all rows of ``b``, and vice versa.

Items that lack either view are left out of the loss (not zero-filled: a zero vector would be a
meaningless positive). With fewer than two usable items there are no negatives, and the loss is
a zero tensor that still belongs to the graph, so callers never branch on it.

The batch of a DMESR step holds every unique item of its sequences, most of a catalogue of a few thousand
items, so its ``N x N`` logits are a large part of DMESR's extra step cost (reports/dmesr-notes.md,
"Overhead"). Both directions' cross-entropies are taken from one exponential of the logits
(:class:`_SharedExpInfoNCE`): cosines are at most 1, so ``1 / tau`` bounds every logit and serves as the
log-sum-exp shift of every row and column without a max pass, and the backward pass is written out. Where ``2 / tau``
would let an exponential underflow (``tau < 0.025``, or half precision) the loss falls back to two
``F.cross_entropy``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# exp(-2 / tau), the smallest shifted exponential, stays a normal float32 (limit: exp(-87)) for these tau
SHARED_EXP_MIN_TEMPERATURE = 0.025


# Logits visited at once on a CPU: a tile of ~1 MB stays in cache while it is exponentiated, masked
# and summed (and in the backward pass turned into gradients), instead of the whole N x N matrix
# passing through memory once per operation. A GPU takes the whole matrix: fewer, larger kernels.
TILE_ELEMENTS = 2**18


def _tile_rows(n: int, device: torch.device) -> int:
    return max(1, TILE_ELEMENTS // max(n, 1)) if device.type == "cpu" else max(n, 1)


class _SharedExpInfoNCE(torch.autograd.Function):
    """``0.5 * (CE(rows) + CE(columns))`` of ``logits = scale * a @ b.T`` with the diagonal as targets,
    over the rows and columns where ``present`` is 1, for unit vectors ``a, b [N, d]`` and
    ``scale = 1 / tau``; equal to the two ``F.cross_entropy`` over the present rows up to float
    rounding. The row and column sums of ``exp(logits - scale)`` give both log-normalisers. Absent
    rows and columns are zeroed rather than removed, so every shape is fixed by ``N``.

    Both passes run over row tiles (:data:`TILE_ELEMENTS`): forward, one ``addmm`` per tile with the
    scale folded into ``a`` and the shift as its bias, then exp, mask and sums while the tile is in
    cache; backward, each tile's gradient of the logits (scaled by reciprocal sums rather than
    divided by them) goes straight into both products."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        count = present.sum().clamp(min=1)
        scaled_a, shift = a * scale, -scale
        shifted_exp = a.new_empty(n, n)
        row_sums, column_sums = a.new_empty(n), a.new_zeros(n)
        rows = _tile_rows(n, a.device)
        for start in range(0, n, rows):
            end = min(start + rows, n)
            tile = torch.addmm(shift, scaled_a[start:end], b.T, out=shifted_exp[start:end]).exp_()
            tile.mul_(present[start:end, None]).mul_(present)
            row_sums[start:end] = tile.sum(dim=1)
            column_sums += tile.sum(dim=0)
        # an absent row or column sums to 0: adding 1 there makes its log 0 and keeps divisions finite
        row_sums += 1 - present
        column_sums += 1 - present
        target_logits = (a * b).sum(dim=1) * scale * present
        loss = (0.5 * (row_sums.log().sum() + column_sums.log().sum()) + scale * present.sum()
                - target_logits.sum()) / count
        ctx.save_for_backward(a, b, scale, present, count, shifted_exp, row_sums, column_sums)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        a, b, scale, present, count, shifted_exp, row_sums, column_sums = ctx.saved_tensors
        # d loss / d logits = (row softmax + column softmax) / 2n - identity / n, on present rows only,
        # formed and multiplied out tile by tile like the forward pass
        weight = grad_loss * 0.5 / count
        row_weights, column_weights = weight / row_sums, weight / column_sums
        diagonal = grad_loss * present / count
        n = a.shape[0]
        grad_logits_b, grad_logits_t_a = torch.empty_like(a), torch.zeros_like(b)
        rows = _tile_rows(n, a.device)
        for start in range(0, n, rows):
            end = min(start + rows, n)
            tile = shifted_exp[start:end]
            grad_logits = (tile * row_weights[start:end, None]).addcmul_(tile, column_weights)
            grad_logits.diagonal(offset=start).sub_(diagonal[start:end])
            torch.mm(grad_logits, b, out=grad_logits_b[start:end])
            grad_logits_t_a.addmm_(grad_logits.T, a[start:end])
        grad_a = grad_logits_b * scale
        grad_b = grad_logits_t_a * scale
        # logits = scale * cosines, and sum(grad_logits * cosines) = sum(a * (grad_logits @ b))
        grad_scale = (a * grad_logits_b).sum() if ctx.needs_input_grad[2] else None
        return grad_a, grad_b, grad_scale, None


class SymmetricInfoNCE(nn.Module):
    """``0.5 * (CE(a -> b) + CE(b -> a))`` over cosine similarities divided by a temperature.

    A learnable temperature is stored as ``log(tau)`` (so it stays positive under gradient
    steps) and clamped to ``[min_temperature, max_temperature]``: without the clamp it can
    collapse towards 0 and make the logits explode.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = False,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
    ):
        super().__init__()
        if not min_temperature <= temperature <= max_temperature:
            raise ValueError(
                f"temperature {temperature} is outside [{min_temperature}, {max_temperature}]"
            )
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        # Chosen once, from the lowest temperature the loss can see, so the step never reads the
        # temperature back from the device: a fixed one, or a learnable one's lower clamp.
        self.shared_exp = (min_temperature if learnable else temperature) >= SHARED_EXP_MIN_TEMPERATURE
        log_temperature = torch.tensor(math.log(temperature))
        if learnable:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)

    @property
    def temperature(self) -> torch.Tensor:
        low, high = math.log(self.min_temperature), math.log(self.max_temperature)
        return self.log_temperature.clamp(low, high).exp()

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``a, b [N, d]``: two views of the same N items; ``present [N]`` bool keeps rows that have both."""
        if a.shape != b.shape or a.dim() != 2:
            raise ValueError(f"views must both be [N, d], got {tuple(a.shape)} and {tuple(b.shape)}")
        if present is None:
            present = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
        # absent rows are zeroed, not removed: shapes stay fixed, nothing waits on the device
        a = F.normalize(torch.where(present[:, None], a, 0.0), dim=-1)
        b = F.normalize(torch.where(present[:, None], b, 0.0), dim=-1)
        temperature = self.temperature
        # half precision underflows far sooner than float32: it takes the cross-entropies' max-shifted path
        if a.dtype in (torch.float32, torch.float64) and self.shared_exp:
            loss = _SharedExpInfoNCE.apply(a, b, temperature.reciprocal().to(a.dtype), present.to(a.dtype))
        else:
            loss = self._two_cross_entropies(a @ b.T / temperature, present)
        # Fewer than two usable items leave no negatives: a zero that still belongs to the graph.
        return torch.where(present.sum() >= 2, loss, loss * 0.0)

    @staticmethod
    def _two_cross_entropies(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Both directions' cross-entropies over the present rows, absent columns masked out."""
        targets = torch.arange(logits.shape[0], device=logits.device)
        total = 0.0
        for direction in (logits, logits.T):
            masked = direction.masked_fill(~present[None, :], float("-inf")).masked_fill(~present[:, None], 0.0)
            total = total + (F.cross_entropy(masked, targets, reduction="none") * present).sum()
        return 0.5 * total / present.sum().clamp(min=1)


def batch_rows(item_ids: torch.Tensor, usable: torch.Tensor, gather: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (item id - 1) standing for the distinct items of ``item_ids`` (0 = padding), and which of
    them the loss uses (``usable [num_items]``: the item has both views).

    ``gather``: the distinct items themselves (``unique``, whose size the host must read back).
    Otherwise shapes stay fixed, so a step never waits for the device: every item of the catalogue
    flagged by whether the batch holds it, or, for a catalogue larger than the batch, the sorted
    batch with repeats flagged off. The loss is the same either way: it ignores flagged-off rows.
    """
    num_items, ids = usable.shape[0], item_ids.flatten()
    if gather:
        rows = torch.unique(ids[ids > 0]) - 1
        if rows.numel() and int(rows[-1]) >= num_items:
            raise ValueError(f"item id {int(rows[-1]) + 1} is out of range 1..{num_items} (a mask token?)")
        return rows, usable[rows]
    if num_items <= ids.numel():
        in_batch = torch.zeros(num_items + 1, dtype=torch.bool, device=ids.device).index_fill_(0, ids, True)
        return torch.arange(num_items, device=ids.device), in_batch[1:] & usable
    ids = ids.sort().values
    first_of_its_kind = torch.cat([ids[:1] > 0, ids[1:] != ids[:-1]])
    rows = (ids - 1).clamp(min=0)
    return rows, first_of_its_kind & usable[rows]
