"""Your data exactly as given: ids are the strings written, times are compared exactly."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from dmesr.cli import main
from dmesr.config import DataConfig
from dmesr.data import build_split
from dmesr.data.loaders import normalise_ids, parse_timestamps
from dmesr.data.tables import load_table

BIG, BIGGER = "9007199254740992", "9007199254740993"  # 2^53 and 2^53 + 1: one float


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_data_add_counts_as_many_users_and_items_as_distinct_strings(tmp_path, home, capsys):
    """`007` and `7`, and two ids past 2^53 beside a fraction that would make the column floats, stay apart."""
    users = ["007", "7", BIG, BIGGER, "2.5"]
    items = ["007", "7", BIG, BIGGER]
    rows = [(user, item, step) for user in users for step, item in enumerate(items)]
    pd.DataFrame(rows, columns=["user", "item", "t"]).to_csv(tmp_path / "log.csv", index=False)
    assert main(["data", "add", "ids", "--interactions", str(tmp_path / "log.csv"), "--user", "user",
                 "--item", "item", "--time", "t"]) == 0
    assert "added ids: 5 users, 4 items, 20 interactions" in capsys.readouterr().out


def test_json_lines_keep_64_bit_ids_and_numbers_as_written(tmp_path):
    path = tmp_path / "log.jsonl"
    records = [{"u": int(BIG), "i": 7, "t": 1}, {"u": int(BIGGER), "i": 7, "t": 2}, {"u": 1.5, "i": 7, "t": 3}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert load_table(path, "u", "i", "t").interactions["user"].tolist() == [BIG, BIGGER, "1.5"]


def test_a_whole_column_of_dot_zero_ids_is_read_without_it_and_announced(caplog):
    with caplog.at_level(logging.WARNING):
        assert normalise_ids(pd.Series(["1.0", "20.0"]), "item", "items.csv").tolist() == ["1", "20"]
    assert "items.csv: 2 item ids read without the '.0'" in caplog.text
    # some ids only: nothing is rewritten (1.0 and 1 stay two items)
    assert normalise_ids(pd.Series(["1.0", "1", "2"]), "item", "f.csv").tolist() == ["1.0", "1", "2"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a rewrite that would merge two distinct ids is not made
        assert normalise_ids(pd.Series(["1.0", "1.00"]), "item", "f.csv").tolist() == ["1.0", "1.00"]
    assert "kept exactly as written" in caplog.text
    # a typed file's floating-point ids: whole ones read as integers, exactly
    assert normalise_ids(pd.Series([3.0, 2.0**60]), "user", "f.parquet").tolist() == ["3", str(2**60)]


def test_the_item_table_written_with_dot_zero_matches_the_log(tmp_path):
    pd.DataFrame({"u": ["a", "a"], "i": ["1", "2"], "t": [1, 2]}).to_csv(tmp_path / "log.csv", index=False)
    (tmp_path / "items.csv").write_text("i,name\n1.0,One\n2.0,Two\n")
    raw = load_table(tmp_path / "log.csv", "u", "i", "t", tmp_path / "items.csv")
    assert raw.items.set_index("item").loc["2", "text"] == "Name: Two."


def test_fractional_times_order_a_users_items(tmp_path):
    """2000.9 comes after 2000.1: the test target is the later item, whatever the file order."""
    times = ["2000.9", "2000.1", "1999.5", "1999.25", "1999.125"]
    frame = pd.DataFrame({"u": ["a"] * 5, "i": ["late", "early", "c", "b", "a"], "t": times})
    frame.to_csv(tmp_path / "log.csv", index=False)
    raw = load_table(tmp_path / "log.csv", "u", "i", "t")
    assert raw.interactions.sort_values("timestamp")["item"].tolist() == ["a", "b", "c", "early", "late"]
    split = build_split(raw, DataConfig(dataset="log", min_user_interactions=1, min_item_interactions=1,
                                        num_sampled_negatives=0))
    targets = split.item_ids[split.sequence(0)[-2:] - 1].tolist()
    assert targets == ["early", "late"]  # validation, then test: not swapped by the file order


def test_times_are_compared_exactly_nanoseconds_and_any_year():
    nanos = pd.Series(["2000-01-01T00:00:00.000000002Z", "2000-01-01T00:00:00.000000001Z"])
    assert parse_timestamps(nanos, "f.csv").tolist() == [1, 0]
    old = pd.Series(["1500-01-02", "1500-01-01T23:59:59", "2400-01-01T00:00:00+01:00"])
    keys = parse_timestamps(old, "f.csv")
    assert keys[1] < keys[0] < keys[2] and keys[0] - keys[1] == 1  # whole seconds, years outside 1677-2262
    past = pd.Series(["1500-01-01T00:00:00.5", "1500-01-01T00:00:00.25"])
    assert parse_timestamps(past, "f.csv").tolist() == [1, 0]
    assert parse_timestamps(pd.Series([str(2**70), str(2**70 + 1), "1"]), "f.csv").tolist() == [1, 2, 0]


def test_an_unreadable_date_is_one_line_naming_the_file_and_row(tmp_path, home, capsys):
    pd.DataFrame({"u": ["a", "a"], "i": ["x", "y"], "t": ["2000-01-01", "2000-13-45"]}).to_csv(
        tmp_path / "log.csv", index=False)
    assert main(["data", "add", "bad", "--interactions", str(tmp_path / "log.csv"), "--user", "u", "--item", "i",
                 "--time", "t"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'log.csv'}: timestamps must be numbers or ISO dates" in err
    assert "'2000-13-45' in row 1" in err and "nanosecond" not in err
