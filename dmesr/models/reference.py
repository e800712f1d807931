"""The DMESR item encoder in plain PyTorch: the method in one place, written to be read.

This is where to read the method. The modules that train (:mod:`~dmesr.models.fusion`,
:mod:`~dmesr.models.alignment`, :mod:`~dmesr.models.item_encoders`, :mod:`~dmesr.models.losses`) compute
the same values faster (attention folded around the frozen token states, both InfoNCE directions from one
exponential, cross-entropy in tiles, cached adapter stages); ``tests/test_reference.py`` checks that they
equal this file, forward values and gradients. This file has the same parameters under the same names, so
``ReferenceDMESRItems(...).load_state_dict(fast_encoder.state_dict())`` gives the same model. Dropout acts at
the same places in both, but the random masks differ (the fast forms draw the attention's in another order, and
a training step aligns the very view vectors it adapted for the item table), so the two agree exactly with
dropout off or in eval mode.

Per item ``i`` (``N`` items, model width ``d``, frozen encoder width ``D``, ``L`` original-text tokens),
the frozen inputs, computed offline by the sentence encoder (:mod:`dmesr.enrich`):

* ``e^v_i [D]``: the pooled vector of the MLLM's description of item ``i`` in view ``v`` (``image``,
  ``text``), with a flag ``present^v_i`` (an item may lack a view);
* ``T_i [L, D']``: the token states of the item's original text (title, genres...), padded, with a mask
  ``m_i [L]`` (``D' = D``, or the width of a frozen PCA of the token states, ``items.token_pca_dim``);
* ``t_i [D]``: the pooled vector of the original text.

The trained item encoder (:class:`ReferenceDMESRItems`):

1. adapters to the model width: ``q^v_i = A_v(e^v_i)``, ``K_i = A_tok(T_i) [L, d]``, ``u_i = A_txt(t_i)``
   with ``A(x) = W_2 Dropout(GELU(W_1 x + b_1)) + b_2`` (``A_tok`` is linear after the token PCA);
2. cross-attention fusion per view (:class:`ReferenceCrossAttention`): ``z^v_i = Fuse(q^v_i, K_i, m_i)``,
   the description vector as the query and the original-text tokens as keys and values (without fusion,
   ``items.fusion=none`` or no original text, ``z^v_i = q^v_i``);
3. integration with the ID embedding ``x_i`` (:meth:`ReferenceDMESRItems.tables`): parts
   ``[x_i, z^img_i, z^txt_i, u_i]`` (absent views zero; ``u_i`` only for items with no view when fusing),
   combined by ``sum``, ``concat`` (a linear map of the concatenation), ``gate`` (a softmax gate over the
   present parts) or ``dual`` (two tables, ``x`` and the sum of the rest, the backbone run on each);
4. alignment (:func:`info_nce`): symmetric InfoNCE between the two adapted views ``q^img``, ``q^txt`` over
   the distinct items of the batch that have both (with one view: that view and ``u``);
5. the training loss ``L = L_rec + lambda * L_align`` (:func:`training_loss`), ``L_rec`` the softmax
   cross-entropy of each position's next item over the whole catalogue (:func:`next_item_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import ItemEncoderConfig
from dmesr.models.adapters import Adapter, freeze
from dmesr.models.base import IDEmbedding, ItemRepresentation, SequentialRecommender
from dmesr.models.frozen_semantics import ORIGINAL_TEXT, FrozenSemantics
from dmesr.models.item_encoders import FUSION_HEADS, ID_INIT_STD, alignment_sources

# the temperature's clamp when it is learnable (as SymmetricInfoNCE's defaults)
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1.0


class ReferenceCrossAttention(nn.Module):
    """``z = Fuse(q, K, m)`` for queries ``q [N, Q, d]`` over tokens ``K [N, L, d]`` with mask ``m [N, L]``.

    Per head ``h`` of ``H`` (width ``d_h = d / H``), with ``y = LN_1(q)`` (pre-norm) or ``y = q`` (post-norm)::

        a_h = softmax_l( (y W_q + b_q)_h . (K W_k + b_k)_h,l / sqrt(d_h) )   over real tokens l (m = 1)
        attn = concat_h( sum_l a_h,l (K W_v + b_v)_h,l ) W_o + b_o
        pre-norm:  h = q + attn,       z = h + FF(LN_2(h))
        post-norm: h = LN_1(q + attn), z = LN_2(h + FF(h))

    with ``FF(x) = W_4 GELU(W_3 x + b_3) + b_4`` (width 4d). Padding tokens get weight exactly 0; an item
    without any real token gets all-zero weights, so ``attn = b_o``. Dropout acts on the weights ``a``,
    on ``attn`` and inside ``FF``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, norm: str, output_scale: float):
        super().__init__()
        self.num_heads, self.pre_norm = num_heads, norm == "pre"
        self.query, self.key, self.value, self.output = (nn.Linear(dim, dim) for _ in range(4))
        self.attention_norm, self.output_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)  # LN_1, LN_2
        self.feed_forward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)
        nn.init.constant_(self.output_norm.weight, output_scale)  # the fused vectors' initial scale

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> fused ``z [N, Q, d]`` and attention weights ``[N, H, Q, L]``."""
        n, num_queries, dim = queries.shape
        y = self.attention_norm(queries) if self.pre_norm else queries
        q, k, v = self._heads(self.query(y)), self._heads(self.key(tokens)), self._heads(self.value(tokens))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [N, H, Q, L]
        real = mask[:, None, None, :]
        # the lowest float rather than -inf keeps an item without tokens finite; "* real" zeroes its weights
        weights = torch.softmax(scores.masked_fill(~real, torch.finfo(scores.dtype).min), dim=-1) * real
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(n, num_queries, dim)
        attended = self.dropout(self.output(attended))
        if self.pre_norm:
            hidden = queries + attended
            return hidden + self.feed_forward(self.output_norm(hidden)), weights
        hidden = self.attention_norm(queries + attended)
        return self.output_norm(hidden + self.feed_forward(hidden)), weights

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, S, d]`` -> ``[N, H, S, d_h]``."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE of two views ``a, b [n, d]`` of the same ``n`` items (row ``i`` of each is item ``i``)::

        s_ij = cos(a_i, b_j) / tau
        L_align = 1/(2n) sum_i [ -log softmax_j(s_i.)_i  - log softmax_j(s_.i)_i ]

    Row ``i`` of ``a`` must pick row ``i`` of ``b`` among all rows of ``b``, and vice versa. With fewer
    than two items there is no negative: the loss is 0."""
    if len(a) < 2:
        return (a.sum() + b.sum()) * 0.0
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    targets = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class ReferenceAlignment(nn.Module):
    """The temperature of :func:`info_nce`, kept as ``log tau`` (trained when learnable, clamped to
    ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``)."""

    def __init__(self, temperature: float, learnable: bool):
        super().__init__()
        log_temperature = torch.tensor(math.log(temperature))
        if learnable:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        temperature = self.log_temperature.clamp(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)).exp()
        return info_nce(a, b, temperature)


