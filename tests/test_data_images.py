"""Item pictures: downloads from a loopback server (each hostile reply ends in the manifest with its reason),
resuming after a kill, the rate limit, Amazon 2023 files fetched resumably; ``data add --image COL`` checks the
files it names; ``enrich`` refuses a view that has no readable input at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dmesr.cli import main
from dmesr.data.images import download_images, read_manifest, with_downloaded_images
from dmesr.enrich.pipeline import describe_items
from dmesr.enrich.registry import make_describer
from tests.amazon_fixture import EXPECTED_REASONS, HOSTILE, amazon_category
from tests.image_server import ImageServer

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(timeout=0.5, max_bytes=200_000, retries=1, backoff=0.05, progress=False)


def url_items(urls: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"item": [f"i{k}" for k in range(len(urls))], "text": "Title: a thing.",
                         "image_urls": [[url] for url in urls]})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_each_hostile_reply_is_recorded_with_its_reason_and_nothing_is_fetched_twice(tmp_path):
    with ImageServer(slow_seconds=1.5, big_bytes=300_000) as server:
        urls = [f"{server.url}/{path}" for path in HOSTILE.values()] + [f"{server.url}/img/g{k}.jpg" for k in range(5)]
        items = url_items(urls)
        summary = download_images(items, tmp_path / "pics", workers=4, **FAST)
        assert summary["fetched"] == 6  # five good pictures and the one that failed once with a 500
        assert summary["missing"] == EXPECTED_REASONS
        assert server.requests[f"/{HOSTILE[1]}"] == 2  # the 500, then its retry
        manifest = read_manifest(tmp_path / "pics")
        assert {url: record["status"] for url, record in manifest.items()} == {
            url: "done" if "/img/" in url or "/flaky/" in url else "failed" for url in urls}
        for record in manifest.values():
            if record["status"] == "done":
                with Image.open(tmp_path / "pics" / record["file"]) as image:
                    image.load()
        assert not list((tmp_path / "pics" / ".partial").iterdir())  # no partial file kept
        before = dict(server.requests)
        again = download_images(items, tmp_path / "pics", workers=4, **FAST)
        assert again["fetched"] == 0 and again["already_kept"] == 6 and dict(server.requests) == before
        located = with_downloaded_images(items, tmp_path / "pics")
        assert located["image_path"].notna().sum() == 6


def test_kill_midway_then_rerun_fetches_each_picture_once(tmp_path):
    with ImageServer(latency=0.1) as server:
        urls = [f"{server.url}/img/k{k}.jpg" for k in range(60)]
        url_items(urls).to_parquet(tmp_path / "items.parquet")
        script = ("import pandas as pd, sys; from dmesr.data.images import download_images; "
                  f"download_images(pd.read_parquet({str(tmp_path / 'items.parquet')!r}), "
                  f"{str(tmp_path / 'pics')!r}, workers=2, progress=False)")
        child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while len(read_manifest(tmp_path / "pics")) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        done_before = {url for url, record in read_manifest(tmp_path / "pics").items() if record["status"] == "done"}
        assert 10 <= len(done_before) < len(urls)
        summary = download_images(url_items(urls), tmp_path / "pics", workers=4, progress=False)
        assert summary["with_image"] == len(urls) and summary["already_kept"] >= len(done_before)
        for url in done_before:
            assert server.requests["/" + url.split("/", 3)[3]] == 1  # done before the kill: never fetched again
        assert sum(server.requests.values()) <= len(urls) + 2  # at most the two in flight at the kill, again
        assert not list((tmp_path / "pics" / ".partial").iterdir())
        files = [path for path in (tmp_path / "pics").iterdir() if path.is_file() and path.suffix == ".jpg"]
        assert len(files) == len(urls)


def test_rate_limit_spaces_requests(tmp_path):
    with ImageServer() as server:
        started = time.perf_counter()
        download_images(url_items([f"{server.url}/img/r{k}.jpg" for k in range(6)]), tmp_path, workers=6, rate=10,
                        progress=False)
        assert time.perf_counter() - started >= 0.45  # six starts, 0.1 s apart


def test_amazon_2023_fetch_resumes_records_sha256_and_registers(home):
    reviews, meta = amazon_category("http://127.0.0.1:9/none", num_items=30, num_users=400, per_user=6)
    files = {"amazon/review_categories/All_Beauty.jsonl.gz": reviews,
             "amazon/meta_categories/meta_All_Beauty.jsonl.gz": meta}
    with ImageServer(files=files, cut_files_after=20_000) as server:
        command = ["data", "fetch", "amazon-2023", "--category", "All_Beauty", "--base-url",
                   f"{server.url}/files/amazon", "--add", "beauty"]
        assert main(command) == 2  # the connection drops after 20,000 of about 24,000 bytes
        folder = home / "raw" / "amazon-2023" / "All_Beauty"
        kept = (folder / "All_Beauty.jsonl.gz.part").stat().st_size
        assert 0 < kept <= 20_000
        assert main(command) == 0  # continues from what it kept (a range request), then the metadata
        assert (folder / "All_Beauty.jsonl.gz").read_bytes() == reviews
        assert server.ranges[:2] == ["", f"bytes={kept}-"]
        recorded = json.loads((folder / "sha256.json").read_text())
        import hashlib

        assert recorded["meta_All_Beauty.jsonl.gz"]["sha256"] == hashlib.sha256(meta).hexdigest()
        assert recorded["All_Beauty.jsonl.gz"]["sha256"] == hashlib.sha256(reviews).hexdigest()
        requests_before = sum(server.requests.values())
        assert main(command) == 0 and sum(server.requests.values()) == requests_before  # nothing fetched again
    assert json.loads((home / "datasets" / "beauty.json").read_text())["format"] == "amazon"
    assert main(["data", "fetch", "amazon-2023", "--category", "Beauty_Stuff"]) == 2


# ---------------------------------------------------------------- data add --image COL


def shop(tmp_path: Path, pictures: list[str]) -> dict:
    """A log of 6 users x 5 items and an item table whose ``picture`` column holds ``pictures``."""
    rows = [{"user": f"u{u}", "item": f"p{i}", "time": 10 * u + i} for u in range(6) for i in range(5)]
    folder = tmp_path / "shop"
    folder.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "log.csv", index=False)
    pd.DataFrame({"item": [f"p{i}" for i in range(5)], "title": [f"thing {i}" for i in range(5)],
                  "picture": pictures}).to_csv(folder / "items.csv", index=False)
    return folder


def add_shop(folder: Path, *extra: str) -> int:
    return main(["data", "add", "shop", "--interactions", str(folder / "log.csv"), "--items",
                 str(folder / "items.csv"), "--user", "user", "--item", "item", "--time", "time",
                 "--image", "picture", *extra])


def good_picture(folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), "red").save(folder / name)
    return name


def test_image_column_counts_files_and_refuses_bad_ones(tmp_path, home, capsys):
    folder = shop(tmp_path, ["a.jpg", "missing1.jpg", "missing2.jpg", "notes.jpg", ""])
    good_picture(folder, "a.jpg")
    (folder / "notes.jpg").write_text("not a picture")
    assert add_shop(folder) == 0
    assert "1 readable files, 2 missing, 1 not images, 0 URLs" in capsys.readouterr().out
    check = json.loads((home / "datasets" / "shop.json").read_text())["image_check"]
    assert check == {"named": 4, "readable": 1, "missing": 2, "unreadable": 1, "urls": 0}


@pytest.mark.parametrize("outside", ["/etc/passwd", "../../../etc/passwd", "../../.."])
def test_image_outside_the_item_folder_is_refused_unless_allowed(tmp_path, home, capsys, outside):
    folder = shop(tmp_path, ["a.jpg", outside, "", "", ""])
    good_picture(folder, "a.jpg")
    assert add_shop(folder) == 2
    assert "outside the item table's folder" in capsys.readouterr().err
    assert not (home / "datasets" / "shop.json").exists()
    assert add_shop(folder, "--allow-images-outside") == 0


def test_image_column_with_no_readable_picture_is_refused(tmp_path, home, capsys):
    folder = shop(tmp_path, ["gone.jpg", "gone2.png", "", "", ""])
    assert add_shop(folder) == 2
    assert "none of the 2 pictures" in capsys.readouterr().err


def test_image_column_of_urls_registers_them_for_download(tmp_path, home):
    with ImageServer() as server:
        folder = shop(tmp_path, [f"{server.url}/img/p{i}.jpg" for i in range(4)] + [f"{server.url}/status/404/x"])
        assert add_shop(folder) == 0
        assert main(["data", "images", "shop", "--timeout", "2"]) == 0
    assert main(["data", "stats", "shop"]) == 0
    pictures = list((home / "images").glob("*/*.jpg"))
    assert len(pictures) == 4


# ---------------------------------------------------------------- enrich without any readable input


def test_enrich_fails_when_a_view_has_no_readable_input(tmp_path, home, capsys):
    folder = shop(tmp_path, [good_picture(tmp_path / "shop", f"p{i}.jpg") for i in range(5)])
    assert add_shop(folder) == 0
    for picture in folder.glob("p*.jpg"):
        picture.unlink()  # deleted after registration
    descriptions = tmp_path / "descriptions.jsonl"
    descriptions.write_text("".join(json.dumps({"item": f"p{i}", "view": view, "description": "a thing"}) + "\n"
                                    for i in range(5) for view in ("image", "text")))
    assert main(["enrich", "--dataset", "shop", "--describer", "precomputed", "--path", str(descriptions),
                 "--views", "image"]) == 2
    assert "no item has a readable input for the image view" in capsys.readouterr().err
    items = pd.DataFrame({"item": ["p0"], "text": ["Title: thing."], "image_path": [str(folder / "p0.jpg")]})
    with pytest.raises(RuntimeError, match="image view"):
        describe_items(items, "shop", make_describer("precomputed", path=str(descriptions)), views=["image", "text"],
                       cache_dir=tmp_path / "cache", progress=False)
    no_pictures = items.assign(image_path=[None])  # MovieLens-like: refused before any model is loaded
    with pytest.raises(RuntimeError, match="image view"):
        describe_items(no_pictures, "shop", make_describer("hf", model=str(tmp_path / "no-such-model")),
                       views=["image", "text"], cache_dir=tmp_path / "cache2", progress=False)


def test_pictures_kept_before_their_manifest_line_are_not_fetched_again(tmp_path):
    with ImageServer() as server:
        items = url_items([f"{server.url}/img/m{k}.jpg" for k in range(4)])
        download_images(items, tmp_path, workers=2, progress=False)
        manifest = (tmp_path / "manifest.jsonl").read_text().splitlines()
        # a kill after two pictures were renamed into place but before their lines were whole
        (tmp_path / "manifest.jsonl").write_text("\n".join(manifest[:2]) + "\n" + manifest[2][:15])
        (tmp_path / ".partial" / "0123.part").write_bytes(b"\xff\xd8 half a picture")  # bytes of a killed fetch
        summary = download_images(items, tmp_path, workers=2, progress=False)
        assert summary["fetched"] == 0 and summary["already_kept"] == 4
        assert all(count == 1 for count in server.requests.values())
        assert len(read_manifest(tmp_path)) == 4 and summary["with_image"] == 4
        assert not list((tmp_path / ".partial").iterdir())


def test_ctrl_c_stops_soon_and_keeps_what_was_recorded(tmp_path):
    with ImageServer(latency=0.2) as server:
        urls = [f"{server.url}/img/c{k}.jpg" for k in range(100)]
        url_items(urls).to_parquet(tmp_path / "items.parquet")
        # Ctrl-C as at a terminal: a shell that starts jobs in the background hands them SIGINT ignored
        script = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "import pandas as pd; from dmesr.data.images import download_images; "
                  f"download_images(pd.read_parquet({str(tmp_path / 'items.parquet')!r}), "
                  f"{str(tmp_path / 'pics')!r}, workers=2, progress=False)")
        child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(read_manifest(tmp_path / "pics")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
        recorded = len(read_manifest(tmp_path / "pics"))
        assert 4 <= recorded < 20  # it stopped soon: not the 90-odd pictures still queued
        assert not list((tmp_path / "pics" / ".partial").iterdir())
