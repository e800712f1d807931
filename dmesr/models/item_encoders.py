"""Item encoders: how an item id becomes the vector every backbone embeds and scores with.

All of them are :class:`~dmesr.models.base.ItemRepresentation` subclasses, so SASRec, BERT4Rec
and GRU4Rec use any of them unchanged. The frozen inputs (``SemanticFeatures``, produced offline)
are kept as non-persistent buffers: ``.to(device)`` moves them, checkpoints stay small.

Kinds (``ItemEncoderConfig.kind``):

* ``id``      plain trainable ID table (the backbone baseline);
* ``text``    ID + adapted pooled original text (this and the next two in :mod:`dmesr.models.semantic_sum`);
* ``mllm``    ID + adapted MLLM description vector(s), one adapter per view, summed;
* ``concat``  ID + one MLP over [MLLM view vectors; original-text vector; view-present flags]
  (the "concat/MLP fusion instead of cross-attention" baseline);
* ``llmesr``  LLM-ESR-style dual view: a semantic table (adapter over the mean of the item's
  available frozen vectors) and a collaborative ID table initialised by PCA of those vectors;
  two tables, the backbone runs once per table;
* ``dmesr``   adapters -> cross-attention fusion (MLLM view vector = query, original-text tokens
  = keys/values) -> ``z^img``, ``z^txt`` -> integration with the ID embedding (``sum``,
  ``concat``, ``gate``, ``dual``), plus contrastive alignment of the two MLLM views as an
  auxiliary loss.
  Its plain form, to read the method, is :class:`dmesr.models.reference.ReferenceDMESRItems`;
  :class:`DMESRItems` computes the same tables and loss faster (``tests/test_reference.py``).

Interpretations made here (the paper only has an abstract):

* the two views share one fusion module (each has its own adapter), so the token keys/values
  are projected once per step for both views;
* alignment acts on the adapted view vectors before fusion;
* original text enters through the fusion when an item has an MLLM view to query with; an item
  with no view, or every item when ``fusion="none"``, gets the adapted pooled original text as
  its own term instead (so "without fusion" removes the mechanism, not the information);
* with a single usable MLLM view (e.g. MovieLens, no images) there is no second view to align
  with: the MLLM view is aligned with the pooled original text instead (``align_fallback``;
  needs ``use_original_text``). Set ``align_weight=0`` or ``align_fallback=False`` to turn it off.
"""

from __future__ import annotations

import logging
from importlib import import_module

import numpy as np
import torch
from torch import nn

from dmesr.config import FUSION_NORMS, FUSIONS, INTEGRATIONS, ITEM_KINDS, ItemEncoderConfig
from dmesr.enrich.features import SemanticFeatures
from dmesr.models.adapters import Adapter, freeze, with_padding_row
from dmesr.models.alignment import SymmetricInfoNCE, batch_rows
from dmesr.models.base import IDEmbedding, ItemRepresentation
from dmesr.models.frozen_semantics import ORIGINAL_TEXT, FrozenSemantics
from dmesr.models.fusion import CrossAttentionFusion
from dmesr.models.pca import pca_init
from dmesr.models.semantic_sum import ConcatMLPItems, SemanticSumItems

logger = logging.getLogger(__name__)

FUSION_HEADS = 2
ID_INIT_STD = 0.02  # the std IDEmbedding draws its vectors with


class LLMESRItems(ItemRepresentation):
    """``llmesr``: [semantic table, collaborative table]; the latter starts as a PCA of the former's input.

    The frozen semantic vector of an item is the mean of its available sources (present MLLM
    views, plus the original text when used); ``views=()`` gives LLM-ESR's text-only setting.
    The PCA projections are rescaled to the ID embeddings' init scale (std 0.02) so the
    collaborative table trains like the ID baseline; missing components (``dim`` larger than
    the rank) are drawn like ID embeddings.
    """

    def __init__(
        self, num_items: int, dim: int, config: ItemEncoderConfig, semantics: FrozenSemantics, sources: list[str]
    ):
        super().__init__(num_items, dim)
        self.semantics = semantics
        self.sources = sources
        self.adapter = Adapter(semantics.input_dim, config.adapter_hidden, dim, config.dropout)
        if config.freeze_adapters:
            freeze([self.adapter])
        total = sum(semantics.vector(s) * semantics.present(s)[:, None] for s in sources)
        count = sum(semantics.present(s).float() for s in sources).clamp(min=1)
        # fixed by the frozen features: averaged once, not every step
        self.register_buffer("frozen_semantic", total / count[:, None], persistent=False)
        self.collaborative = IDEmbedding(num_items, dim)
        with torch.no_grad():
            self.collaborative.embedding.weight[1:] = pca_init(self.frozen_semantic, dim, ID_INIT_STD)

    def tables(self) -> list[torch.Tensor]:
        semantic = with_padding_row(self.adapter(self.frozen_semantic))
        return [semantic, self.collaborative.tables()[0]]


