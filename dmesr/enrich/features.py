"""The cached semantic inputs of the DMESR item encoder, aligned to a dataset's items.

Produced by the enrichment + embedding stages, consumed by ``dmesr.models.item_encoders``.
Every array is row-aligned with ``item_ids``; a view an item lacks (e.g. no image) has
``view_present[view][row] == False`` and a zero vector, which consumers must mask, not use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SemanticFeatures:
    item_ids: np.ndarray  # [N] original item ids (str)
    views: dict[str, np.ndarray]  # view name ("image", "text") -> [N, D] float32 pooled description vectors
    view_present: dict[str, np.ndarray]  # view name -> [N] bool
    text_pooled: np.ndarray  # [N, D] float32 pooled original item text
    text_tokens: np.ndarray  # [N, L, D] float16 token states of the original item text
    text_mask: np.ndarray  # [N, L] bool, True = real token
    meta: dict = field(default_factory=dict)  # encoder id, dims, prompt hashes, source fingerprint

    @property
    def dim(self) -> int:
        return int(self.text_pooled.shape[1])

    def aligned_to(self, item_ids: np.ndarray) -> "SemanticFeatures":
        """Rows reordered to ``item_ids``; an id without features is an error, never a silent zero."""
        position = {str(item): row for row, item in enumerate(self.item_ids)}
        missing = [str(item) for item in item_ids if str(item) not in position]
        if missing:
            raise KeyError(
                f"{len(missing)} of {len(item_ids)} items have no cached features "
                f"(first: {missing[:5]}); run `dmesr enrich` and `dmesr embed` for this dataset"
            )
        rows = np.array([position[str(item)] for item in item_ids], dtype=np.int64)
        return SemanticFeatures(
            item_ids=np.asarray(item_ids).astype(str),
            views={name: array[rows] for name, array in self.views.items()},
            view_present={name: mask[rows] for name, mask in self.view_present.items()},
            text_pooled=self.text_pooled[rows],
            text_tokens=self.text_tokens[rows],
            text_mask=self.text_mask[rows],
            meta=dict(self.meta),
        )
