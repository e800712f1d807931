"""Ranking metrics from score matrices: target ranks, then HR / NDCG / MRR at several cut-offs.

Everything is vectorised over users (one comparison of every item with the target's score), so a
whole catalogue is ranked for thousands of users in milliseconds.

Ranks are 0-based and PESSIMISTIC: an item whose score equals the target's counts as ranked above
it. A model that scores every item the same therefore gets the worst possible rank, never the
best, and a model cannot look good by producing ties.
"""

from __future__ import annotations

import math

import numpy as np
import torch

METRIC_NAMES = ("HR", "NDCG", "MRR")


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of each target among items ``1..n`` -> LongTensor ``[B]``.

    ``scores [B, n + 1]``: column 0 is padding and is never ranked. ``targets [B]``: ids in ``1..n``.
    ``excluded [B, n + 1]`` (bool, optional): items removed from the ranking. The target itself is
    always ranked, even when it is marked excluded (a repeated item stays rankable).
    rank = number of other ranked items whose score is ``>=`` the target's (pessimistic ties).
    """
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must have shape [batch, num_items + 1], got {tuple(scores.shape)}")
    batch, num_items = scores.shape[0], scores.shape[1] - 1
    if targets.shape != (batch,):
        raise ValueError(f"targets must have shape [{batch}], got {tuple(targets.shape)}")
    if batch and (targets.min() < 1 or targets.max() > num_items):
        raise ValueError(f"target ids must lie in 1..{num_items}, got {targets.min()}..{targets.max()}")
    item_scores = scores[:, 1:]
    nan_rows = torch.isnan(item_scores).any(dim=1)
    if nan_rows.any():
        raise ValueError(f"scores contain NaN in {int(nan_rows.sum())} of {batch} rows")
    target_index = (targets.to(scores.device) - 1).unsqueeze(1)
    target_scores = item_scores.gather(1, target_index)
    at_or_above = item_scores >= target_scores
    if excluded is not None:
        if excluded.shape != scores.shape or excluded.dtype != torch.bool:
            raise ValueError(f"excluded must be a bool tensor of shape {tuple(scores.shape)}")
        at_or_above &= ~excluded[:, 1:]
    # The target compares >= to itself; remove that self-count (absent when it was marked excluded).
    self_count = at_or_above.gather(1, target_index).squeeze(1)
    return at_or_above.sum(dim=1) - self_count.long()


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = (5, 10, 20)) -> dict[str, torch.Tensor]:
    """Per-user ``HR@K``, ``NDCG@K`` (1/log2(rank+2)) and ``MRR@K`` (1/(rank+1)), zero when rank >= K."""
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive integers, got {ks!r}")
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be a 1-D tensor, got shape {tuple(ranks.shape)}")
    if len(ranks) and ranks.min() < 0:
        raise ValueError(f"ranks must be >= 0, got {int(ranks.min())}")
    ranks = ranks.double()
    ndcg = 1.0 / torch.log2(ranks + 2.0)
    reciprocal = 1.0 / (ranks + 1.0)
    per_user: dict[str, torch.Tensor] = {}
    for name, gain in zip(METRIC_NAMES, (torch.ones_like(ranks), ndcg, reciprocal)):
        for k in ks:
            per_user[f"{name}@{k}"] = torch.where(ranks < k, gain, torch.zeros_like(gain))
    return per_user


def summarize(per_user: dict[str, torch.Tensor | np.ndarray]) -> dict[str, float]:
    """Mean of each per-user metric (NaN for an empty group)."""
    means = {}
    for name, values in per_user.items():
        values = torch.as_tensor(values, dtype=torch.float64)
        means[name] = float(values.mean()) if values.numel() else math.nan
    return means
