"""Contrastive alignment of two views of the same items (DMESR's fix for misaligned MLLM views).

The MLLM describes an item once from its image and once from its text; encoded separately, the
two descriptions land in different regions of the embedding space. A symmetric InfoNCE loss
(CLIP-style) pulls the two views of one item together and pushes them away from the other items
of the batch: row i of ``a`` must pick row i of ``b`` among all rows of ``b``, and vice versa.

Items that lack either view are left out of the loss (not zero-filled: a zero vector would be a
meaningless positive). With fewer than two usable items there are no negatives, and the loss is
a zero tensor that still belongs to the graph, so callers never branch on it.

The batch of a DMESR step holds every unique item of its sequences (about 1,900 of ml-1m's 3,416
at 128 windows of 50), and its ``N x N`` logits were the largest part of DMESR's extra step cost there. Both
directions' cross-entropies are taken from one exponential of the logits (:class:`_SharedExpInfoNCE`):
cosines are at most 1, so ``1 / tau`` bounds every logit and serves as the log-sum-exp shift of
every row and column without a max pass, and the backward pass is written out. Where ``2 / tau``
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


class _SharedExpInfoNCE(torch.autograd.Function):
    """``0.5 * (CE(rows) + CE(columns))`` of ``logits = scale * a @ b.T`` with the diagonal as targets,
    for unit vectors ``a, b [N, d]`` and ``scale = 1 / tau``; equal to the two ``F.cross_entropy`` up to
    float rounding. The row and column sums of ``exp(logits - scale)`` give both log-normalisers."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        shifted_exp = torch.mm(a, b.T).mul_(scale).sub_(scale).exp_()
        row_sums, column_sums = shifted_exp.sum(dim=1), shifted_exp.sum(dim=0)
        target_logits = (a * b).sum(dim=1) * scale
        loss = 0.5 * (row_sums.log().sum() + column_sums.log().sum()) / n + scale - target_logits.mean()
        ctx.save_for_backward(a, b, scale, shifted_exp, row_sums, column_sums)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        a, b, scale, shifted_exp, row_sums, column_sums = ctx.saved_tensors
        n = a.shape[0]
        # d loss / d logits = (row softmax + column softmax) / 2n - identity / n
        grad_logits = shifted_exp / row_sums[:, None]
        grad_logits.addcmul_(shifted_exp, column_sums.reciprocal()[None, :])
        grad_logits.mul_(grad_loss * 0.5 / n)
        grad_logits.diagonal().sub_(grad_loss / n)
        grad_logits_b = grad_logits @ b
        grad_a = grad_logits_b * scale
        grad_b = (grad_logits.T @ a) * scale
        # logits = scale * cosines, and sum(grad_logits * cosines) = sum(a * (grad_logits @ b))
        grad_scale = (a * grad_logits_b).sum() if ctx.needs_input_grad[2] else None
        return grad_a, grad_b, grad_scale


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
        if present is not None:
            a, b = a[present], b[present]
        if a.shape[0] < 2:
            # No negatives to contrast against; keep the graph so .backward() still works.
            return (a.sum() + b.sum()) * 0.0
        a = F.normalize(a, dim=-1)
        b = F.normalize(b, dim=-1)
        temperature = self.temperature
        # half precision underflows far sooner than float32: it takes the cross-entropies' max-shifted path
        if a.dtype in (torch.float32, torch.float64) and temperature.item() >= SHARED_EXP_MIN_TEMPERATURE:
            return _SharedExpInfoNCE.apply(a, b, temperature.reciprocal())
        logits = a @ b.T / temperature
        targets = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