class DMESRItems(ItemRepresentation):
    """The DMESR item encoder (see the module docstring for the design and its interpretations)."""

    def __init__(
        self,
        num_items: int,
        dim: int,
        config: ItemEncoderConfig,
        semantics: FrozenSemantics,
        align_fallback: bool = True,
    ):
        super().__init__(num_items, dim)
        if not semantics.views:
            raise ValueError("dmesr needs at least one MLLM view with data; the configured views have none")
        self.views = semantics.views
        self.integration = config.integration
        self.auxiliary_weight = config.align_weight
        self.use_original_text = config.use_original_text
        self.fuse = config.fuses_original_text
        self.ids = IDEmbedding(num_items, dim)
        self.semantics = semantics
        width, hidden = semantics.input_dim, config.adapter_hidden
        self.view_adapters = nn.ModuleDict({v: Adapter(width, hidden, dim, config.dropout) for v in self.views})
        adapters: list[nn.Module] = [self.view_adapters]
        if self.fuse:
            # after the frozen PCA a linear map suffices: the attention's key/value projections follow it
            self.token_adapter = (nn.Linear(semantics.token_dim, dim) if config.token_pca_dim > 0
                                  else Adapter(width, hidden, dim, config.dropout))
            # Start the fused vectors at the ID embeddings' scale (std 0.02), like the adapter
            # outputs of the other kinds, so no variant begins with far larger logits.
            self.fusion = CrossAttentionFusion(dim, FUSION_HEADS, config.dropout, output_scale=ID_INIT_STD,
                                               norm=config.fusion_norm)
            adapters.append(self.token_adapter)
        if config.use_original_text:
            self.text_adapter = Adapter(width, hidden, dim, config.dropout)
            adapters.append(self.text_adapter)
        self.frozen_adapters = config.freeze_adapters
        if config.freeze_adapters:
            freeze(adapters)
            # Frozen weights on frozen inputs: an adapter's first stage is the same at every step. It is
            # computed once, and again whenever a checkpoint loads, so a step runs only the dropout and
            # the second linear map (the dropout draws, and hence the outputs, stay what they were).
            self._cache_first_stages()
            self.register_load_state_dict_post_hook(lambda module, _keys: module._cache_first_stages())

        # with one MLLM view, ``align_fallback`` aligns it with the original text
        self.alignment_pair = (alignment_sources(self.views, config.use_original_text and align_fallback)
                               if self.auxiliary_weight > 0 else None)
        if self.alignment_pair is not None:
            self.alignment = SymmetricInfoNCE(config.temperature, config.learnable_temperature)
            if config.freeze_adapters:
                logger.warning("items.freeze_adapters: both aligned vectors come from frozen adapters, so the "
                               "alignment loss trains nothing (items.align_weight has no effect)")

        self._register_presence()

        # Parts integrated: the ID embedding, one fused vector per view, the direct original-text term.
        num_parts = 1 + len(self.views) + int(config.use_original_text)
        if self.integration == "concat":
            self.project = nn.Linear(num_parts * dim, dim)
        elif self.integration == "gate":
            self.gate = nn.Linear(num_parts * dim, num_parts)

    def _register_presence(self) -> None:
        """What the frozen presence flags fix, computed once: which parts each item has
        (``part_present [N, 1 + K]``), which parts a sum must mask (``sum_masks``), the items without a
        view, the items the alignment can use."""
        present = [self.semantics.present(v) for v in self.views]
        has_view = torch.stack(present, dim=1).any(dim=1)
        if self.use_original_text:
            # with fusion the direct text term only serves items without a view
            present.append(~has_view if self.fuse else torch.ones_like(has_view))
        part_present = torch.stack([torch.ones_like(has_view)] + present, dim=1)  # the ID always present
        self.register_buffer("part_present", part_present, persistent=False)
        # Only a view that some items lack needs masking in a sum: the ID is always there, and the direct
        # text term is already zero wherever it does not serve (with fusion) or serves every item.
        self.sum_masks = [False] + [not bool(flags.all()) for flags in present[:len(self.views)]]
        self.sum_masks += [False] * int(self.use_original_text)
        self.register_buffer("without_view", (~has_view).nonzero().squeeze(1), persistent=False)
        if self.alignment_pair is not None:
            first, second = self.alignment_pair
            both = self.semantics.present(first) & self.semantics.present(second)
            self.register_buffer("aligned_present", both, persistent=False)

    def _adapter(self, source: str) -> Adapter:
        return self.text_adapter if source == ORIGINAL_TEXT else self.view_adapters[source]

    def _cache_first_stages(self) -> None:
        """``first_stage_<source> [N, hidden]``: each frozen adapter's first stage over every item."""
        sources = self.views + ([ORIGINAL_TEXT] if self.use_original_text else [])
        with torch.no_grad():
            for source in sources:
                self.register_buffer(f"first_stage_{source}",
                                     self._adapter(source).first_stage(self.semantics.vector(source)),
                                     persistent=False)

    def adapt(self, source: str, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """The adapted vectors of one source (an MLLM view or ``ORIGINAL_TEXT``) for ``rows`` of the items."""
        adapter = self._adapter(source)
        if self.frozen_adapters:
            return adapter.second_stage(getattr(self, f"first_stage_{source}")[rows])
        return adapter(self.semantics.vector(source)[rows])

    def fused_views(self, return_attention: bool = False):
        """``z^v`` of every item per view -> ``[N, V, d]`` (with fusion, also attention ``[N, H, V, L]`` if asked)."""
        adapted = {v: self.adapt(v) for v in self.views}
        if torch.is_grad_enabled():
            # A training step adapts every item's views here; the alignment loss of the same step
            # reuses the batch's rows instead of running the adapters over them a second time.
            self._adapted_this_step = adapted
        queries = torch.stack([adapted[v] for v in self.views], dim=1)
        if not self.fuse:
            return queries
        tokens = self.semantics.adapted_tokens(self.token_adapter)
        return self.fusion(queries, tokens, self.semantics.token_mask, return_attention=return_attention)

    @torch.no_grad()
    def attention_weights(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Cross-attention weights ``[n, heads, views, tokens]`` of the given items (for heatmaps)."""
        if not self.fuse:
            raise ValueError("this encoder has no cross-attention (fusion='none' or no original text)")
        _, weights = self.fused_views(return_attention=True)
        return weights[item_ids.to(weights.device) - 1]

    def tables(self) -> list[torch.Tensor]:
        fused = self.fused_views()
        parts = [self.ids.tables()[0][1:]] + list(fused.unbind(dim=1))
        if self.use_original_text:
            if self.fuse:  # the direct term only serves items without a view: adapt just those rows
                direct = parts[0].new_zeros(parts[0].shape).index_copy(
                    0, self.without_view, self.adapt(ORIGINAL_TEXT, self.without_view))
            else:
                direct = self.adapt(ORIGINAL_TEXT)
            parts.append(direct)
        present = self.part_present
        if self.integration == "sum":  # part by part: no [N, 1 + K, d] stack, no multiply by flags that are all on
            total = parts[0]
            for part, flags, masked in zip(parts[1:], present.unbind(dim=1)[1:], self.sum_masks[1:]):
                total = total + (part * flags[:, None] if masked else part)
            return [with_padding_row(total)]
        stacked = torch.stack(parts, dim=1) * present[:, :, None]  # [N, 1 + K, d], absent parts zero
        if self.integration == "concat":
            return [with_padding_row(self.project(stacked.flatten(1)))]
        if self.integration == "gate":
            logits = self.gate(stacked.flatten(1)).masked_fill(~present, float("-inf"))
            weights = torch.softmax(logits, dim=1)
            return [with_padding_row((weights[:, :, None] * stacked).sum(dim=1))]
        return [with_padding_row(stacked[:, 0]), with_padding_row(stacked[:, 1:].sum(dim=1))]  # dual

    def auxiliary_loss(self, item_ids: torch.Tensor) -> torch.Tensor | None:
        """L_align: the symmetric InfoNCE between the aligned pair over the batch's unique items."""
        if self.alignment_pair is None:
            return None
        item_ids = item_ids.to(self.ids.embedding.weight.device)
        # gathering the distinct items waits for the device, and its shape breaks a compiled graph:
        # only where there is no device to wait for and nothing is compiled
        rows, present = batch_rows(item_ids, self.aligned_present,
                                   gather=item_ids.device.type == "cpu" and not torch.compiler.is_compiling())
        first, second = self.alignment_pair
        adapted = self.__dict__.pop("_adapted_this_step", {})  # one use: the next step adapts afresh
        first_rows, second_rows = (adapted[s][rows] if s in adapted else self.adapt(s, rows) for s in (first, second))
        return self.alignment(first_rows, second_rows, present)


def alignment_sources(views, use_original_text: bool) -> tuple[str, str] | None:
    """What DMESR's alignment compares: its two MLLM views, or with one view that view and the original
    text (``None`` without it)."""
    if len(views) > 2:
        raise ValueError(f"alignment is defined between two MLLM views, got {list(views)}")
    if len(views) == 2:
        return views[0], views[1]
    return (views[0], ORIGINAL_TEXT) if use_original_text else None


def _usable_views(config: ItemEncoderConfig, features: SemanticFeatures) -> list[str]:
    """Configured views the features hold for at least one item; the others are skipped."""
    usable = []
    for view in config.views:
        if view == ORIGINAL_TEXT:
            raise ValueError(f"{ORIGINAL_TEXT!r} is reserved for the original text and cannot be a view name")
        if view in features.views and np.asarray(features.view_present[view]).any():
            usable.append(view)
        else:
            logger.info("view %r has no data for this dataset; skipped", view)
    return usable


def build_item_representation(
    config: ItemEncoderConfig,
    num_items: int,
    dim: int,
    features: SemanticFeatures | None,
    *,
    align_fallback: bool = True,
) -> ItemRepresentation:
    """The item encoder named by ``config.kind`` (the registry ``dmesr.config.ITEM_KINDS``); every kind but
    ``id`` needs ``features``."""
    if config.kind not in ITEM_KINDS:
        raise ValueError(f"unknown item encoder kind {config.kind!r}; known: {', '.join(ITEM_KINDS)}")
    if config.integration not in INTEGRATIONS:
        raise ValueError(f"unknown integration {config.integration!r}; known: {', '.join(INTEGRATIONS)}")
    if config.fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {config.fusion!r}; known: {', '.join(FUSIONS)}")
    if config.fusion_norm not in FUSION_NORMS:
        raise ValueError(f"unknown fusion_norm {config.fusion_norm!r}; known: {', '.join(FUSION_NORMS)}")
    if config.kind != "id" and features is None:
        raise ValueError(f"item encoder {config.kind!r} needs semantic features; run `dmesr enrich` and `dmesr embed`")
    module, builder = ITEM_KINDS[config.kind]
    return getattr(import_module(module), builder)(config, num_items, dim, features, align_fallback)


def _semantic_inputs(config: ItemEncoderConfig, num_items: int, features: SemanticFeatures
                     ) -> tuple[FrozenSemantics, list[str], list[str]]:
    """The frozen inputs of a semantic encoder, its usable MLLM views and the original text (if used)."""
    views = _usable_views(config, features)
    semantics = FrozenSemantics(features, num_items, views, config.fuses_original_text, config.token_pca_dim)
    return semantics, views, [ORIGINAL_TEXT] if config.use_original_text else []


def _sources(config: ItemEncoderConfig, sources: list[str]) -> list[str]:
    if not sources:
        raise ValueError(f"item encoder {config.kind!r} has nothing to encode: no usable MLLM view, no original text")
    return sources


# The builders ITEM_KINDS names: (config, num_items, dim, features, align_fallback) -> the item encoder.
def id_items(config, num_items, dim, features, align_fallback) -> ItemRepresentation:
    return IDEmbedding(num_items, dim)


def text_items(config, num_items, dim, features, align_fallback) -> ItemRepresentation:
    semantics, _, _ = _semantic_inputs(config, num_items, features)
    return SemanticSumItems(num_items, dim, config, semantics, [ORIGINAL_TEXT])


def mllm_items(config, num_items, dim, features, align_fallback) -> ItemRepresentation:
    semantics, views, _ = _semantic_inputs(config, num_items, features)
    return SemanticSumItems(num_items, dim, config, semantics, _sources(config, views))


def concat_items(config, num_items, dim, features, align_fallback) -> ItemRepresentation:
    semantics, views, text = _semantic_inputs(config, num_items, features)
    return ConcatMLPItems(num_items, dim, config, semantics, _sources(config, views + text))


def llmesr_items(config, num_items, dim, features, align_fallback) -> ItemRepresentation:
    semantics, views, text = _semantic_inputs(config, num_items, features)
    return LLMESRItems(num_items, dim, config, semantics, _sources(config, views + text))


def dmesr_items(config, num_items, dim, features, align_fallback) -> ItemRepresentation:
    semantics, _, _ = _semantic_inputs(config, num_items, features)
    return DMESRItems(num_items, dim, config, semantics, align_fallback)
