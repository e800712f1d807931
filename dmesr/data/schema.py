"""The two in-memory forms every loader and every later stage agree on.

``RawDataset``: what a loader returns (any source: MovieLens, RecBole atomic files, Amazon, CSV).
``SequenceSplit``: what preprocessing returns and saves: per-user chronological sequences of
internal item ids (1..num_items, 0 = padding) with the leave-one-out split implied:

* train part  = ``sequence[:-2]``
* validation  = history ``sequence[:-2]``, target ``sequence[-2]``
* test        = history ``sequence[:-1]``, target ``sequence[-1]``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

INTERACTION_COLUMNS = ("user", "item", "timestamp")
# Evaluation stages and how many items at the end of a user's sequence each holds out (leave-one-out);
# training sees what comes before both targets
STAGES = {"valid": 2, "test": 1}


@dataclass
class RawDataset:
    """``interactions``: columns user (str), item (str), timestamp (int64), in file order.

    ``items``: one row per item with column ``item`` (str), ``text`` (the assembled original
    item text) plus any source fields (title, year, genres, ...), and ``image_path`` (str or
    None) when the source has images.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    source_files: list[Path] = field(default_factory=list)


@dataclass
class SequenceSplit:
    name: str
    item_ids: np.ndarray  # [num_items] original item id (str) of internal id i at index i - 1
    user_ids: np.ndarray  # [num_users] original user id (str)
    offsets: np.ndarray  # [num_users + 1] CSR offsets into ``flat_items``
    flat_items: np.ndarray  # [num_interactions] internal item ids, users concatenated in order
    items: pd.DataFrame  # item table, row i - 1 describes internal id i
    fingerprint: str  # hash of raw files + preprocessing parameters
    stats: dict = field(default_factory=dict)
    # sampled protocol: [num_users, k] internal ids never interacted by the user, drawn once
    valid_negatives: np.ndarray | None = None
    test_negatives: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def sequence(self, user: int) -> np.ndarray:
        return self.flat_items[self.offsets[user] : self.offsets[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def held_out(self, user: int, stage: str) -> tuple[np.ndarray, int]:
        """``(history, target)`` of ``user`` at ``stage`` (``STAGES``): the one rule of what a stage holds out."""
        if stage not in STAGES:
            raise ValueError(f"unknown evaluation stage {stage!r}; known: {', '.join(STAGES)}")
        if not 0 <= user < self.num_users:
            raise ValueError(f"user index {user} is out of range 0..{self.num_users - 1}")
        sequence, cut = self.sequence(user), STAGES[stage]
        return sequence[:-cut], int(sequence[-cut])

    def train_part(self, user: int) -> np.ndarray:
        """What training sees of ``user``: the history before both held-out targets."""
        return self.held_out(user, "valid")[0]
