"""Repeat consumption: users who come back to an item they had before (re-purchases, re-listens).

Evaluation must know about it. With seen items excluded from the ranking (the MovieLens
convention), a repeated target is the only seen item left, so the candidate set depends on the
answer and "rank the user's own past items first" wins by construction. ``has_repeats`` decides
``eval.exclude_history=auto``; ``target_is_repeat`` gives the repeat / new breakdown.
"""

from __future__ import annotations

import numpy as np

from dmesr.data.schema import SequenceSplit


def repeat_share(split: SequenceSplit) -> float:
    """Share of interactions whose item the same user had earlier in the split (0.0 on MovieLens);
    read from the split's statistics, where preprocessing records it, else counted."""
    if "repeat_consumption" in split.stats:
        return float(split.stats["repeat_consumption"])
    if not len(split.flat_items):
        return 0.0
    users = np.repeat(np.arange(split.num_users), split.lengths())
    pairs = users.astype(np.int64) * (split.num_items + 1) + split.flat_items
    return float(1.0 - len(np.unique(pairs)) / len(pairs))


def has_repeats(split: SequenceSplit) -> bool:
    """Whether any user interacts with an item more than once."""
    return repeat_share(split) > 0


def target_is_repeat(split: SequenceSplit, stage: str) -> np.ndarray:
    """``[num_users]`` bool: the validation (``"valid"``) or test target is in the user's history before it."""
    flags = np.zeros(split.num_users, dtype=bool)
    for user in range(split.num_users):
        history, target = split.held_out(user, stage)
        flags[user] = target in history
    return flags