def frozen_inputs(semantics: FrozenSemantics) -> dict[str, torch.Tensor]:
    """The frozen inputs as plain tensors: ``vector_<source> [N, D]`` (the MLLM views and
    ``original_text``), ``present_<view> [N]``, and, when kept, ``tokens [N, L, D']`` (zero at padding)
    with ``token_mask [N, L]``."""
    inputs = {}
    for source in semantics.views + [ORIGINAL_TEXT]:
        inputs[f"vector_{source}"] = semantics.vector(source)
        inputs[f"present_{source}"] = semantics.present(source)
    if hasattr(semantics, "token_mask"):
        mask = semantics.token_mask
        if hasattr(semantics, "token_base"):
            inputs["tokens"] = semantics.token_base
        else:  # kept packed (real tokens only): padded again here
            real = semantics.real_tokens.float()
            inputs["tokens"] = real.new_zeros(*mask.shape, real.shape[1]).index_put(torch.nonzero(mask, as_tuple=True),
                                                                                     real)
        inputs["token_mask"] = mask
    return inputs


class ReferenceDMESRItems(ItemRepresentation):
    """The DMESR item encoder (steps 1-4 of the module docstring) over the frozen ``inputs``
    (:func:`frozen_inputs`) of ``views``; the item side of any backbone, like the fast
    :class:`~dmesr.models.item_encoders.DMESRItems`."""

    def __init__(self, num_items: int, dim: int, config: ItemEncoderConfig, inputs: dict[str, torch.Tensor],
                 views: list[str], align_fallback: bool = True):
        super().__init__(num_items, dim)
        self.views, self.integration = list(views), config.integration
        self.use_original_text, self.fuse = config.use_original_text, config.fuses_original_text
        self.auxiliary_weight = config.align_weight
        for name, tensor in inputs.items():
            self.register_buffer(name, tensor, persistent=False)
        width, hidden = inputs[f"vector_{ORIGINAL_TEXT}"].shape[1], config.adapter_hidden
        self.ids = IDEmbedding(num_items, dim)
        self.view_adapters = nn.ModuleDict({v: Adapter(width, hidden, dim, config.dropout) for v in self.views})
        adapters: list[nn.Module] = [self.view_adapters]
        if self.fuse:
            token_width = self.tokens.shape[2]
            self.token_adapter = (nn.Linear(token_width, dim) if config.token_pca_dim > 0
                                  else Adapter(token_width, hidden, dim, config.dropout))
            self.fusion = ReferenceCrossAttention(dim, FUSION_HEADS, config.dropout, config.fusion_norm, ID_INIT_STD)
            adapters.append(self.token_adapter)
        if self.use_original_text:
            self.text_adapter = Adapter(width, hidden, dim, config.dropout)
            adapters.append(self.text_adapter)
        if config.freeze_adapters:  # items.freeze_adapters: the adapters keep their initial weights
            freeze(adapters)
        self.alignment_pair = (alignment_sources(self.views, self.use_original_text and align_fallback)
                               if self.auxiliary_weight > 0 else None)
        if self.alignment_pair is not None:
            self.alignment = ReferenceAlignment(config.temperature, config.learnable_temperature)
        num_parts = 1 + len(self.views) + int(self.use_original_text)  # ID, one z per view, u
        if self.integration == "concat":
            self.project = nn.Linear(num_parts * dim, dim)
        elif self.integration == "gate":
            self.gate = nn.Linear(num_parts * dim, num_parts)

    def adapt(self, source: str) -> torch.Tensor:
        """Step 1: ``q^v`` (a view) or ``u`` (``original_text``) of every item, ``[N, d]``."""
        adapter = self.text_adapter if source == ORIGINAL_TEXT else self.view_adapters[source]
        return adapter(getattr(self, f"vector_{source}"))

    def fused_views(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Step 2: ``z^v`` of every item, ``[N, V, d]``, and the attention weights ``[N, H, V, L]``; without
        fusion (``items.fusion=none`` or no original text) ``z^v = q^v`` and no weights."""
        queries = torch.stack([self.adapt(v) for v in self.views], dim=1)
        if not self.fuse:
            return queries, None
        return self.fusion(queries, self.token_adapter(self.tokens), self.token_mask)

    def tables(self) -> list[torch.Tensor]:
        """Step 3: the item table(s) ``[N + 1, d]`` (row 0, padding, zero)."""
        fused, _ = self.fused_views()
        has_view = torch.stack([getattr(self, f"present_{v}") for v in self.views], dim=1).any(dim=1)
        parts = [self.ids.embedding.weight[1:]] + list(fused.unbind(dim=1))
        present = [torch.ones_like(has_view)] + [getattr(self, f"present_{v}") for v in self.views]
        if self.use_original_text:  # with fusion the text enters through z, and directly only where there is no z
            parts.append(self.adapt(ORIGINAL_TEXT))
            present.append(~has_view if self.fuse else torch.ones_like(has_view))
        present = torch.stack(present, dim=1)  # [N, P]
        parts = torch.stack(parts, dim=1) * present[:, :, None]  # [N, P, d], absent parts zero
        if self.integration == "sum":
            items = [parts.sum(dim=1)]
        elif self.integration == "concat":
            items = [self.project(parts.flatten(1))]
        elif self.integration == "gate":
            gate = torch.softmax(self.gate(parts.flatten(1)).masked_fill(~present, float("-inf")), dim=1)
            items = [(gate[:, :, None] * parts).sum(dim=1)]
        else:  # dual: the collaborative table and the semantic one
            items = [parts[:, 0], parts[:, 1:].sum(dim=1)]
        return [torch.cat([item.new_zeros(1, self.dim), item]) for item in items]

    def auxiliary_loss(self, item_ids: torch.Tensor) -> torch.Tensor | None:
        """Step 4: ``L_align`` over the distinct items of ``item_ids`` (0 = padding) that have both sources."""
        if self.alignment_pair is None:
            return None
        first, second = self.alignment_pair
        rows = torch.unique(item_ids[item_ids > 0]) - 1
        rows = rows[getattr(self, f"present_{first}")[rows] & getattr(self, f"present_{second}")[rows]]
        return self.alignment(self.adapt(first)[rows], self.adapt(second)[rows])


def next_item_loss(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``L_rec``: the mean over positions with a target (``targets > 0``) of the softmax cross-entropy of
    the target among all items, scores ``h . e_j`` (``hidden [..., d]``, ``table [N + 1, d]``, column 0
    padding, never a class)."""
    real = targets > 0
    return F.cross_entropy(hidden[real] @ table[1:].T, targets[real] - 1)


def training_loss(model: SequentialRecommender, windows: torch.Tensor) -> torch.Tensor:
    """``L = L_rec + lambda * L_align`` of one batch of training windows ``[B, L + 1]`` (``lambda`` =
    ``items.align_weight``), for any backbone and item side."""
    inputs, targets = model.training_inputs(windows)
    hidden, table = model.hidden_and_table(inputs)
    loss = next_item_loss(hidden, table, targets)
    auxiliary = model.items.auxiliary_loss(windows)
    return loss if auxiliary is None else loss + model.items.auxiliary_weight * auxiliary
