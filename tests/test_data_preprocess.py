"""Preprocessing: duplicates, k-core, short users, stable ordering, ids, negatives, stats, fingerprint, cache."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmesr.config import DataConfig
from dmesr.data import preprocess
from dmesr.data.batches import evaluation_inputs
from dmesr.data.preprocess import build_split, dataset_stats, load_split, prepare_split, sample_negatives, save_split
from dmesr.data.schema import RawDataset, SequenceSplit

LOOSE = dict(min_user_interactions=1, min_item_interactions=1, num_sampled_negatives=0)


def make_raw(rows, name="toy"):
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": np.int64})
    ids = sorted(set(interactions["item"]))
    items = pd.DataFrame({"item": ids, "text": [f"Title: {i}." for i in ids]})
    return RawDataset(name=name, interactions=interactions, items=items)


def sequences(split):
    return {str(split.user_ids[u]): split.item_ids[split.sequence(u) - 1].tolist() for u in range(split.num_users)}


def test_duplicates_are_removed_and_counted():
    rows = [("a", "x", 1), ("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("a", "x", 4)]
    split = build_split(make_raw(rows), DataConfig(**LOOSE))
    assert sequences(split) == {"a": ["x", "y", "z", "x"]}  # a repeat at another time is kept
    assert split.stats["duplicates_removed"] == 1


def test_k_core_iterates_until_stable():
    # min 3 per user and per item. Item "r" has 2 interactions -> removed; that leaves user "c"
    # with 2 -> removed; that leaves item "q" with 2 -> removed; then users "a" and "b" have 2 -> removed.
    rows = [("a", "p", 1), ("a", "q", 2), ("a", "s", 3),
            ("b", "p", 1), ("b", "q", 2), ("b", "s", 3), ("b", "r", 4),
            ("c", "q", 1), ("c", "r", 2), ("c", "s", 3),
            ("d", "p", 1), ("d", "s", 2), ("d", "t", 3), ("d", "t", 4),
            ("e", "p", 1), ("e", "t", 2), ("e", "s", 3),
            ("f", "p", 1), ("f", "s", 2), ("f", "t", 3)]
    split = build_split(make_raw(rows), DataConfig(**{**LOOSE, "min_user_interactions": 3, "min_item_interactions": 3}))
    assert sequences(split) == {"d": ["p", "s", "t", "t"], "e": ["p", "t", "s"], "f": ["p", "s", "t"]}
    assert split.stats["users_dropped"]["below_min_user_interactions"] == 3
    assert split.stats["items_dropped"] == 2
    lengths = split.lengths()
    assert all(np.bincount(split.flat_items)[1:] >= 3) and lengths.min() >= 3


def test_empty_and_single_item_histories_are_dropped_and_counted():
    rows = [("long", "x", 1), ("long", "y", 2), ("long", "z", 3),
            ("long2", "x", 1), ("long2", "y", 2), ("long2", "z", 3),
            ("single", "x", 5),
            ("pair", "x", 1), ("pair", "y", 2),
            ("lost", "rare1", 1), ("lost", "rare2", 2), ("lost", "rare3", 3)]
    config = DataConfig(**{**LOOSE, "min_item_interactions": 2})
    split = build_split(make_raw(rows), config)
    assert split.user_ids.tolist() == ["long", "long2"]
    assert split.stats["users_dropped"] == {
        "below_min_user_interactions": 0, "fewer_than_3_interactions": 2, "all_items_filtered": 1,
    }
    with pytest.raises(ValueError, match="no interactions survive"):
        build_split(make_raw([("single", "x", 5)]), DataConfig(**LOOSE))


def test_chronological_order_with_ties_kept_in_file_order():
    rows = [("u", "c", 5), ("v", "b", 1), ("u", "a", 5), ("u", "z", 1), ("u", "b", 5), ("v", "a", 1), ("v", "c", 0)]
    split = build_split(make_raw(rows), DataConfig(**LOOSE))
    assert sequences(split) == {"u": ["z", "c", "a", "b"], "v": ["c", "b", "a"]}


def test_ids_are_sorted_numerically_when_numeric_and_items_align():
    rows = [("10", "10", 1), ("10", "2", 2), ("10", "1", 3), ("9", "2", 1), ("9", "1", 2), ("9", "10", 3)]
    split = build_split(make_raw(rows), DataConfig(**LOOSE))
    assert split.item_ids.tolist() == ["1", "2", "10"] and split.user_ids.tolist() == ["9", "10"]
    assert split.items["item"].tolist() == ["1", "2", "10"]
    assert split.items["text"].tolist() == ["Title: 1.", "Title: 2.", "Title: 10."]
    assert split.sequence(0).tolist() == [2, 1, 3]  # user "9": items 2, 1, 10


def random_raw(seed=0, users=30, items=40, per_user=12):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{rng.integers(items)}", int(t)) for u in range(users) for t in rng.integers(0, 50, per_user)]
    return make_raw(rows)


def test_negatives_are_unseen_distinct_seeded_and_separate():
    raw = make_raw(list(random_raw().interactions.drop_duplicates(["user", "item"]).itertuples(index=False)))
    config = DataConfig(min_user_interactions=1, min_item_interactions=1, num_sampled_negatives=15, negative_seed=3)
    split = build_split(raw, config)
    assert split.valid_negatives.shape == (split.num_users, 15) == split.test_negatives.shape
    for user in range(split.num_users):
        for negatives in (split.valid_negatives[user], split.test_negatives[user]):
            assert len(set(negatives.tolist())) == 15
            assert negatives.min() >= 1 and negatives.max() <= split.num_items
            assert not set(negatives.tolist()) & set(split.sequence(user).tolist())
    assert not np.array_equal(split.valid_negatives, split.test_negatives)
    again = build_split(raw, config)
    assert np.array_equal(again.valid_negatives, split.valid_negatives)
    other = build_split(raw, DataConfig(**{**vars(config), "negative_seed": 4}))
    assert not np.array_equal(other.valid_negatives, split.valid_negatives)


def test_negatives_on_repeat_data_leave_out_only_the_target():
    split = build_split(random_raw(), DataConfig(min_user_interactions=1, min_item_interactions=1,
                                                 num_sampled_negatives=15, negative_seed=3))
    assert split.stats["repeat_consumption"] > 0
    for stage, negatives, cut in (("valid", split.valid_negatives, 2), ("test", split.test_negatives, 1)):
        assert all(split.sequence(u)[-cut] not in negatives[u] for u in range(split.num_users))
        assert len(set(negatives[0].tolist())) == 15
    assert any(np.isin(split.test_negatives[u], split.sequence(u)).any() for u in range(split.num_users))


def test_negative_sampling_can_reach_exactly_every_unseen_item():
    split = SequenceSplit(name="t", item_ids=np.array(list("abcdefg")), user_ids=np.array(["u"]),
                          offsets=np.array([0, 3]), flat_items=np.array([2, 4, 5]), items=pd.DataFrame(),
                          fingerprint="")
    negatives = sample_negatives(split, 4, np.random.default_rng(0))
    assert sorted(negatives[0].tolist()) == [1, 3, 6, 7]
    with pytest.raises(ValueError, match="only 4 unseen items"):
        sample_negatives(split, 5, np.random.default_rng(0))


def test_stats_values():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3), ("b", "x", 4)]
    stats = build_split(make_raw(rows), DataConfig(**LOOSE)).stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 7)
    assert stats["density"] == pytest.approx(7 / 6)
    expected_lengths = {"min": 3.0, "p25": 3.25, "p50": 3.5, "p75": 3.75, "p90": 3.9, "max": 4.0, "mean": 3.5}
    assert stats["sequence_length"] == pytest.approx(expected_lengths)
    assert stats["params"]["min_user_interactions"] == 1 and "max_len" not in stats["params"]
    json.dumps(stats)  # must be JSON-serialisable for meta.json


def test_fingerprint_tracks_data_and_split_parameters_but_not_max_len():
    raw = random_raw()
    base = build_split(raw, DataConfig(**LOOSE)).fingerprint
    assert build_split(raw, DataConfig(**LOOSE, max_len=7)).fingerprint == base
    assert build_split(raw, DataConfig(**{**LOOSE, "min_item_interactions": 2})).fingerprint != base
    assert build_split(raw, DataConfig(**{**LOOSE, "negative_seed": 1})).fingerprint != base
    assert build_split(random_raw(seed=1), DataConfig(**LOOSE)).fingerprint != base


def test_save_split_accepts_the_same_split_written_concurrently(tmp_path, monkeypatch):
    # Two grid workers building one uncached split: the other worker's folder appears between
    # our existence check and our rename. Same fingerprint: keep theirs; a different one: error.
    split = build_split(random_raw(), DataConfig(**LOOSE))
    other_writer = build_split(random_raw(seed=1), DataConfig(**LOOSE))
    real_replace = os.replace

    def racing_replace(source, target, written_by_other_worker):
        if Path(target).name == "split" and not Path(target).exists():
            monkeypatch.setattr(preprocess.os, "replace", real_replace)
            save_split(written_by_other_worker, target)
        return real_replace(source, target)

    monkeypatch.setattr(preprocess.os, "replace", lambda s, t: racing_replace(s, t, split))
    folder = save_split(split, tmp_path / "split")
    assert load_split(folder).fingerprint == split.fingerprint
    assert sorted(os.listdir(tmp_path)) == ["split"]

    shutil.rmtree(folder)
    monkeypatch.setattr(preprocess.os, "replace", lambda s, t: racing_replace(s, t, other_writer))
    with pytest.raises(OSError):
        save_split(split, folder)
    assert load_split(folder).fingerprint == other_writer.fingerprint


def test_save_and_load_round_trip(tmp_path):
    config = DataConfig(min_user_interactions=1, min_item_interactions=1, num_sampled_negatives=5)
    split = build_split(random_raw(), config)
    folder = save_split(split, tmp_path / "split")
    save_split(split, folder)  # overwriting an existing split is allowed
    assert sorted(os.listdir(tmp_path)) == ["split"]  # no temp folders left behind
    loaded = load_split(folder)
    for key in ("item_ids", "user_ids", "offsets", "flat_items", "valid_negatives", "test_negatives"):
        assert np.array_equal(getattr(loaded, key), getattr(split, key)), key
    assert loaded.item_ids.dtype.kind == "U"
    pd.testing.assert_frame_equal(loaded.items, split.items, check_dtype=False)
    assert (loaded.name, loaded.fingerprint, loaded.stats) == (split.name, split.fingerprint, split.stats)
    (folder / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing meta.json"):
        load_split(folder)


def write_recbole_folder(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [f"{u}\t{i}\t{t}" for u, i, t in rows]
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")
    return folder


def test_prepare_split_caches_by_fingerprint(tmp_path, monkeypatch):
    raw = random_raw()
    folder = write_recbole_folder(tmp_path / "mine", raw.interactions.itertuples(index=False))
    config = DataConfig(dataset=str(folder), min_user_interactions=3, min_item_interactions=2, num_sampled_negatives=4)
    first = prepare_split(config, home=tmp_path / "home")
    cached = list((tmp_path / "home" / "processed").iterdir())
    assert [p.name for p in cached] == [f"mine-{first.fingerprint[:12]}"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached split should have been loaded")

    monkeypatch.setattr(preprocess, "build_split", no_rebuild)
    second = prepare_split(config, home=tmp_path / "home")
    assert np.array_equal(second.flat_items, first.flat_items) and second.fingerprint == first.fingerprint
    assert dataset_stats(config, home=tmp_path / "home") == first.stats == dataset_stats(second)
    monkeypatch.undo()

    # a split saved before repeats were counted (its k-core and negatives may differ) is rebuilt once
    stale = first.stats.pop("repeat_consumption")
    save_split(first, cached[0])
    assert prepare_split(config, home=tmp_path / "home").stats["repeat_consumption"] == stale
    assert json.loads((cached[0] / "meta.json").read_text())["stats"]["repeat_consumption"] == stale

    write_recbole_folder(folder, list(raw.interactions.itertuples(index=False))[:-1])
    changed = prepare_split(config, home=tmp_path / "home")
    assert changed.fingerprint != first.fingerprint
    assert len(list((tmp_path / "home" / "processed").iterdir())) == 2


def test_split_feeds_the_evaluation_inputs():
    config = DataConfig(min_user_interactions=3, min_item_interactions=1, num_sampled_negatives=3)
    split = build_split(random_raw(), config)
    test = evaluation_inputs(split, "test", max_len=5)
    assert test.targets.tolist() == [int(split.sequence(u)[-1]) for u in range(split.num_users)]
    assert test.negatives.shape == (split.num_users, 3)


def test_catalogue_too_small_for_the_sampled_protocol_skips_negatives_and_says_so():
    rows = [(user, item, t) for user in ("a", "b") for t, item in enumerate("xyz")]
    split = build_split(make_raw(rows), DataConfig(**{**LOOSE, "num_sampled_negatives": 100}))
    assert split.valid_negatives is None and split.test_negatives is None
    assert split.stats["sampled_protocol"].startswith("unavailable: a user has only 0 unseen items")
