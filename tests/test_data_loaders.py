"""Loaders on small fixture files: RecBole atomic, MovieLens, Amazon 2018/2023, CSV/parquet."""

import gzip
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from dmesr.data.amazon import load_amazon
from dmesr.data.loaders import (
    item_text,
    load_movielens_atomic,
    load_movielens_dslabs,
    load_recbole_atomic,
    parse_timestamps,
)
from dmesr.data.tables import load_table


def write_atomic(folder, name, inter_lines, item_lines=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join(inter_lines) + "\n")
    if item_lines is not None:
        (folder / f"{name}.item").write_text("\n".join(item_lines) + "\n")
    return folder


INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "u1\t10\t4\t300",
    "u1\t2\t5\t100",
    "u2\t10\t3\t200.0",
]
ITEM = [
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "10\tToy Story\t1995\tAnimation Children's Comedy",
    '2\t"Great Performances" Cats\t\tMusical',
]


def test_item_text_assembles_labelled_sentences_and_skips_missing():
    text = item_text([("Title", "Toy Story"), ("Year", 1995.0), ("Genres", ["Animation", "Children's", "Comedy"])])
    assert text == "Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy."
    assert item_text([("Title", "Monsters, Inc."), ("Year", float("nan")), ("Brand", None), ("Tags", [])]) == (
        "Title: Monsters, Inc."
    )


def test_recbole_atomic_reads_typed_headers_and_builds_text(tmp_path):
    folder = write_atomic(tmp_path / "toy", "toy", INTER, ITEM)
    raw = load_recbole_atomic(folder)
    assert raw.name == "toy"
    assert raw.interactions["user"].tolist() == ["u1", "u1", "u2"]
    assert raw.interactions["item"].tolist() == ["10", "2", "10"]
    assert raw.interactions["timestamp"].dtype == np.int64
    assert raw.interactions["timestamp"].tolist() == [300, 100, 200]
    assert raw.items["item"].tolist() == ["10", "2"]
    assert raw.items["text"].tolist() == [
        "Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy.",
        'Title: "Great Performances" Cats. Genres: Musical.',
    ]
    assert raw.items["image_path"].isna().all()
    assert [p.name for p in raw.source_files] == ["toy.inter", "toy.item"]


def test_movielens_atomic_renames_source_fields(tmp_path):
    raw = load_movielens_atomic(write_atomic(tmp_path / "ml", "ml", INTER, ITEM), "ml")
    assert raw.items["title"].tolist() == ["Toy Story", '"Great Performances" Cats']
    assert raw.items["year"].iloc[0] == "1995" and pd.isna(raw.items["year"].iloc[1])
    assert raw.items["genres"].tolist() == ["Animation|Children's|Comedy", "Musical"]


def test_recbole_atomic_without_item_file_has_empty_texts(tmp_path):
    raw = load_recbole_atomic(write_atomic(tmp_path / "bare", "bare", INTER))
    assert raw.items["item"].tolist() == ["10", "2"] and raw.items["text"].tolist() == ["", ""]


def test_missing_column_names_the_column_and_the_file(tmp_path):
    folder = write_atomic(tmp_path / "nots", "nots", ["user_id:token\titem_id:token", "u1\t1"])
    with pytest.raises(ValueError, match=r"nots\.inter.*'timestamp'"):
        load_recbole_atomic(folder)


def test_timestamps_parse_numbers_and_iso_dates_and_reject_garbage():
    assert parse_timestamps(pd.Series(["5", "7"]), "f.csv").tolist() == [5, 7]
    assert parse_timestamps(pd.Series(["5", "7.9", "7.10"]), "f.csv").tolist() == [0, 2, 1]  # a fraction: ranks
    dates = pd.Series(["2000-01-01T00:00:00Z", "2000-01-02"])
    assert parse_timestamps(dates, "f.csv").tolist() == [946684800, 946771200]
    with pytest.raises(ValueError, match=r"f\.csv.*'yesterday'"):
        parse_timestamps(pd.Series(["1", "yesterday"]), "f.csv")


def test_csv_with_column_mapping_and_item_table(tmp_path):
    pd.DataFrame(
        {"uid": [1, 1, 2], "sku": ["a", "b", "a"], "when": ["2020-01-01", "2020-01-03", "2020-01-02"]}
    ).to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"sku": ["a", "b"], "name": ["Red mug", "Tea"], "colour": ["red", None]}).to_csv(
        tmp_path / "items.csv", index=False
    )
    raw = load_table(tmp_path / "log.csv", user="uid", item="sku", timestamp="when",
                     items_path=tmp_path / "items.csv", text_columns=["name", "colour"])
    assert raw.interactions["user"].tolist() == ["1", "1", "2"]
    assert raw.interactions["timestamp"].tolist() == [1577836800, 1578009600, 1577923200]
    assert raw.items["text"].tolist() == ["Name: Red mug. Colour: red.", "Name: Tea."]
    assert raw.name == "log"


