"""Controls: DMESR with its semantic inputs broken on purpose, to see where its gain comes from.

DMESR adds two things to a backbone at once: the meaning of the MLLM descriptions and original text,
and item-side parameters (adapters, fusion, alignment) with their regularisation. A control keeps the
model, its training and every setting of a ``dmesr`` run, and changes only the frozen features it reads
(``items.control``):

* ``shuffled``  every item gets another item's description vector (one fixed derangement per view,
  among the items that have the view): the descriptions are real, their assignment is not;
* ``random``    the description vectors, the pooled original text and its token states are replaced
  by fixed random vectors of the same shape and norm (row by row, token by token): no meaning at all;
* ``text-only`` the original text alone through the same fusion: its pooled vector stands in for the
  description of every item (the MLLM is not read).

If a control gains as much over the backbone as ``dmesr`` does, the gain cannot be credited to what
the descriptions say. The permutation and the random vectors are drawn from :data:`CONTROL_SEED`, not
the training seed, so every seed of a control sees the same inputs, as every seed of ``dmesr`` does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dmesr.config import CONTROLS
from dmesr.enrich.features import SemanticFeatures

CONTROL_SEED = 0


def apply_control(features: SemanticFeatures, control: str) -> SemanticFeatures:
    """``features`` as the control ``control`` sees them (``none``: unchanged)."""
    if control not in CONTROLS:
        raise ValueError(f"unknown items.control {control!r}; known: {', '.join(CONTROLS)}")
    if control == "none":
        return features
    rng = np.random.default_rng(CONTROL_SEED)
    if control == "shuffled":
        views = {name: _deranged(vectors, features.view_present[name], rng) for name, vectors in features.views.items()}
        return dataclasses.replace(features, views=views)
    if control == "random":
        return dataclasses.replace(
            features,
            views={name: _random_like(vectors, rng) for name, vectors in features.views.items()},
            text_pooled=_random_like(features.text_pooled, rng),
            text_tokens=_random_like(features.text_tokens, rng),
        )
    # text-only: every item has the "view", and it is its original text
    return dataclasses.replace(
        features,
        views={name: features.text_pooled.copy() for name in features.views},
        view_present={name: np.ones(len(features.item_ids), dtype=bool) for name in features.views},
    )


def _deranged(vectors: np.ndarray, present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of the present items moved along one random cycle: no item keeps its own vector."""
    rows = rng.permutation(np.flatnonzero(np.asarray(present, dtype=bool)))
    moved = vectors.copy()
    moved[rows] = vectors[np.roll(rows, -1)]
    return moved


def _random_like(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian directions scaled to each last-axis vector's norm (zero vectors, e.g. padding, stay zero)."""
    norms = np.linalg.norm(vectors.astype(np.float32), axis=-1, keepdims=True)
    directions = rng.standard_normal(vectors.shape, dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return (directions * norms).astype(vectors.dtype)
