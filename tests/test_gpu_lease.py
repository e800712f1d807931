"""benchmarks/gpu_lease.py: what travels to a lent GPU keeps what DMESR's runs see, and runs come back."""
import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dmesr.models.item_encoders import _pca_reduce

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_lease", ROOT / "benchmarks" / "gpu_lease.py")
gpu_lease = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_lease)


def _tokens(rng, items=60, length=6, dim=24):
    # low effective rank plus noise, like contextual token states, stored float16 as the cache does
    tokens = (rng.normal(size=(items, length, 5)) @ rng.normal(size=(5, dim)) * 2
              + rng.normal(size=(items, length, dim)) * 0.3).astype(np.float16)
    mask = rng.random((items, length)) < 0.7
    mask[:, 0] = True
    return tokens, mask


def test_reconstruction_keeps_the_models_token_pca_up_to_signs():
    tokens, mask = _tokens(np.random.default_rng(0))
    dim = 8
    rebuilt = gpu_lease.reconstruct(gpu_lease.token_pca(tokens, mask, dim), mask, tokens.shape[2])
    assert rebuilt.shape == tokens.shape and rebuilt.dtype == np.float16
    assert not rebuilt[~mask].any()  # padding stays zero
    original = _pca_reduce(torch.as_tensor(tokens[mask]).float(), dim)
    again = _pca_reduce(torch.as_tensor(rebuilt[mask]).float(), dim)
    signs = torch.sign((original * again).sum(dim=0))
    assert torch.allclose(original, again * signs, atol=2e-2 * float(original.abs().max()))
    # while the tokens themselves differ (only their top directions travel)
    assert np.abs(rebuilt[mask].astype(np.float32) - tokens[mask]).max() > 0.1


def test_pack_unpack_round_trip_marks_the_features(tmp_path, monkeypatch):
    home = tmp_path / "home"
    raw = home / "raw" / gpu_lease.DATASET
    raw.mkdir(parents=True)
    (raw / "ml-1m.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    features = home / gpu_lease.FEATURES
    features.mkdir(parents=True)
    rng = np.random.default_rng(1)
    tokens, mask = _tokens(rng, dim=gpu_lease.PCA_DIM + 16)
    np.save(features / "text_tokens.npy", tokens)
    np.save(features / "text_mask.npy", mask)
    np.save(features / "text_pooled.npy", rng.normal(size=(60, tokens.shape[2])).astype(np.float32))
    np.save(features / "item_ids.npy", np.array([str(i) for i in range(60)]))
    (features / "meta.json").write_text(json.dumps({"source_fingerprint": "abc", "dim": tokens.shape[2]}))
    monkeypatch.setenv("DMESR_HOME", str(home))

    gpu_lease.pack(tmp_path / "carry")
    target = tmp_path / "there"
    gpu_lease.unpack(tmp_path / "carry", target)

    unpacked = target / gpu_lease.FEATURES
    assert (target / "raw" / gpu_lease.DATASET / "ml-1m.inter").read_bytes() == (raw / "ml-1m.inter").read_bytes()
    for name in ("text_mask", "text_pooled", "item_ids"):
        np.testing.assert_array_equal(np.load(unpacked / f"{name}.npy"), np.load(features / f"{name}.npy"))
    assert np.load(unpacked / "text_tokens.npy").shape == tokens.shape
    meta = json.loads((unpacked / "meta.json").read_text())
    assert meta["source_fingerprint"] == f"abc+pca{gpu_lease.PCA_DIM}"  # runs trained on it cannot resume on the originals


def test_collect_brings_unfinished_runs_with_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, finished in (("done", True), ("half", False)):
        run = Path("runs") / name
        run.mkdir(parents=True)
        for f in ("config.yaml", "checkpoint.pt", "best.pt"):
            (run / f).write_text(f)
        (run / "epochs.csv").write_text("epoch\n1\n2\n")
        if finished:
            (run / "final.json").write_text("{}")
    Path("logs").mkdir()
    (Path("logs") / "grid.log").write_text("log")
    out = tmp_path / "out"
    out.mkdir()
    gpu_lease.collect(out, Path("logs"), [Path("runs")])

    with tarfile.open(out / "runs-00.tar") as archive:
        names = set(archive.getnames())
    assert "runs/done/final.json" in names and "runs/done/checkpoint.pt" not in names
    assert {"runs/half/checkpoint.pt", "runs/half/best.pt"} <= names
    summary = json.loads((out / "collected.json").read_text())
    assert summary == {"finished": ["runs/done"], "unfinished_epochs": {"runs/half": 2}, "left_out": []}


@pytest.mark.parametrize("command", [["check"], ["collect"]])
def test_cli_needs_its_arguments(command):
    with pytest.raises(SystemExit):
        gpu_lease.main(command)
