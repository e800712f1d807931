"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained by cloze (masked item) prediction.

Training hides a random ``mask_prob`` share of each window's items behind a mask token and
predicts them from both sides; at inference the history is shifted left by one and the mask
token appended, so the last position predicts the next item. Layout follows the BERT encoder
used by the RecSys 2023 reproduction ("Turning Dross Into Gold Loss"): item plus learned
positional embedding, LayerNorm, dropout, ``num_layers`` post-LayerNorm blocks with a GELU
feed-forward of width 4d, and the output scored against the same item table (no extra head).

The mask token has id ``num_items + 1`` and its vector is a parameter of this module, so the
shared item table stays ``[num_items + 1, d]`` and any :class:`ItemRepresentation` plugs in.
As in SASRec, positions count from the right and attention never reads a padding key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import ModelConfig
from dmesr.models.base import ItemRepresentation, SequentialRecommender


class BERT4Rec(SequentialRecommender):
    def __init__(self, config: ModelConfig, items: ItemRepresentation, max_len: int):
        super().__init__(config, items, max_len)
        if not 0.0 < config.mask_prob < 1.0:
            raise ValueError(f"BERT4Rec mask_prob must be in (0, 1), got {config.mask_prob}")
        if items.dim % config.num_heads:
            raise ValueError(f"hidden_size {items.dim} is not divisible by num_heads {config.num_heads}")
        width = items.dim
        self.mask_token = self.num_items + 1
        self.mask_embedding = nn.Parameter(torch.randn(width) * 0.02)
        self.position_embedding = nn.Embedding(max_len, width)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.embedding_norm = nn.LayerNorm(width)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, config.num_heads, dim_feedforward=4 * width, dropout=config.dropout,
                activation="gelu", batch_first=True,
            )
            for _ in range(config.num_layers)
        )

    def encode(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the model's max_len {self.max_len}")
        is_mask = seqs == self.mask_token
        real = seqs > 0
        x = F.embedding(seqs.masked_fill(is_mask, 0), table)
        x = torch.where(is_mask.unsqueeze(-1), self.mask_embedding, x)
        positions = torch.arange(self.max_len - length, self.max_len, device=seqs.device)
        x = self.embedding_dropout(self.embedding_norm(x + self.position_embedding(positions)))

        # Blocked = a padding key, except a query's own position (keeps all-padding rows finite).
        itself = torch.eye(length, dtype=torch.bool, device=seqs.device)
        blocked = ~(real.unsqueeze(1) | itself)
        blocked = blocked.repeat_interleave(self.config.num_heads, dim=0)  # [B * heads, L, L]
        for layer in self.layers:
            x = layer(x, src_mask=blocked)
        return x * real.unsqueeze(-1)

    def training_inputs(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cloze masking of the window's last ``max_len`` items; targets are 0 where not masked."""
        seqs = windows[:, -self.max_len :]
        real = seqs > 0
        noise = torch.rand(seqs.shape, device=seqs.device)
        masked = real & (noise < self.config.mask_prob)
        # Rows where chance masked nothing get their real item with the smallest noise masked.
        unmasked_rows = real.any(dim=1) & ~masked.any(dim=1)
        forced = noise.masked_fill(~real, 2.0).argmin(dim=1)
        masked[unmasked_rows, forced[unmasked_rows]] = True
        inputs = seqs.masked_fill(masked, self.mask_token)
        targets = seqs.masked_fill(~masked, 0)
        return inputs, targets

    def repeat_prefix(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The items before each position (masked ones restored): a cloze target's history is what
        precedes it, as at inference, where the history precedes the appended mask."""
        originals = torch.where(targets > 0, targets, inputs)
        return F.pad(originals[:, :-1], (1, 0))

    def repeat_earlier(self, windows: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """The cloze window drops the training window's first item: it joins the items before the prefix."""
        return torch.cat([earlier, windows[:, :1]], dim=1)

    def inference_inputs(self, histories: torch.Tensor) -> torch.Tensor:
        mask_column = torch.full_like(histories[:, :1], self.mask_token)
        return torch.cat([histories[:, 1:], mask_column], dim=1)
