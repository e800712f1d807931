"""Backbone speed benchmark: throughput, seconds per epoch, time to best validation NDCG@10,
full-ranking evaluation time and peak memory, for each backbone on each dataset.

Each (dataset, model) case runs in its own process (so peak memory is its own) through the real
trainer (`dmesr.training.run.train_run`) with the RecBole-anchor settings: CE loss, max length 50,
batch 256, width 64, 2 layers, 2 heads, lr 1e-3. Training stops on patience or ``--max-minutes``.

    .venv/bin/python benchmarks/bench_backbones.py --datasets ml-100k ml-1m --models sasrec gru4rec bert4rec
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANCHOR = ["data.max_len=50", "train.batch_size=256", "model.hidden_size=64", "model.num_layers=2",
          "model.num_heads=2", "train.lr=0.001", "train.loss=ce"]


def run_case(dataset: str, model: str, max_minutes: float, patience: int, threads: int, extra: list[str]) -> dict:
    import torch

    from dmesr.config import load_config
    from dmesr.data import prepare_split
    from dmesr.data.batches import TrainWindows, evaluation_inputs
    from dmesr.evaluation import evaluate
    from dmesr.training.run import build_run_model, train_run
    from dmesr.training.runtime import load_checkpoint, select_device

    with tempfile.TemporaryDirectory() as out:
        config = load_config(overrides=ANCHOR + [f"data.dataset={dataset}", f"model.name={model}",
                                                 f"train.max_minutes={max_minutes}", f"train.patience={patience}",
                                                 f"train.num_threads={threads}", f"output_dir={out}"] + extra)
        split = prepare_split(config.data)
        run_dir = train_run(config, show_progress=False, split=split)
        final = json.loads((run_dir / "final.json").read_text())
        epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
        device = select_device(config.train.device)
        model_ = build_run_model(config, split).to(device)
        model_.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
        inputs = evaluation_inputs(split, "test", config.data.max_len)
        evaluate(model_, inputs, config.eval, device)  # warm-up
        eval_times = []
        for _ in range(5):
            started = time.perf_counter()
            evaluate(model_, inputs, config.eval, device)
            eval_times.append(time.perf_counter() - started)
    train_seconds = [row["train_seconds"] for row in epochs]
    sequences = len(TrainWindows(split, config.data.max_len))
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "dataset": dataset, "model": model, "hardware": final["hardware"],
        "seconds_per_epoch": statistics.median(train_seconds),
        "sequences_per_second": sequences / statistics.median(train_seconds),
        "epochs": final["epochs"], "best_epoch": final["best_epoch"],
        "seconds_to_best": final["seconds"]["to_best"], "seconds_total": final["seconds"]["train_total"],
        "full_ranking_eval_seconds": statistics.median(eval_times), "users": split.num_users,
        "peak_memory_mb": peak_mb,
        "test_NDCG@10": final["test"]["NDCG@10"], "test_HR@10": final["test"]["HR@10"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    parser.add_argument("--models", nargs="+", default=["sasrec", "bert4rec", "gru4rec"])
    parser.add_argument("--max-minutes", type=float, default=5.0, help="training budget per case")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides for every case")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--case", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case, args.max_minutes, args.patience, args.threads, args.set)))
        return
    rows = []
    for dataset in args.datasets:
        for model in args.models:
            command = [sys.executable, __file__, "--case", dataset, model, "--max-minutes", str(args.max_minutes),
                       "--patience", str(args.patience), "--threads", str(args.threads), "--set", *args.set]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            row = json.loads(output.strip().splitlines()[-1])
            rows.append(row)
            print(f"{dataset:8s} {model:9s} {row['seconds_per_epoch']:7.2f} s/epoch  "
                  f"{row['sequences_per_second']:8.0f} seq/s  best epoch {row['best_epoch']:3d} "
                  f"after {row['seconds_to_best']:7.1f} s  eval {row['full_ranking_eval_seconds']:.3f} s  "
                  f"peak {row['peak_memory_mb']:.0f} MB  test NDCG@10 {row['test_NDCG@10']:.4f} "
                  f"HR@10 {row['test_HR@10']:.4f}  [{row['hardware']}]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
