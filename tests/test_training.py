"""Trainer: learning, early stopping, resume after Ctrl-C, run-directory checks, DDP parity."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from dmesr.config import BACKBONES, load_config
from dmesr.data.batches import evaluation_inputs
from dmesr.training.run import build_run_model, run_directory, train_run
from dmesr.training.runtime import load_checkpoint, seed_everything, select_device
from dmesr.training.trainer import Trainer
from tests.conftest import make_tiny_split


def tiny_config(tmp_path: Path, **overrides):
    pairs = {"data.max_len": 8, "model.hidden_size": 16, "model.num_layers": 1, "model.num_heads": 1,
             "model.dropout": 0.1, "train.batch_size": 8, "train.lr": 0.01, "train.max_epochs": 4,
             "train.patience": 50, "train.device": "cpu", "output_dir": str(tmp_path / "runs"), **overrides}
    return load_config(overrides=[f"{k}={v}" for k, v in pairs.items()])


@pytest.mark.parametrize("model", sorted(BACKBONES))
def test_train_run_learns_and_writes_everything(tmp_path, tiny_split, model):
    config = tiny_config(tmp_path, **{"model.name": model, "train.max_epochs": 15})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    for name in ("config.yaml", "data.json", "epochs.jsonl", "epochs.csv", "checkpoint.pt", "best.pt",
                 "final.json", "test_per_user.npz"):
        assert (run_dir / name).exists(), name
    final = json.loads((run_dir / "final.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in epochs] == list(range(1, 16))
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    # a deterministic walk over 30 items: far better than the random-ranking NDCG@10 of ~0.1
    assert final["valid"]["valid_NDCG@10"] == max(row["valid_NDCG@10"] for row in epochs)
    assert final["test"]["HR@10"] > 0.5
    with zipfile.ZipFile(run_dir / "test_per_user.npz") as archive:  # compressed: committed with every run
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    assert np.load(run_dir / "test_per_user.npz")["NDCG@10"].mean() == pytest.approx(final["test"]["NDCG@10"])


def test_early_stopping_on_patience(tmp_path, tiny_split):
    config = tiny_config(tmp_path, **{"train.lr": 0.0, "train.patience": 2, "train.max_epochs": 50})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["stopped"] == "patience" and final["epochs"] == 3 and final["best_epoch"] == 1


def _trainer(config, split):
    seed_everything(config.train.seed)
    model = build_run_model(config, split)
    run_dir = run_directory(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(model, split, config, run_dir, select_device("cpu"), show_progress=False)


def test_ctrl_c_mid_epoch_then_resume_loses_nothing(tmp_path, tiny_split):
    reference = _trainer(tiny_config(tmp_path / "a"), tiny_split)
    reference.fit()

    interrupted = _trainer(tiny_config(tmp_path / "b"), tiny_split)
    calls = {"n": 0}
    original_forward = interrupted.loss_module.forward

    def forward_then_interrupt(windows):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2 of 5 batches each: mid-epoch
            raise KeyboardInterrupt
        return original_forward(windows)

    interrupted.loss_module.forward = forward_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert load_checkpoint(interrupted.checkpoint_path)["state"]["epoch"] == 1

    torch.manual_seed(1234)  # a fresh process has other RNG state: resume must restore it
    resumed = _trainer(tiny_config(tmp_path / "b"), tiny_split)
    resumed.fit()
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    rows = (resumed.run_dir / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]


def test_finished_run_is_not_trained_again(tmp_path, tiny_split, capsys):
    config = tiny_config(tmp_path, **{"train.max_epochs": 1})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    stamp = (run_dir / "final.json").stat().st_mtime_ns
    assert train_run(config, show_progress=True, split=tiny_split) == run_dir
    assert "nothing to do" in capsys.readouterr().out
    assert (run_dir / "final.json").stat().st_mtime_ns == stamp


def test_run_directory_from_incompatible_version_is_refused(tmp_path, tiny_split):
    config = tiny_config(tmp_path, **{"train.max_epochs": 1})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["version"] = 0
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ValueError, match="config version 0"):
        train_run(config, show_progress=False, split=tiny_split)


def test_run_directory_with_other_data_is_refused(tmp_path, tiny_split):
    config = tiny_config(tmp_path, **{"train.max_epochs": 1})
    train_run(config, show_progress=False, split=tiny_split)
    with pytest.raises(ValueError, match="other data"):
        train_run(config, show_progress=False, split=dataclasses.replace(tiny_split, fingerprint="different"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train_run(tiny_config(Path(out_dir), **{"model.dropout": 0.0}), show_progress=False, split=make_tiny_split())


def test_ddp_two_processes_match_single_process(tmp_path):
    """gloo on the CPU: 2 ranks x half batches + DDP gradient averaging == 1 process x full batches."""
    single = train_run(tiny_config(tmp_path / "single", **{"model.dropout": 0.0}), show_progress=False,
                       split=make_tiny_split())
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = run_directory(tiny_config(tmp_path / "ddp", **{"model.dropout": 0.0}))
    single_rows = [json.loads(r) for r in (single / "epochs.jsonl").read_text().splitlines()]
    ddp_rows = [json.loads(r) for r in (ddp / "epochs.jsonl").read_text().splitlines()]
    assert len(single_rows) == len(ddp_rows) == 4
    for a, b in zip(single_rows, ddp_rows):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        assert b["valid_NDCG@10"] == pytest.approx(a["valid_NDCG@10"], abs=1e-3)
    # Compare what the models compute, not raw weights: the attention key bias gets an exactly-zero
    # gradient whose float noise Adam normalises to full-size steps, so it drifts without effect.
    split = make_tiny_split()
    histories = evaluation_inputs(split, "valid", 8).histories
    scores = []
    for run_dir in (single, ddp):
        model = build_run_model(tiny_config(tmp_path), split)
        model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
        scores.append(model.eval().predict_scores(histories))
    torch.testing.assert_close(scores[1], scores[0], rtol=1e-3, atol=1e-3)


def _features(split, fingerprint: str):
    from dmesr.enrich.features import SemanticFeatures

    rng = np.random.default_rng(0)
    n, dim = split.num_items, 8
    return SemanticFeatures(
        item_ids=split.item_ids, views={"text": rng.normal(size=(n, dim)).astype(np.float32)},
        view_present={"text": np.ones(n, dtype=bool)}, text_pooled=rng.normal(size=(n, dim)).astype(np.float32),
        text_tokens=rng.normal(size=(n, 4, dim)).astype(np.float16), text_mask=np.ones((n, 4), dtype=bool),
        meta={"source_fingerprint": fingerprint},
    )


def test_a_run_made_with_other_semantic_features_is_refused(tmp_path, tiny_split, monkeypatch):
    import dmesr.training.run as run_module

    config = tiny_config(tmp_path, **{"train.max_epochs": 1, "items.kind": "dmesr", "items.token_pca_dim": 4})
    monkeypatch.setattr(run_module, "load_run_features", lambda config, split: _features(split, "first"))
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    assert json.loads((run_dir / "data.json").read_text())["features"]["source_fingerprint"] == "first"
    monkeypatch.setattr(run_module, "load_run_features", lambda config, split: _features(split, "second"))
    with pytest.raises(ValueError, match="other semantic features"):
        train_run(config, show_progress=False, split=tiny_split)


def test_a_run_copied_without_its_checkpoint_starts_over_with_a_clean_log(tmp_path, tiny_split):
    config = tiny_config(tmp_path, **{"train.max_epochs": 2})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "final.json").unlink()
    train_run(config, show_progress=False, split=tiny_split)
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_the_epoch_log_holds_both_loss_terms_and_their_weighted_sum(tmp_path, tiny_split, monkeypatch):
    import dmesr.training.run as run_module

    monkeypatch.setattr(run_module, "load_run_features", lambda config, split: _features(split, "f"))
    config = tiny_config(tmp_path, **{"train.max_epochs": 2, "items.kind": "dmesr", "items.token_pca_dim": 4,
                                      "items.align_weight": 0.5})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    for row in [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]:
        assert row["loss_align"] > 0 and row["loss_rec"] > 0
        # L = L_rec + lambda L_align, per step and so in the epoch means
        assert row["loss"] == pytest.approx(row["loss_rec"] + 0.5 * row["loss_align"], abs=2e-6)
    backbone = train_run(tiny_config(tmp_path, **{"train.max_epochs": 1}), show_progress=False, split=tiny_split)
    row = json.loads((backbone / "epochs.jsonl").read_text().splitlines()[0])
    assert "loss_align" not in row and row["loss"] == pytest.approx(row["loss_rec"], abs=1e-6)


def test_strided_windows_train_every_target_and_learn(tmp_path, tiny_split):
    config = tiny_config(tmp_path, **{"train.window_stride": 2, "train.max_epochs": 10})
    run_dir = train_run(config, show_progress=False, split=tiny_split)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["trained_share"] == 1.0 and final["test"]["HR@10"] > 0.5
    with pytest.raises(ValueError, match="window_stride must be <= data.max_len"):
        tiny_config(tmp_path, **{"train.window_stride": 9})
    with pytest.raises(ValueError, match="bert4rec's cloze targets"):
        tiny_config(tmp_path, **{"train.window_stride": 2, "model.name": "bert4rec"})
