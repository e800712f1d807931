"""Cross-attention fusion of coarse MLLM semantics with the item's fine-grained original text.

DMESR's fix for over-reliance on MLLM output: the coarse MLLM description vector of an item (one
per view) is the query, the token states of the item's original text (title, genres, brand...)
are keys and values. The query picks the tokens it needs, and a post-LayerNorm transformer block
(residual + LayerNorm, feed-forward, residual + LayerNorm) turns the result into the fused vector
``z^v``. Several queries per item (one per view) share the keys and values, so the token
projections are computed once for all views.

Attention is written out rather than taken from ``nn.MultiheadAttention`` for two reasons: the
notebooks need the per-head weights, and an item whose text has no token at all must get an
all-zero weight row (and hence just its residual query) instead of NaN.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CrossAttentionFusion(nn.Module):
    """Queries ``[N, Q, d]`` attend over tokens ``[N, L, d]`` (padding masked) -> fused ``[N, Q, d]``."""

    def __init__(
        self, dim: int, num_heads: int = 2, dropout: float = 0.1, ff_multiplier: int = 4, output_scale: float = 1.0
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.attention_dropout = nn.Dropout(dropout)
        self.residual_dropout = nn.Dropout(dropout)
        self.attention_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ff_multiplier * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_multiplier * dim, dim),
            nn.Dropout(dropout),
        )
        self.output_norm = nn.LayerNorm(dim)
        # LayerNorm outputs have unit scale per component; ``output_scale`` sets the initial gain so
        # fused vectors can start at the scale of the embeddings they are added to.
        nn.init.constant_(self.output_norm.weight, output_scale)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)  # [N, H, len, hd]

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``queries [N, Q, d]`` or ``[N, d]``, ``tokens [N, L, d]``, ``token_mask [N, L]`` (True = real).

        Returns the fused vectors (shape of ``queries``) and, if asked, the attention weights
        ``[N, H, Q, L]``: zero on padding, summing to one over real tokens (all zero for an
        item without tokens).
        """
        single_query = queries.dim() == 2
        if single_query:
            queries = queries.unsqueeze(1)
        if tokens.shape[:2] != token_mask.shape or tokens.shape[0] != queries.shape[0]:
            raise ValueError(
                f"fusion inputs disagree: queries {tuple(queries.shape)}, tokens {tuple(tokens.shape)}, "
                f"mask {tuple(token_mask.shape)}"
            )
        n, num_queries, dim = queries.shape
        q = self._split_heads(self.query(queries))
        k = self._split_heads(self.key(tokens))
        v = self._split_heads(self.value(tokens))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [N, H, Q, L]
        real = token_mask[:, None, None, :]
        scores = scores.masked_fill(~real, torch.finfo(scores.dtype).min)
        # The multiply makes padding weights exactly zero, also for rows with no real token,
        # whose softmax over all-masked scores would otherwise be uniform over padding.
        weights = torch.softmax(scores, dim=-1) * real
        attended = self.attention_dropout(weights) @ v  # [N, H, Q, hd]
        attended = attended.transpose(1, 2).reshape(n, num_queries, dim)
        hidden = self.attention_norm(queries + self.residual_dropout(self.output(attended)))
        fused = self.output_norm(hidden + self.feed_forward(hidden))
        if single_query:
            fused = fused.squeeze(1)
        return (fused, weights) if return_attention else fused
