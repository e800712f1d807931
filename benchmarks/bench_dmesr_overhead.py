"""Training-step cost of DMESR over its plain backbone, measured in one process.

Builds the backbone (ID item table) and the same backbone with the DMESR item encoder on a
dataset whose features exist (`dmesr embed` first), then times optimiser steps on the same
training batches, alternating the two models step by step so both see the same machine load.
Prints the median seconds per step of each and their ratio (the target: at most 1.2x on a CPU).

``--profile N`` then runs N more steps of each model under ``torch.profiler`` and adds, per step, what
explains a ratio on a GPU, where small steps are bound by launching work rather than by doing it: the
kernels launched, the device time they take, and how often the host waits for the device (a copy to the
host behind ``.item()``, ``nonzero`` or ``unique`` stops it until every queued kernel has run).

    .venv/bin/python benchmarks/bench_dmesr_overhead.py --dataset ml-100k --model sasrec --steps 20 \
        --out reports/bench/dmesr-overhead-ml-100k-sasrec.json

``--compile MODE`` compiles both training losses as ``train.compile`` does, in torch.compile's ``MODE``
(``default``; ``reduce-overhead`` also replays them as CUDA graphs); the warm-up then takes five steps.

The JSON it writes (``--out``) holds the command; ``dmesr report --overhead`` tabulates such files.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from dmesr.config import load_config
from dmesr.data import prepare_split
from dmesr.data.batches import TrainWindows
from dmesr.models.losses import total_loss
from dmesr.training.run import build_run_model
from dmesr.training.runtime import select_device
from dmesr.training.trainer import LossModule, compile_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for both models (e.g. train.batch_size=256)")
    parser.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                        help="compile both training losses as train.compile does (torch.compile MODE: default, "
                             "reduce-overhead for CUDA graphs, max-autotune)")
    parser.add_argument("--out", help="also write the result to this JSON file")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="also profile this many steps of each model (kernels, device time, waits for the device per step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    base = [f"data.dataset={args.dataset}", f"model.name={args.model}", *args.set]
    configs = {kind: load_config(overrides=base + [f"items.kind={kind}"]) for kind in ("id", "dmesr")}
    split = prepare_split(configs["id"].data)
    windows = TrainWindows(split, configs["id"].data.max_len).windows
    batch = configs["id"].train.batch_size
    train_step = training_steps(configs, split, windows, device, args.compile)
    warmup = 5 if args.compile else 2  # compiling (and recording CUDA graphs) takes a few steps
    medians = median_step_seconds(train_step, configs, args.steps, warmup)
    result = {"dataset": args.dataset, "model": args.model, "device": str(device), "threads": args.threads,
              "batch_size": batch, "max_len": configs["id"].data.max_len, "steps": args.steps,
              "compile": args.compile, "set": args.set,
              "backbone_s_per_step": medians["id"],
              "dmesr_s_per_step": medians["dmesr"], "ratio": medians["dmesr"] / medians["id"],
              "command": shlex.join(["python", *sys.argv])}
    if args.profile:
        result["profile_per_step"] = {
            kind: profile_steps(lambda step, kind=kind: train_step(kind, args.steps + warmup + step), args.profile, device)
            for kind in configs
        }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def training_steps(configs: dict, split, windows: torch.Tensor, device: torch.device, compile_mode: str | None = None,
                   earlier=None):
    """``train_step(name, step)``: one training step of the model built from ``configs[name]`` (the trainer's
    loss module, Adam, the same seed and the same shuffled batches for every model). ``earlier(rows)``: the
    items before those windows, passed as the trainer does to a model that reads them (``TrainWindows.earlier``)."""
    batch = next(iter(configs.values())).train.batch_size
    models, optimisers, losses = {}, {}, {}
    for name, config in configs.items():
        torch.manual_seed(0)
        models[name] = build_run_model(config, split).to(device).train()
        optimisers[name] = torch.optim.Adam(models[name].parameters(), lr=config.train.lr)
        losses[name] = LossModule(models[name], config.train)  # the trainer's loss module
        if compile_mode:
            losses[name] = compile_loss(losses[name], compile_mode)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))

    def train_step(name: str, step: int) -> None:
        rows = order[(step * batch) % len(windows):][:batch]
        extra = {"earlier": earlier(rows).to(device)} if earlier and models[name].reads_full_history else {}
        loss = total_loss(models[name], losses[name](windows[rows].to(device), **extra))
        optimisers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimisers[name].step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return train_step


def median_step_seconds(train_step, names, steps: int, warmup: int) -> dict[str, float]:
    """The median seconds of ``steps`` steps per model, the models' steps interleaved (so that a noisy
    moment of the machine falls on all of them), after ``warmup`` steps that are not counted."""
    seconds = {name: [] for name in names}
    for step in range(steps + warmup):
        for name in names:
            started = time.perf_counter()
            train_step(name, step)
            if step >= warmup:
                seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def profile_steps(run_step, steps: int, device: torch.device) -> dict:
    """Per-step averages over ``steps`` profiled calls of ``run_step(i)``: kernels launched, their device
    time, waits for the device, host time in operators; and the five operators with the most host time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for step in range(steps):
            run_step(step)
    events = profiler.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA"]
    operators = [e for e in events if e.key.startswith("aten::")]
    top = sorted(operators, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return {
        "kernels": sum(e.count for e in kernels) / steps,
        "kernel_launch_calls": sum(e.count for e in events if "LaunchKernel" in e.key) / steps,
        "kernel_ms": sum(e.self_device_time_total for e in kernels) / 1000 / steps,
        "device_waits": sum(e.count for e in events if e.key == "cudaStreamSynchronize") / steps,
        "aten_ops": sum(e.count for e in operators) / steps,
        "aten_host_ms": sum(e.self_cpu_time_total for e in operators) / 1000 / steps,
        "top_host_ops": {e.key: round(e.self_cpu_time_total / 1000 / steps, 3) for e in top},
    }


if __name__ == "__main__":
    main()
