"""GRU4Rec (Hidasi et al., 2016), in the full-softmax cross-entropy form of Klenitskiy & Vasilev
(RecSys 2023): item embedding, LayerNorm, dropout, and a ``num_layers`` GRU as wide as the item
vectors, whose outputs are scored against the same table.

The LayerNorm is this project's addition. Item vectors start small (std 0.02, the scale every item
encoder here starts at), and a GRU fed such inputs is driven by its biases: every user gets nearly
the same state and the model sits on a popularity plateau, long enough for early stopping to end
some runs there. Normalised inputs make the gates see O(1) signals whatever the item encoder's
scale (measured: reports/backbones-notes.md).

Left padding must not change the result, but a GRU fed padding first would carry it in its
state. Instead of packing (sorting and per-step batches), each row is rotated so its real
items come first: the GRU then reads them from a zero state before any padding, the outputs
at real positions are exact, and rotating back restores the left-padded layout. One dense
GRU call per batch keeps the fast fused kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import ModelConfig
from dmesr.models.base import ItemRepresentation, SequentialRecommender


class GRU4Rec(SequentialRecommender):
    def __init__(self, config: ModelConfig, items: ItemRepresentation, max_len: int):
        super().__init__(config, items, max_len)
        self.input_norm = nn.LayerNorm(items.dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(
            items.dim, items.dim, num_layers=config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,  # only acts between layers
        )

    def encode(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        real = seqs > 0
        padding = length - real.sum(dim=1, keepdim=True)
        steps = torch.arange(length, device=seqs.device)
        to_front = (steps + padding) % length  # real items first, padding after them
        to_back = (steps - padding) % length  # the inverse rotation
        x = self.embedding_dropout(self.input_norm(F.embedding(seqs.gather(1, to_front), table)))
        out, _ = self.gru(x)
        out = out.gather(1, to_back.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        return out * real.unsqueeze(-1)
