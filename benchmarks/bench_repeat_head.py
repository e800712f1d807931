"""Training-step cost of the repeat head (``model.repeat_head``) over its plain backbone, in one process.

Builds the backbone and the same backbone with the repeat head on one dataset, then times optimiser
steps on the same training batches, alternating the two models step by step so both see the same
machine load. Prints the median seconds per step of each and their ratio. The head reads the whole
history by default (``model.repeat_context``, the items before each window with the batch, as the trainer
passes them); ``--set model.repeat_context=0`` times the window-only head.

    .venv/bin/python benchmarks/bench_repeat_head.py --dataset ml-100k --model sasrec --steps 20 --threads 1 \
        --out reports/bench/repeat-head-ml-100k-sasrec.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from bench_dmesr_overhead import median_step_seconds, training_steps  # the sibling script's step timing

from dmesr.config import load_config
from dmesr.data import prepare_split
from dmesr.data.batches import TrainWindows
from dmesr.training.runtime import select_device

VARIANTS = {"backbone": "false", "repeat_head": "true"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for both models")
    parser.add_argument("--out", help="also write the result to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    base = [f"data.dataset={args.dataset}", f"model.name={args.model}", *args.set]
    configs = {name: load_config(overrides=base + [f"model.repeat_head={value}"]) for name, value in VARIANTS.items()}
    split = prepare_split(configs["backbone"].data)
    windows = TrainWindows(split, configs["backbone"].data.max_len, configs["backbone"].train.all_windows)
    batch = configs["backbone"].train.batch_size
    train_step = training_steps(configs, split, windows.windows, device, earlier=windows.earlier)
    medians = median_step_seconds(train_step, configs, args.steps, warmup=2)
    result = {"dataset": args.dataset, "model": args.model, "device": str(device), "threads": args.threads,
              "items": split.num_items, "batch_size": batch, "max_len": configs["backbone"].data.max_len,
              "steps": args.steps, "set": args.set, "repeat_context": configs["repeat_head"].model.repeat_context,
              "backbone_s_per_step": medians["backbone"], "repeat_head_s_per_step": medians["repeat_head"],
              "ratio": medians["repeat_head"] / medians["backbone"], "command": shlex.join(["python", *sys.argv])}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
