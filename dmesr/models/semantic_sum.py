"""The ``text``, ``mllm`` and ``concat`` item encoders: an ID table plus adapted frozen vectors.

Baselines beside DMESR (see :mod:`dmesr.models.item_encoders` for the kinds and
:func:`~dmesr.models.item_encoders.build_item_representation`, which builds them).
"""

from __future__ import annotations

import torch
from torch import nn

from dmesr.config import ItemEncoderConfig
from dmesr.models.adapters import Adapter, freeze, with_padding_row
from dmesr.models.base import IDEmbedding, ItemRepresentation
from dmesr.models.frozen_semantics import FrozenSemantics


class _IDPlusSemantics(ItemRepresentation):
    """Shared set-up of the baselines that add adapted frozen vectors (from ``sources``) to an ID table."""

    def __init__(self, num_items: int, dim: int, semantics: FrozenSemantics, sources: list[str]):
        super().__init__(num_items, dim)
        self.ids = IDEmbedding(num_items, dim)
        self.semantics = semantics
        self.sources = sources


class SemanticSumItems(_IDPlusSemantics):
    """``text`` / ``mllm``: ID embedding + sum of adapted frozen vectors, each masked by presence."""

    def __init__(
        self, num_items: int, dim: int, config: ItemEncoderConfig, semantics: FrozenSemantics, sources: list[str]
    ):
        super().__init__(num_items, dim, semantics, sources)
        self.adapters = nn.ModuleDict(
            {s: Adapter(semantics.input_dim, config.adapter_hidden, dim, config.dropout) for s in sources}
        )
        if config.freeze_adapters:
            freeze([self.adapters])

    def tables(self) -> list[torch.Tensor]:
        semantic = sum(
            self.adapters[s](self.semantics.vector(s)) * self.semantics.present(s)[:, None] for s in self.sources
        )
        return [self.ids.tables()[0] + with_padding_row(semantic)]


class ConcatMLPItems(_IDPlusSemantics):
    """``concat``: ID embedding + one MLP over all frozen vectors concatenated (absent views zeroed)."""

    def __init__(
        self, num_items: int, dim: int, config: ItemEncoderConfig, semantics: FrozenSemantics, sources: list[str]
    ):
        super().__init__(num_items, dim, semantics, sources)
        # The presence flags let the MLP tell "view absent" from "view with a small vector".
        in_dim = len(sources) * (semantics.input_dim + 1)
        self.adapter = Adapter(in_dim, config.adapter_hidden, dim, config.dropout)
        if config.freeze_adapters:
            freeze([self.adapter])
        parts = []
        for source in self.sources:
            present = self.semantics.present(source)[:, None].to(self.semantics.vector(source).dtype)
            parts += [self.semantics.vector(source) * present, present]
        # the MLP's input is fixed by the frozen features: built once, not every step
        self.register_buffer("inputs", torch.cat(parts, dim=1), persistent=False)

    def tables(self) -> list[torch.Tensor]:
        return [self.ids.tables()[0] + with_padding_row(self.adapter(self.inputs))]
