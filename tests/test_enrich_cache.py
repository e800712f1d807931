"""Prompts, images, the crash-safe description cache and the describe loop (sharding, limits,
bad items, crash + resume), driven by the model-free ``precomputed`` describer."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

import dmesr.enrich.describers as describers
from dmesr.enrich.cache import (
    CacheWriter,
    DescriptionCache,
    export_descriptions,
    read_description_header,
    read_descriptions,
    read_jsonl_records,
)
from dmesr.enrich.images import load_image
from dmesr.enrich.pipeline import describe_items, select_items
from dmesr.enrich.prompts import MAX_TEXT_CHARS, build_prompt, prompt_card, prompt_hash
from dmesr.enrich.registry import make_describer
from dmesr.shards import parse_shard


def test_prompt_hash_is_stable_and_per_view():
    assert prompt_hash("text") == prompt_hash("text") and len(prompt_hash("text")) == 12
    assert prompt_hash("text") != prompt_hash("image")
    with pytest.raises(ValueError, match="unknown view"):
        prompt_hash("audio")


def test_prompt_cuts_very_long_text_and_places_hints():
    prompt = build_prompt("text", "word " * 5000)
    assert prompt.count("word") == MAX_TEXT_CHARS // 5
    assert "classifier: dog" in build_prompt("image", "Title: X.", "An image classifier: dog.")
    assert "{" not in build_prompt("image", "Title: X.")


def write_images(folder):
    good = folder / "good.jpg"
    Image.new("RGB", (900, 300), (200, 30, 30)).save(good, quality=90)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:600])  # a download cut short
    (folder / "text.jpg").write_text("not an image")
    return good, truncated, folder / "text.jpg"


def test_load_image_resizes_and_reports_bad_files(tmp_path):
    good, truncated, not_image = write_images(tmp_path)
    image, reason = load_image(good, max_side=300)
    assert reason is None and image.size == (300, 100) and image.mode == "RGB"
    assert load_image(truncated) == (None, "unreadable image (OSError)")
    assert load_image(not_image)[1].startswith("unreadable image")
    assert load_image(tmp_path / "nope.jpg") == (None, "missing image file")


def test_torn_last_line_is_ignored_and_cut_before_appending(tmp_path):
    writer = CacheWriter(tmp_path / "a.jsonl")
    record = dict(dataset="d", item="1", view="text", describer="x", prompt_hash="h", description="one")
    writer.append([record])
    with open(writer.path, "a") as handle:
        handle.write('{"dataset": "d", "item": "2", "vie')  # crash mid-write
    assert [r["item"] for r in read_jsonl_records(writer.path)] == ["1"]
    CacheWriter(writer.path).append([dict(record, item="3")])
    assert [r["item"] for r in read_jsonl_records(writer.path)] == ["1", "3"]
    assert writer.path.read_text().count("\n") == 2


def test_cache_deduplicates_across_shard_files_and_datasets(tmp_path):
    record = dict(dataset="d", item="1", view="text", describer="x", prompt_hash="h", description="first")
    CacheWriter(tmp_path / "x.shard-0-of-2.jsonl").append([record, dict(record, dataset="other")])
    CacheWriter(tmp_path / "x.shard-1-of-2.jsonl").append([dict(record, description="second")])
    records = DescriptionCache(tmp_path, "d").records()
    assert [r["description"] for r in records] == ["first"]


def precomputed_file(tmp_path, items, views=("text", "image"), skip=()):
    path = tmp_path / "pre.jsonl"
    with open(path, "w") as handle:
        for item in items:
            for view in views:
                if (item, view) not in skip:
                    handle.write(json.dumps({"item": item, "view": view, "description": f"{view} of {item}"}) + "\n")
    return path


def test_shards_partition_items_deterministically():
    items = pd.DataFrame({"item": [str(i) for i in range(100)], "text": ["t"] * 100})
    parts = [set(select_items(items, None, f"{i}/3")["item"]) for i in range(3)]
    assert set().union(*parts) == set(items["item"]) and sum(map(len, parts)) == 100
    assert parts[1] == set(select_items(items.iloc[::-1], None, (1, 3))["item"])  # order does not matter
    assert len(select_items(items, 7, "0/3")) == 7
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("3/3")


def test_crash_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    items = pd.DataFrame({"item": [str(i) for i in range(10)], "text": [f"Title: {i}." for i in range(10)]})
    source = precomputed_file(tmp_path, list(items["item"]))
    calls = {"n": 0}
    real_describe = describers.PrecomputedDescriber.describe

    def crash_on_third_batch(self, requests):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process dies: not an item error, nothing catches it
        return real_describe(self, requests)

    monkeypatch.setattr(describers.PrecomputedDescriber, "describe", crash_on_third_batch)
    options = dict(views=["text"], cache_dir=tmp_path / "cache", batch_size=3, path=source, progress=False)
    with pytest.raises(KeyboardInterrupt):
        describe_items(items, "d", "precomputed", **options)
    cache_file = next((tmp_path / "cache").glob("*.jsonl"))
    with open(cache_file, "a") as handle:
        handle.write('{"dataset": "d", "item": "6", "view": "te')  # and it died mid-write
    monkeypatch.setattr(describers.PrecomputedDescriber, "describe", real_describe)
    summary = describe_items(items, "d", "precomputed", **options)
    assert summary["cached"] == 6 and summary["done"] == 4
    table = read_descriptions(tmp_path / "cache", "d")
    assert sorted(table["item"], key=int) == list(items["item"]) and not table["item"].duplicated().any()
    assert len(read_jsonl_records(cache_file)) == 10


def test_bad_items_are_counted_not_fatal(tmp_path):
    good, truncated, _ = write_images(tmp_path)
    items = pd.DataFrame({
        "item": ["ok", "no-image", "broken", "gone", "no-text", "long"],
        "text": ["Title: A.", "Title: B.", "Title: C.", "Title: D.", None, "Title: E. " + "x" * 50_000],
        "image_path": [str(good), None, str(truncated), str(tmp_path / "gone.jpg"), str(good), float("nan")],
    })
    source = precomputed_file(tmp_path, list(items["item"]), skip={("long", "text")})
    summary = describe_items(items, "d", "precomputed", views=["image", "text"], cache_dir=tmp_path / "cache",
                             path=source, batch_size=4, progress=False)
    assert summary["skipped"] == {"no image": 2, "unreadable image (OSError)": 1, "missing image file": 1}
    assert summary["failed"]["empty item text"] == 1
    assert sum(n for reason, n in summary["failed"].items() if reason.startswith("KeyError")) == 1  # "long" lacks one
    table = read_descriptions(tmp_path / "cache", "d")
    assert sorted(zip(table["item"], table["view"])) == [
        ("broken", "text"), ("gone", "text"), ("no-image", "text"), ("no-text", "image"), ("ok", "image"), ("ok", "text"),
    ]


def test_missing_columns_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="lacks column"):
        describe_items(pd.DataFrame({"item": ["1"]}), "d", "precomputed", path=tmp_path)
    with pytest.raises(ValueError, match="unknown describer"):
        describe_items(pd.DataFrame({"item": ["1"], "text": ["t"]}), "d", "gpt-9")
    with pytest.raises(FileNotFoundError, match="description source not found"):
        read_descriptions(tmp_path / "missing.jsonl")


def test_export_is_sorted_and_readable_as_precomputed(tmp_path):
    items = pd.DataFrame({"item": ["10", "2", "1"], "text": ["a", "b", "c"]})
    source = precomputed_file(tmp_path, list(items["item"]), views=("text",))
    ready = make_describer("precomputed", path=source)  # a loaded describer is reused as is
    for limit in (1, 3):
        describe_items(items, "d", ready, views=["text"], cache_dir=tmp_path / "cache", limit=limit, progress=False)
    count = export_descriptions(tmp_path / "cache", "d", tmp_path / "out.jsonl")
    exported = read_descriptions(tmp_path / "out.jsonl")
    assert count == 3 and list(exported["item"]) == ["1", "2", "10"]
    assert set(exported.columns) >= {"dataset", "describer", "prompt_hash", "description"}


def test_export_header_names_describer_prompts_and_command(tmp_path):
    items = pd.DataFrame({"item": ["1", "2"], "text": ["a", "b"]})
    source = precomputed_file(tmp_path, list(items["item"]), views=("text",))
    describe_items(items, "d", make_describer("precomputed", path=source), views=["text"],
                   cache_dir=tmp_path / "cache", progress=False)
    header = {"describer": "precomputed:x", "prompts": prompt_card(["text"]), "command": "dmesr enrich ..."}
    export_descriptions(tmp_path / "cache", "d", tmp_path / "out.jsonl", header=header)
    written = read_description_header(tmp_path / "out.jsonl")
    assert written["records"] == 2 and written["command"] == "dmesr enrich ..."
    assert written["prompts"]["text"]["hash"] == prompt_hash("text")
    # the header is metadata: readers and a cache folder holding the file see only the two records
    assert len(read_descriptions(tmp_path / "out.jsonl")) == 2
    assert read_description_header(source) is None
    (tmp_path / "cache2").mkdir()
    (tmp_path / "cache2" / "shipped.jsonl").write_text((tmp_path / "out.jsonl").read_text())
    assert len(DescriptionCache(tmp_path / "cache2", "d").records()) == 2