def test_parquet_table_and_missing_mapped_column(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"u": ["x", "y"], "i": [3, 4], "t": [10, 20]}).to_parquet(path)
    raw = load_table(path, user="u", item="i", timestamp="t")
    assert raw.interactions["item"].tolist() == ["3", "4"] and raw.items["text"].tolist() == ["", ""]
    with pytest.raises(ValueError, match=r"log\.parquet.*'ts'"):
        load_table(path, user="u", item="i", timestamp="ts")


def write_json_lines(path, records):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def test_amazon_2018_gzipped_with_image_folder(tmp_path):
    reviews = write_json_lines(tmp_path / "Beauty.json.gz", [
        {"reviewerID": "R1", "asin": "A1", "unixReviewTime": 1400000000, "overall": 5.0},
        {"reviewerID": "R1", "asin": "A2", "unixReviewTime": 1300000000},
        {"reviewerID": "R2", "asin": "A3", "unixReviewTime": 1500000000},
    ])
    meta = write_json_lines(tmp_path / "meta_Beauty.json.gz", [
        {"asin": "A1", "title": "Lip Balm", "brand": "Acme", "category": ["Beauty", "Lips"],
         "description": ["<b>Soft</b> and", "shiny"], "imageURLHighRes": ["http://x/a1.jpg"]},
        {"asin": "A2", "title": "Soap", "category": []},
        {"asin": "A9", "title": "never reviewed"},
    ])
    images = tmp_path / "images"
    images.mkdir()
    (images / "A2.png").write_bytes(b"not decoded by the loader")
    raw = load_amazon(reviews, meta, image_folder=images)
    assert raw.name == "Beauty"
    assert raw.interactions.values.tolist() == [
        ["R1", "A1", 1400000000], ["R1", "A2", 1300000000], ["R2", "A3", 1500000000],
    ]
    items = raw.items.set_index("item")
    assert list(items.index) == ["A1", "A2", "A3"]
    assert items.loc["A1", "text"] == (
        "Title: Lip Balm. Brand: Acme. Categories: Beauty, Lips. Description: Soft and shiny."
    )
    assert items.loc["A1", "image_urls"] == ["http://x/a1.jpg"]
    assert items.loc["A2", "image_path"].endswith("A2.png") and items.loc["A1", "image_path"] is None
    assert items.loc["A3", "text"] == ""  # reviewed but absent from the metadata


def test_amazon_2023_keeps_ms_timestamps_and_image_urls(tmp_path):
    reviews = write_json_lines(tmp_path / "All_Beauty.jsonl", [
        {"user_id": "U1", "asin": "c1", "parent_asin": "P1", "timestamp": 1588687728923, "rating": 5.0},
        {"user_id": "U1", "asin": "c2", "parent_asin": "P2", "timestamp": 1588687728924},
    ])
    meta = write_json_lines(tmp_path / "meta_All_Beauty.jsonl", [
        {"parent_asin": "P1", "title": "Comb", "store": "Howard", "categories": ["Hair"], "features": ["wide", "teeth"],
         "description": [], "images": [{"thumb": "t", "large": "L1", "hi_res": None}, {"large": "L2", "hi_res": "H2"}]},
        {"parent_asin": "P2", "title": "Brush", "images": []},
    ])
    raw = load_amazon(reviews, meta)
    assert raw.interactions["timestamp"].tolist() == [1588687728923, 1588687728924]
    assert raw.interactions["item"].tolist() == ["P1", "P2"]
    items = raw.items.set_index("item")
    assert items.loc["P1", "text"] == "Title: Comb. Store: Howard. Categories: Hair. Features: wide; teeth."
    assert items.loc["P1", "image_urls"] == ["L1", "H2"]
    assert items.loc["P2", "image_urls"] == [] and items["image_path"].isna().all()


def test_amazon_missing_field_names_file_line_and_field(tmp_path):
    reviews = write_json_lines(tmp_path / "r.jsonl", [
        {"user_id": "U1", "parent_asin": "P1", "timestamp": 1},
        {"user_id": "U2", "timestamp": 2},
    ])
    with pytest.raises(ValueError, match=r"r\.jsonl:2: missing required field 'parent_asin'"):
        load_amazon(reviews)


def test_dslabs_pickle_is_loaded_only_with_the_verified_hash(tmp_path):
    path = tmp_path / "movielens.pkl.compress"
    pd.DataFrame({
        "movieId": [1, 2, 1], "title": ["Heat", None, "Heat"], "year": [1995.0, np.nan, 1995.0],
        "genres": ["Action|Crime", "(no genres listed)", "Action|Crime"], "userId": [7, 7, 8],
        "rating": [4.0, 3.0, 5.0], "timestamp": [30, 20, 10],
    }).to_pickle(path, compression="xz")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_movielens_dslabs(path, expected_sha256="0" * 64)
    raw = load_movielens_dslabs(path, expected_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert raw.interactions.values.tolist() == [["7", "1", 30], ["7", "2", 20], ["8", "1", 10]]
    assert raw.items["text"].tolist() == ["Title: Heat. Year: 1995. Genres: Action, Crime.", ""]
