"""The DMESR item encoder's parts as the module holds them: names, classes and tensor shapes.

``encoder_parts`` reads them off a built :class:`~dmesr.models.item_encoders.DMESRItems` (nothing is
typed in), so the diagram ``dmesr.viz.item_encoder_diagram`` draws from it stays in step with the code:
each part's ``path`` is the attribute a reader finds it under (``encoder.get_submodule(path)``). The same parts
written plainly, with their equations and shapes, are :mod:`dmesr.models.reference` (same attribute names).
"""

from __future__ import annotations

from torch import nn

from dmesr.models.adapters import Adapter
from dmesr.models.frozen_semantics import ORIGINAL_TEXT


def _shape(*sizes) -> str:
    return "[" + ", ".join(str(size) for size in sizes) + "]"


def _maps(module: nn.Module) -> str:
    """An adapter's widths (``384 -> 256 -> 64``) or a linear map's (``64 -> 64``)."""
    if isinstance(module, Adapter):
        return f"{module[0].in_features} \u2192 {module[0].out_features} \u2192 {module[3].out_features}"
    return f"{module.in_features} \u2192 {module.out_features}"


def _adapter_key(source: str) -> str:
    return "adapter_text" if source == ORIGINAL_TEXT else f"view_adapter_{source}"


def encoder_parts(encoder) -> dict[str, dict]:
    """``{key: {"title", "path", "cls", "shape", "stage", "stream"}}`` for every part of ``encoder`` (a DMESRItems):
    the frozen inputs, the trained adapters, the fusion, the alignment (``aligns``: the two adapters whose
    outputs it compares), the integration, the item table.

    ``path`` is the submodule (or buffer) it lives in, ``shape`` the tensor it produces for all items
    (``N`` items, width ``d``), ``stage`` one of input / adapter / fusion / alignment / output, ``stream``
    what it carries (an MLLM ``view``, the original-text ``tokens``, the pooled ``text``, the ``ids``)."""
    semantics = encoder.semantics
    items, width, dim = encoder.num_items, semantics.input_dim, encoder.dim
    parts = {}
    for view in encoder.views:
        parts[f"view_{view}"] = {"title": f"{view}-view description vector", "path": f"semantics.vector_{view}",
                                  "cls": "frozen MiniLM", "shape": _shape(items, width), "stage": "input", "stream": "view"}
        parts[f"view_adapter_{view}"] = {"title": f"adapter ({view} view)", "path": f"view_adapters.{view}",
                                    "cls": "Adapter", "shape": f"{_maps(encoder.view_adapters[view])}: "
                                    + _shape(items, dim), "stage": "adapter", "stream": "view"}
    if encoder.fuse:
        lengths = tuple(semantics.token_mask.shape)
        token_width = semantics.token_dim
        parts["input_tokens"] = {"title": "original-text tokens", "path": "semantics.token_mask",
                                 "cls": "frozen MiniLM" + (f" + PCA to {token_width}" if token_width != width else ""),
                                 "shape": _shape(*lengths, token_width), "stage": "input", "stream": "tokens"}
        parts["adapter_tokens"] = {"title": "token adapter", "path": "token_adapter",
                                   "cls": type(encoder.token_adapter).__name__,
                                   "shape": f"{_maps(encoder.token_adapter)}: " + _shape(*lengths, dim),
                                   "stage": "adapter", "stream": "tokens"}
        fusion = encoder.fusion
        parts["fusion"] = {"title": "cross-attention fusion", "path": "fusion", "cls": "CrossAttentionFusion",
                           "shape": f"{fusion.num_heads} heads; query = view, keys/values = tokens: z "
                                    + _shape(items, len(encoder.views), dim), "stage": "fusion", "stream": "fusion"}
    if encoder.use_original_text:
        parts["input_text"] = {"title": "pooled original text", "path": f"semantics.vector_{ORIGINAL_TEXT}",
                               "cls": "frozen MiniLM", "shape": _shape(items, width), "stage": "input", "stream": "text"}
        parts["adapter_text"] = {"title": "text adapter", "path": "text_adapter", "cls": "Adapter",
                                 "shape": f"{_maps(encoder.text_adapter)}: " + _shape(items, dim), "stage": "adapter",
                                 "stream": "text"}
    parts["input_ids"] = {"title": "item ID embedding", "path": "ids.embedding", "cls": "IDEmbedding",
                          "shape": _shape(items + 1, dim), "stage": "adapter", "stream": "ids"}
    if encoder.alignment_pair is not None:
        first, second = encoder.alignment_pair
        parts["alignment"] = {"title": "alignment loss L_align", "path": "alignment", "cls": "SymmetricInfoNCE",
                              "shape": f"{first} vs {second.replace('_', ' ')} adapted, "
                                       f"\u03c4 = {float(encoder.alignment.temperature):.2f}", "stage": "alignment",
                              "stream": "alignment", "aligns": [_adapter_key(source) for source in (first, second)]}
    integrated = {"sum": "sum", "concat": "concat + project", "gate": "softmax gate", "dual": "dual tables"}
    parts["integration"] = {"title": f"integration: {integrated[encoder.integration]}",
                            "path": {"concat": "project", "gate": "gate"}.get(encoder.integration, ""),
                            "cls": "DMESRItems.tables", "shape": _shape(items + 1, dim), "stage": "output",
                            "stream": "output"}
    return parts
