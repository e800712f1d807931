"""Refused weights, a full disk and a wide file's missing column: each one line naming the file, never
advice to turn a safety off."""

from __future__ import annotations

import pathlib

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dmesr.cli import main
from dmesr.training.runtime import atomic_save
from tests.test_enrich_hf import build_tiny_causal_lm
from tests.test_reliability import walk_rows, write_atomic

FULL_DISK = "[enforce fail at inline_container.cc:664] . unexpected pos 576448 vs 576340"


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    items = [f"i{k}\tItem number {k}" for k in range(9)]
    return str(write_atomic(tmp_path / "d", walk_rows(), items=items))


class RunsCode:
    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path("ran"),)


def test_pickled_weights_are_refused_in_one_line_that_names_the_file(tmp_path, dataset, capsys):
    model = build_tiny_causal_lm(tmp_path / "model")
    weights = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    torch.save({"payload": RunsCode(), **weights}, model / "pytorch_model.bin")
    capsys.readouterr()
    assert main(["enrich", "--dataset", dataset, "--describer", "hf", "--model", str(model), "--views", "text",
                 "--device", "cpu", "--all-items"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{model / 'pytorch_model.bin'}: its weights hold pickled objects" in err
    assert "weights_only" not in err and not (tmp_path / "ran").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_it(tmp_path, dataset, monkeypatch, capsys):
    def full(obj, path):
        pathlib.Path(path).write_bytes(b"torn")
        raise RuntimeError(FULL_DISK)

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("Usage", (), {"free": 4096})())
    with pytest.raises(OSError, match=r"ckpt\.pt: not saved, the disk is full \(4096 bytes free\)"):
        atomic_save({"x": 1}, tmp_path / "ckpt.pt")
    assert not list(tmp_path.glob(".ckpt.pt*"))  # no torn file left
    assert main(["train", "--dataset", dataset, "--model", "sasrec", "--epochs", "1", "--output-dir", "runs",
                 "--quiet", "--set", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=1",
                 "data.max_len=8", "data.num_sampled_negatives=0", "data.min_user_interactions=1",
                 "data.min_item_interactions=1", "train.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".pt: not saved, the disk is full" in err and "unexpected pos" not in err


def test_a_missing_column_of_a_wide_file_is_one_short_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    wide = pd.DataFrame([range(20_000)], columns=[f"feature_{k:05d}" for k in range(20_000)])
    wide.assign(user="u", item="i").to_csv(tmp_path / "wide.csv", index=False)
    assert main(["data", "add", "wide", "--interactions", str(tmp_path / "wide.csv"), "--user", "user",
                 "--item", "item", "--time", "feature_2000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400
    assert f"{tmp_path / 'wide.csv'}: missing required column 'feature_2000'" in err and "feature_02000" in err
