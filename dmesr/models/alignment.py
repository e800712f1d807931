"""Contrastive alignment of two views of the same items (DMESR's fix for misaligned MLLM views).

The MLLM describes an item once from its image and once from its text; encoded separately, the
two descriptions land in different regions of the embedding space. A symmetric InfoNCE loss
(CLIP-style) pulls the two views of one item together and pushes them away from the other items
of the batch: row i of ``a`` must pick row i of ``b`` among all rows of ``b``, and vice versa.

Items that lack either view are left out of the loss (not zero-filled: a zero vector would be a
meaningless positive). With fewer than two usable items there are no negatives, and the loss is
a zero tensor that still belongs to the graph, so callers never branch on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
        logits = a @ b.T / self.temperature
        targets = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
