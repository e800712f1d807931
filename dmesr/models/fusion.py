"""Cross-attention fusion of coarse MLLM semantics with the item's fine-grained original text.

The plain form of this block, to read it, is :class:`dmesr.models.reference.ReferenceCrossAttention`; this
one computes the same values faster (``tests/test_reference.py`` checks it).

DMESR's fix for over-reliance on MLLM output: the coarse MLLM description vector of an item (one
per view) is the query, the token states of the item's original text (title, genres, brand...)
are keys and values. The query picks the tokens it needs, and a transformer block (residual +
LayerNorm, feed-forward) turns the result into the fused vector ``z^v``, in one of two layouts:

* ``norm="post"`` (the literal reading of the method): ``h = LN(q + attn(q))``, ``z = LN(h + FF(h))``;
  every fused vector leaves through a LayerNorm;
* ``norm="pre"`` (DMESR's default, ``ItemEncoderConfig.fusion_norm``): ``h = q + attn(LN(q))``,
  ``z = h + FF(LN(h))``; the query passes unnormalised (a residual stream), so the fused vector is
  the MLLM vector plus what the text adds to it (why it is the default, with the validation figures:
  "Fusion block" in reports/dmesr-notes.md).

Several queries per item (one per view) share the keys and values, so the token projections are
computed once for all views. Tokens can be given packed (real tokens only);
either way keys, values and the products with them are computed for real tokens only, the
larger part of the fusion's cost when texts are much shorter than the padded length.

When the tokens are a trainable linear map of frozen states (DMESR after its token PCA, see
:class:`LinearTokens`), they are never computed: the query and key maps are folded into one map of
the queries and the value and output maps into one map after the weighted sum, so the work per
token is a ``[p]``-dot product per query and head instead of three ``d x d`` projections (exact
algebra; equal to the explicit form up to float rounding, as the tests check).

Attention is written out rather than taken from ``nn.MultiheadAttention`` for two reasons: the
notebooks need the per-head weights, and an item whose text has no token at all must get an
all-zero weight row (and hence just its residual query) instead of NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from dmesr.config import FUSION_NORMS


@dataclass
class LinearTokens:
    """Token states given as ``linear(base)``: ``base [N, L, p]`` frozen (zeros at padding), ``linear``
    a trainable ``nn.Linear(p, d)``. The fusion uses the pair without forming the ``[N, L, d]`` states.

    ``base_t`` holds the same states as ``[N, p, L]`` (derived from ``base`` when not given): each of
    the fusion's products with the states runs fastest with one of the two layouts (:class:`_TokenProduct`).
    """

    base: torch.Tensor
    linear: nn.Linear
    base_t: torch.Tensor | None = None

    def __post_init__(self):
        if self.base_t is None:
            self.base_t = self.base.transpose(1, 2).contiguous()

    def materialise(self) -> torch.Tensor:
        """The explicit ``[N, L, d]`` token states (what the factored attention is equal to)."""
        return self.linear(self.base)


class _TokenProduct(torch.autograd.Function):
    """Per item, ``x @ base^T`` (``x [N, C, p]`` -> ``[N, C, L]``) or, ``over_tokens``, ``x @ base``
    (``x [N, C, L]`` -> ``[N, C, p]``), for frozen states ``base [N, L, p]`` = ``base_t [N, p, L]``^T.

    Each is computed as the tall ``[L, p]`` or ``[p, L]`` states times the few (``C = Q*H``) columns of
    ``x``, then transposed: batched products of that shape run faster on a CPU than ``[C, p] x [p, L]``.
    The backward pass of one product is the other one."""

    @staticmethod
    def multiply(x: torch.Tensor, base: torch.Tensor, base_t: torch.Tensor, over_tokens: bool) -> torch.Tensor:
        return torch.bmm(base_t if over_tokens else base, x.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    def forward(ctx, x: torch.Tensor, base: torch.Tensor, base_t: torch.Tensor, over_tokens: bool) -> torch.Tensor:
        ctx.save_for_backward(base, base_t)
        ctx.over_tokens = over_tokens
        return _TokenProduct.multiply(x, base, base_t, over_tokens)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        base, base_t = ctx.saved_tensors
        return _TokenProduct.multiply(grad, base, base_t, not ctx.over_tokens), None, None, None


class CrossAttentionFusion(nn.Module):
    """Queries ``[N, Q, d]`` attend over tokens ``[N, L, d]`` (padding masked) -> fused ``[N, Q, d]``."""

    def __init__(
        self, dim: int, num_heads: int = 2, dropout: float = 0.1, ff_multiplier: int = 4, output_scale: float = 1.0,
        norm: str = "pre",
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion width {dim} is not divisible by {num_heads} heads")
        if norm not in FUSION_NORMS:
            raise ValueError(f"unknown fusion norm {norm!r}; known: {', '.join(FUSION_NORMS)}")
        self.pre_norm = norm == "pre"
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
        # LayerNorm outputs have unit scale per component; ``output_scale`` sets the initial gain of
        # the last one: post-norm, so that fused vectors can start at the scale of the embeddings
        # they are added to; pre-norm, so that the feed-forward branch starts small beside the query.
        nn.init.constant_(self.output_norm.weight, output_scale)

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor | LinearTokens,
        token_mask: torch.Tensor,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``queries [N, Q, d]`` or ``[N, d]``, ``tokens [N, L, d]``, ``token_mask [N, L]`` (True = real).

        ``tokens`` may also be packed, ``[R, d]`` with R the number of real tokens: the real rows
        of the padded form in row-major order (``padded[token_mask]``), or :class:`LinearTokens`.

        Returns the fused vectors (shape of ``queries``) and, if asked, the attention weights
        ``[N, H, Q, L]``: zero on padding, summing to one over real tokens (all zero for an
        item without tokens).
        """
        single_query = queries.dim() == 2
        if single_query:
            queries = queries.unsqueeze(1)
        self._check_shapes(queries, tokens, token_mask)
        n, num_queries, dim = queries.shape
        normed = self.attention_norm(queries) if self.pre_norm else queries
        if isinstance(tokens, LinearTokens):
            scores, attend = self._factored_attention(normed, tokens)
        else:
            scores, attend = self._packed_attention(normed, tokens, token_mask)
        real = token_mask[:, None, None, :]
        scores = scores.masked_fill(~real, torch.finfo(scores.dtype).min)  # [N, Q, H, L]
        # The multiply makes padding weights exactly zero, also for rows with no real token,
        # whose softmax over all-masked scores would otherwise be uniform over padding.
        weights = torch.softmax(scores, dim=-1) * real
        attended = attend(self._drop_attention(weights))  # [N, Q, d], through the output map
        if self.pre_norm:
            hidden = queries + self.residual_dropout(attended)
            fused = hidden + self.feed_forward(self.output_norm(hidden))
        else:
            hidden = self.attention_norm(queries + self.residual_dropout(attended))
            fused = self.output_norm(hidden + self.feed_forward(hidden))
        if single_query:
            fused = fused.squeeze(1)
        return (fused, weights.transpose(1, 2)) if return_attention else fused  # weights [N, H, Q, L]

    def _drop_attention(self, weights: torch.Tensor) -> torch.Tensor:
        """``attention_dropout`` of ``weights [N, Q, H, L]`` with the draws it makes for ``[N, Q, L, H]``.

        Scores and weights are laid out token-last, so the softmax runs over contiguous rows and the
        products with the token states are plain batched matrix products. Dropout draws one number per
        element in memory order; the mask is drawn in the token-before-head order and transposed, so a
        seeded run draws the masks of that order, which its stored runs were trained with.
        """
        p = self.attention_dropout.p
        if not (self.training and 0 < p < 1):
            return self.attention_dropout(weights)  # identity, or all zero at p = 1: no draws either way
        n, num_queries, heads, length = weights.shape
        keep = weights.new_empty(n, num_queries, length, heads).bernoulli_(1 - p).div_(1 - p)
        return weights * keep.transpose(2, 3)

    @staticmethod
    def _check_shapes(queries: torch.Tensor, tokens: torch.Tensor | LinearTokens, token_mask: torch.Tensor) -> None:
        shape = tokens.base.shape if isinstance(tokens, LinearTokens) else tokens.shape
        expected = (int(token_mask.sum()),) if len(shape) == 2 else tuple(token_mask.shape)
        if tuple(shape[: len(expected)]) != expected or token_mask.shape[0] != queries.shape[0]:
            raise ValueError(
                f"fusion inputs disagree: queries {tuple(queries.shape)}, tokens {tuple(shape)}, "
                f"mask {tuple(token_mask.shape)}"
            )

    def _packed_attention(self, normed: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor):
        """Scores ``[N, Q, H, L]`` and the weights -> attended map (output map applied), with keys and
        values of real tokens only, for the (normalised) queries ``normed [N, Q, d]``.

        The head-width products run over real tokens only (over the padded ``[N, L, ...]`` form they would
        also work on padding, through strided broadcasts and zero-filled copies); only the small score and
        weight tensors are padded here.
        """
        n, num_queries, dim = normed.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self.query(normed).view(n, num_queries, heads, head_dim)
        length = token_mask.shape[1]
        positions = token_mask.flatten().nonzero().squeeze(1)
        if tokens.dim() == 3:
            tokens = tokens.reshape(n * length, -1)[positions]
        item_of_token = torch.div(positions, length, rounding_mode="floor")
        keys = self.key(tokens).view(-1, 1, heads, head_dim)
        values = self.value(tokens).view(-1, 1, heads, head_dim)
        packed_scores = (q[item_of_token] * keys).sum(-1) / math.sqrt(head_dim)  # [R, Q, H]
        scores = (packed_scores.new_zeros(n * length, num_queries, heads).index_copy(0, positions, packed_scores)
                  .view(n, length, num_queries, heads).permute(0, 2, 3, 1))

        def attend(weights: torch.Tensor) -> torch.Tensor:
            packed_weights = weights.permute(0, 3, 1, 2).reshape(n * length, num_queries, heads)[positions]
            attended = q.new_zeros(q.shape).index_add(0, item_of_token, packed_weights[..., None] * values)
            return self.output(attended.reshape(n, num_queries, dim))

        return scores, attend

    def _factored_attention(self, normed: torch.Tensor, tokens: LinearTokens):
        """The same scores and attended map for ``tokens = A base + a``, without forming the tokens.

        Key of a token: ``W_k (A x + a) + b_k = K x + k0`` with ``K = W_k A``; per head ``h``,
        ``q_h . k_h = (K_h^T q_h) . x + q_h . k0_h``, and ``q_h = W_q,h y + b_q,h`` for the normalised
        query ``y``, so one map of ``y`` gives the folded query ``K_h^T q_h`` (and the shift
        ``q_h . k0_h``, scaled by ``1 / sqrt(head_dim)`` in the same map) for every head. Value: the
        weighted sum of ``V x + v0`` is ``V (sum_l w_l x_l) + v0 sum_l w_l`` (the weights do not sum to
        one under dropout); the output map ``W_o`` is folded into ``V`` and ``v0`` likewise, so the
        attended vectors leave through one map of ``[sum_l w_l x_l, sum_l w_l]`` per head.

        Both products with the frozen states go through :class:`_TokenProduct`, forward and backward.
        """
        n, num_queries, dim = normed.shape
        heads, head_dim = self.num_heads, self.head_dim
        base, length = tokens.base, tokens.base.shape[1]
        # per head, the key side [p + 1, hd]: K_h^T (the folded query) and k0_h (the shift)
        key_side = _composed(self.key, tokens.linear).view(heads, head_dim, -1).transpose(1, 2) / math.sqrt(head_dim)
        query_weight = self.query.weight.view(heads, head_dim, dim)
        query_map = (key_side @ query_weight).reshape(-1, dim)  # [H * (p + 1), d]
        query_bias = (key_side @ self.query.bias.view(heads, head_dim, 1)).reshape(-1)
        folded = F.linear(normed, query_map, query_bias).view(n, num_queries, heads, -1)  # [N, Q, H, p + 1]
        per_token = _TokenProduct.apply(folded[..., :-1].reshape(n, num_queries * heads, -1), base,
                                        tokens.base_t, False)
        scores = per_token.view(n, num_queries, heads, length) + folded[..., -1:]
        # per head, the value side [hd, p + 1]: V_h and v0_h, then through the head's columns of W_o
        value_side = _composed(self.value, tokens.linear)
        output_weight = self.output.weight.view(dim, heads, head_dim).transpose(0, 1)  # [H, d, hd]
        output_map = (output_weight @ value_side.view(heads, head_dim, -1)).transpose(0, 1).reshape(dim, -1)

        def attend(weights: torch.Tensor) -> torch.Tensor:
            summed = _TokenProduct.apply(weights.reshape(n, num_queries * heads, length), base, tokens.base_t, True)
            summed = torch.cat([summed.view(n, num_queries, heads, -1), weights.sum(-1, keepdim=True)], dim=-1)
            return F.linear(summed.reshape(n, num_queries, -1), output_map, self.output.bias)

        return scores, attend


def _composed(outer: nn.Linear, inner: nn.Linear) -> torch.Tensor:
    """``outer(inner(x))`` as one ``[out, in + 1]`` map of ``[x; 1]``: the weights' product, then the bias."""
    return torch.cat([outer.weight @ inner.weight, (outer.weight @ inner.bias + outer.bias)[:, None]], dim=1)
