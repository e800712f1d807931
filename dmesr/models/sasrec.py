"""SASRec (Kang & McAuley, 2018): a causal self-attention sequential recommender.

Item vectors come from the shared :class:`ItemRepresentation` table, so the same module runs
over ID embeddings or DMESR's fused item vectors. Layout follows the RecSys 2023 reproduction
("Turning Dross Into Gold Loss"): item embedding times sqrt(d) plus a learned positional
embedding, dropout, ``num_layers`` pre-LayerNorm blocks of causal multi-head attention and a
point-wise feed-forward of width d, then a final LayerNorm. Trained with full cross-entropy it
is the strongest of the three backbones in that paper.

Why sqrt(d): item vectors start at std 0.02, like the positional ones; scaling lets the item
signal dominate from the first step (measured: reports/backbones-notes.md).

Two details make it exact for left-padded batches:

* positions are counted from the right, so the latest item always gets the same positional
  vector and the amount of padding does not change any real position's output;
* attention never reads a padding key. Every query may always read itself, so a padding query
  (which has no real key to its left) gets a defined value instead of a NaN from an all-masked
  softmax; padding outputs are zeroed at the end.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import ModelConfig
from dmesr.models.base import ItemRepresentation, SequentialRecommender


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int, dropout: float):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"hidden_size {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.attention_dropout = dropout
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x [B, L, d]``, ``allowed [B, 1, L, L]`` (True = the query may read that key)."""
        batch, length, width = x.shape
        q, k, v = (
            t.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)
            for t in self.qkv(x).split(width, dim=-1)
        )
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.residual_dropout(self.out(y))


class Block(nn.Module):
    def __init__(self, width: int, num_heads: int, dropout: float, inner: int = 0, activation: str = "relu",
                 post_norm: bool = False, inner_dropout: bool = True):
        super().__init__()
        self.post_norm = post_norm
        self.attention_norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, num_heads, dropout)
        self.feed_forward_norm = nn.LayerNorm(width)
        # point-wise two-layer network, of width d with a ReLU in the SASRec paper
        inner = inner or width
        self.feed_forward = nn.Sequential(
            nn.Linear(width, inner), nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Dropout(dropout) if inner_dropout else nn.Identity(),
            nn.Linear(inner, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.post_norm:  # the original Transformer's order: normalise each residual sum
            x = self.attention_norm(x + self.attention(x, allowed))
            return self.feed_forward_norm(x + self.feed_forward(x))
        x = x + self.attention(self.attention_norm(x), allowed)
        return x + self.feed_forward(self.feed_forward_norm(x))


class SASRec(SequentialRecommender):
    def __init__(self, config: ModelConfig, items: ItemRepresentation, max_len: int):
        super().__init__(config, items, max_len)
        width = items.dim
        self.position_embedding = nn.Embedding(max_len, width)
        self.embedding_dropout = nn.Dropout(config.dropout)
        post_norm = config.norm_layout == "post"
        blocks = (Block(width, config.num_heads, config.dropout, config.inner_size, config.activation, post_norm,
                        config.inner_dropout) for _ in range(config.num_layers))
        self.blocks = nn.ModuleList(blocks)
        # post-norm blocks end normalised and take a normalised input; pre-norm ones need a final norm
        self.embedding_norm = nn.LayerNorm(width) if post_norm else nn.Identity()
        self.final_norm = nn.Identity() if post_norm else nn.LayerNorm(width)
        self.embedding_scale = math.sqrt(width) if config.scale_embeddings else 1.0
        self.positions_from_oldest = config.positions == "oldest"
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        if config.init == "normal":
            for module in self.blocks.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)

    def encode(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the model's max_len {self.max_len}")
        real = seqs > 0
        if self.positions_from_oldest:  # the oldest item of the window is position 0 (padding reads it too)
            positions = (real.cumsum(dim=1) - 1).clamp(min=0)
        else:
            positions = torch.arange(self.max_len - length, self.max_len, device=seqs.device)
        x = F.embedding(seqs, table) * self.embedding_scale + self.position_embedding(positions)
        x = self.embedding_dropout(self.embedding_norm(x)) * real.unsqueeze(-1)

        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        itself = torch.eye(length, dtype=torch.bool, device=seqs.device)
        allowed = ((causal & real.unsqueeze(1)) | itself).unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.final_norm(x) * real.unsqueeze(-1)
