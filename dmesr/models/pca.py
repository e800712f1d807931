"""Principal components of frozen item vectors, for the two item encoders that reduce or seed with them.

Both centre the vectors and project them on their top principal directions. They keep the routine
each stored run was trained with, so that a rerun sees the same inputs to the last bit: ``eigh`` of the
covariance for the token states (:func:`pca_reduce`), an SVD for the LLM-ESR collaborative table
(:func:`pca_init`, which also needs the singular values to find the rank). The two agree up to the
sign of each direction and float rounding; moving one onto the other would change stored runs' inputs.
"""

from __future__ import annotations

import torch


def _centred(vectors: torch.Tensor) -> torch.Tensor:
    return vectors - vectors.mean(dim=0, keepdim=True)


def pca_reduce(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """Centred projection on the top ``dim`` principal directions (deterministic: eigh of the covariance)."""
    centred = _centred(vectors)
    _, directions = torch.linalg.eigh(centred.T @ centred)
    return centred @ directions[:, -dim:].flip(1)


def pca_init(vectors: torch.Tensor, dim: int, std: float) -> torch.Tensor:
    """``[len(vectors), dim]`` initial embeddings: the principal-component scores rescaled to ``std``, and
    where the vectors have rank below ``dim``, random columns of that std."""
    u, s, _ = torch.linalg.svd(_centred(vectors), full_matrices=False)
    rank = min(dim, int((s > 1e-6 * s.max().clamp(min=1e-12)).sum()))
    projected = u[:, :rank] * s[:rank]
    if rank:
        projected = projected / projected.std().clamp(min=1e-12) * std
    filler = torch.randn(len(vectors), dim - rank) * std
    return torch.cat([projected, filler], dim=1)
