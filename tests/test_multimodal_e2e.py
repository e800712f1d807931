"""The multimodal path end to end through the command line, on an Amazon-Reviews-2023-shaped category served by a
loopback server: ``data fetch amazon-2023 --add`` -> ``data images`` (hostile replies among the pictures) ->
``data stats`` -> ``enrich`` (both views, a tiny random-weight Qwen2.5-VL) -> ``embed`` -> ``train --items dmesr``
-> ``report``. It prints one JSON summary line (``pytest -s`` shows it)."""

from __future__ import annotations

import json

import pytest

from dmesr.cli import main
from dmesr.data.images import images_folder, read_manifest
from dmesr.enrich.cache import read_descriptions
from dmesr.enrich.pipeline import default_enrich_dir
from tests.amazon_fixture import EXPECTED_REASONS, NO_PICTURE, amazon_category
from tests.image_server import ImageServer
from tests.tiny_vlms import build_tiny_qwen25_vl


@pytest.mark.slow
def test_amazon_category_from_urls_to_a_results_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    model = build_tiny_qwen25_vl(tmp_path / "tiny-qwen")
    with ImageServer(slow_seconds=1.5, big_bytes=300_000) as server:
        reviews, meta = amazon_category(server.url)
        server.files = {"amazon/review_categories/All_Beauty.jsonl.gz": reviews,
                        "amazon/meta_categories/meta_All_Beauty.jsonl.gz": meta}
        assert main(["data", "fetch", "amazon-2023", "--category", "All_Beauty", "--base-url",
                     f"{server.url}/files/amazon", "--add", "beauty"]) == 0
        assert main(["data", "images", "beauty", "--timeout", "0.5", "--max-mb", "0.2", "--retries", "1"]) == 0
    manifest = read_manifest(images_folder("beauty"))
    failures = {}
    for record in manifest.values():
        if record["status"] == "failed":
            failures[record["reason"]] = failures.get(record["reason"], 0) + 1
    assert failures == EXPECTED_REASONS  # each hostile reply, with its reason; the run went on
    capsys.readouterr()
    assert main(["data", "stats", "beauty"]) == 0
    stats = json.loads(capsys.readouterr().out)
    images = stats["images"]
    assert images["missing"] == {**EXPECTED_REASONS, "no picture given": len(NO_PICTURE)}
    assert images["with_image"] == stats["items"] - sum(images["missing"].values())

    assert main(["enrich", "--dataset", "beauty", "--describer", "hf", "--model", str(model), "--views", "image",
                 "text", "--max-new-tokens", "4", "--device", "cpu", "--batch-size", "32"]) == 0
    table = read_descriptions(default_enrich_dir("beauty") / "descriptions", "beauty")
    per_view = table.groupby("view").size().to_dict()
    assert per_view["image"] <= images["with_image"] and per_view["text"] <= stats["items"]
    assert per_view["image"] >= 0.9 * images["with_image"]  # random weights may write nothing for a few items
    assert main(["embed", "--dataset", "beauty", "--describer", "hf", "--views", "image", "text"]) == 0
    runs = tmp_path / "runs"
    common = ["--dataset", "beauty", "--model", "sasrec", "--epochs", "2", "--output-dir", str(runs), "--quiet",
              "--set", "items.describer=hf", "train.batch_size=64"]
    assert main(["train", *common, "--items", "id"]) == 0
    assert main(["train", *common, "--items", "dmesr"]) == 0
    assert main(["report", str(runs), "--out", str(runs / "results.md")]) == 0
    finals = {path.parent.name: json.loads(path.read_text()) for path in runs.glob("**/final.json")}
    data_record = json.loads(next(runs.glob("**/data.json")).read_text())
    assert data_record["images"] == images
    assert (runs / "results.md").read_text().count("|") > 10
    summary = {"items": stats["items"], "users": stats["users"], "interactions": stats["interactions"],
               "pictures_downloaded": sum(r["status"] == "done" for r in manifest.values()),
               "failures_by_reason": failures, "items_without_picture": images["missing"],
               "descriptions_per_view": per_view,
               "test_metrics": {method: {k: round(v, 4) for k, v in final["test"].items()}
                                for method, final in finals.items()}}
    with capsys.disabled():
        print("\nmultimodal end to end:", json.dumps(summary))
