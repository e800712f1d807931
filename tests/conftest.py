"""Shared fixtures: a tiny, learnable synthetic split (no download) and quiet, single-thread torch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dmesr.data.schema import SequenceSplit

torch.set_num_threads(1)


def make_tiny_split(num_users: int = 40, num_items: int = 30, length: int = 12, seed: int = 0) -> SequenceSplit:
    """Every user walks the catalogue in order from a random start: the next item is learnable."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, num_items, size=num_users)
    sequences = [((start + np.arange(length)) % num_items) + 1 for start in starts]
    flat = np.concatenate(sequences).astype(np.int64)
    item_ids = np.array([f"i{k}" for k in range(1, num_items + 1)])

    def negatives(stage_seed: int) -> np.ndarray:
        draw = np.random.default_rng(stage_seed)
        rows = []
        for seq in sequences:
            pool = np.setdiff1d(np.arange(1, num_items + 1), seq)
            rows.append(draw.choice(pool, size=5, replace=False))
        return np.stack(rows)

    return SequenceSplit(
        name="tiny",
        item_ids=item_ids,
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        offsets=np.arange(0, (num_users + 1) * length, length, dtype=np.int64),
        flat_items=flat,
        items=pd.DataFrame({"item": item_ids, "text": [f"Title: item {k}." for k in range(1, num_items + 1)]}),
        fingerprint="tiny-fingerprint",
        stats={"users": num_users, "items": num_items},
        valid_negatives=negatives(1),
        test_negatives=negatives(2),
    )


@pytest.fixture
def tiny_split() -> SequenceSplit:
    return make_tiny_split()


@pytest.fixture
def gru4rec_cells_fail(monkeypatch):
    """Grid cells of model gru4rec crash in training ("the data broke"); the others train as usual."""
    from dmesr.experiments import runner

    real_train_run = runner.train_run

    def train_or_fail(config, show_progress=True):
        if config.model.name == "gru4rec":
            raise RuntimeError("the data broke")
        return real_train_run(config, show_progress)

    monkeypatch.setattr(runner, "train_run", train_or_fail)
