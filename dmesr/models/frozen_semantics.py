"""The frozen semantic inputs of the item encoders: cached feature vectors and token states as buffers.

Non-persistent buffers: ``.to(device)`` moves them, checkpoints stay small. A source is an MLLM view
name or :data:`ORIGINAL_TEXT`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dmesr.enrich.features import SemanticFeatures
from dmesr.models.fusion import LinearTokens
from dmesr.models.pca import pca_reduce

ORIGINAL_TEXT = "original_text"  # source name of the pooled original text, beside the MLLM view names


class FrozenSemantics(nn.Module):
    """The cached features of items 1..N as buffers (row r = item r + 1; no padding row).

    A source is an MLLM view name or :data:`ORIGINAL_TEXT`. Token states are kept only for real
    tokens, compacted to ``[num_real_tokens, D]`` float16, so adapting them skips padding; after a
    token PCA they are kept padded, ``[N, L, p]`` float32 (small, and what the fusion needs then).
    """

    def __init__(self, features: SemanticFeatures, num_items: int, views: list[str], with_tokens: bool,
                 token_pca_dim: int = 0):
        super().__init__()
        if len(features.text_pooled) != num_items:
            raise ValueError(
                f"features have {len(features.text_pooled)} items but the split has {num_items}; "
                "align them with SemanticFeatures.aligned_to(split.item_ids)"
            )
        self.views = list(views)
        self.input_dim = features.dim
        for name in self.views:
            self.register_buffer(f"vector_{name}", _checked(features.views[name], f"view {name!r}"), persistent=False)
            present = torch.as_tensor(np.asarray(features.view_present[name], dtype=bool))
            self.register_buffer(f"present_{name}", present, persistent=False)
        self.register_buffer(
            f"vector_{ORIGINAL_TEXT}", _checked(features.text_pooled, "original text"), persistent=False
        )
        self.register_buffer(f"present_{ORIGINAL_TEXT}", torch.ones(num_items, dtype=torch.bool), persistent=False)
        if with_tokens:
            mask = torch.as_tensor(np.asarray(features.text_mask, dtype=bool))
            tokens = _checked(features.text_tokens, "original text tokens", dtype=torch.float16)
            if tokens.shape[:2] != mask.shape or tokens.shape[2] != self.input_dim:
                raise ValueError(f"text tokens {tuple(tokens.shape)} do not match mask {tuple(mask.shape)}")
            real_tokens = tokens[mask]
            self.register_buffer("token_mask", mask, persistent=False)
            if token_pca_dim > 0:
                # padded again: the fusion multiplies these frozen states item by item (LinearTokens)
                reduced = pca_reduce(real_tokens.float(), token_pca_dim)
                token_base = reduced.new_zeros(*mask.shape, reduced.shape[1]).index_put(
                    torch.nonzero(mask, as_tuple=True), reduced)
                self.register_buffer("token_base", token_base, persistent=False)
                # also as [N, p, L]: the fusion's products with the states need both layouts (LinearTokens)
                self.register_buffer("token_base_t", token_base.transpose(1, 2).contiguous(), persistent=False)
                self.token_dim = reduced.shape[1]
            else:
                self.register_buffer("real_tokens", real_tokens, persistent=False)
                self.token_dim = real_tokens.shape[1]

    def vector(self, source: str) -> torch.Tensor:
        return getattr(self, f"vector_{source}")

    def present(self, source: str) -> torch.Tensor:
        return getattr(self, f"present_{source}")

    def adapted_tokens(self, adapter: nn.Module) -> torch.Tensor | LinearTokens:
        """All items' token states through ``adapter``: after the token PCA (a linear adapter) the
        pair ``LinearTokens(reduced states, adapter)``, which the fusion never expands; otherwise
        the real tokens through ``adapter``, packed ``[num_real_tokens, d]``."""
        dtype = next(adapter.parameters()).dtype
        if hasattr(self, "token_base"):
            return LinearTokens(self.token_base.to(dtype), adapter, self.token_base_t.to(dtype))
        return adapter(self.real_tokens.to(dtype))  # float16 cast on the fly


def _checked(array: np.ndarray, what: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array)).to(dtype)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"cached {what} features contain NaN or infinite values; re-run `dmesr embed`")
    return tensor
