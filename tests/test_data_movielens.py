"""The real MovieLens splits match the published protocol counts (slow: fetched once per session into the
suite's own data home, see conftest.py)."""

import os

import numpy as np
import pytest

from dmesr.config import DataConfig
from dmesr.data import prepare_split


@pytest.fixture(scope="module")
def home():
    return os.environ["DMESR_HOME"]


def check_split_invariants(split):
    assert split.lengths().min() >= 5
    assert np.bincount(split.flat_items, minlength=split.num_items + 1)[1:].min() >= 5
    assert len(split.items) == split.num_items and (split.items["text"] != "").all()
    assert split.valid_negatives.shape == (split.num_users, 100)


@pytest.mark.slow
def test_ml_1m_published_5_core_counts(home):
    split = prepare_split(DataConfig(dataset="ml-1m"), home)
    assert (split.num_users, split.num_items, len(split.flat_items)) == (6040, 3416, 999_611)
    check_split_invariants(split)


@pytest.mark.slow
def test_ml_100k_and_ml_latest_small_counts(home):
    ml100k = prepare_split(DataConfig(dataset="ml-100k"), home)
    assert (ml100k.num_users, ml100k.num_items) == (943, 1349)
    check_split_invariants(ml100k)
    small = prepare_split(DataConfig(dataset="ml-latest-small"), home)
    assert small.num_users == 671 and small.stats["raw"]["interactions"] == 100_004
    check_split_invariants(small)
