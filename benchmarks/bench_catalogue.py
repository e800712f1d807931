"""Training-step time and peak memory of each loss as the catalogue grows.

SASRec over a plain ID item table on synthetic data (uniform random items, every window full),
so only the catalogue size changes between settings. Each (loss, catalogue) setting runs in its
own process, so its peak memory is its own: the resident set on a CPU (it includes the Python and
torch runtime, given apart as ``baseline_rss_mib``), the allocator's peak on a GPU. Prints the
median seconds per optimiser step after one warm-up step.

    .venv/bin/python benchmarks/bench_catalogue.py --threads 1 --items 1000 10000 100000 1000000 \
        --out reports/bench/catalogue-cpu.json

``--loss-only ROWS`` times the loss alone (forward and backward over ROWS hidden states).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from dmesr.config import ModelConfig, TrainConfig
from dmesr.models import IDEmbedding, build_model
from dmesr.models.losses import full_cross_entropy, sampled_softmax, sequence_loss


def measure(loss: str, num_items: int, steps: int, batch: int, length: int, width: int, device: str,
            loss_only: int = 0) -> dict:
    """One setting in this process: median step seconds and peak memory."""
    torch.manual_seed(0)
    device = torch.device(device)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if loss_only:
        return {"loss": loss, "items": num_items, "rows": loss_only, "steps": steps,
                "loss_s": time_loss_alone(loss, num_items, steps, loss_only, width, device)}
    model = build_model(ModelConfig(name="sasrec", hidden_size=width), IDEmbedding(num_items, width), length)
    model = model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_config = TrainConfig(loss=loss)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for step in range(steps + 1):  # the first step warms up and is not counted
        windows = torch.randint(1, num_items + 1, (batch, length + 1), generator=generator).to(device)
        started = time.perf_counter()
        value = sequence_loss(model, windows, train_config)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            seconds.append(time.perf_counter() - started)
    result = {"loss": loss, "items": num_items, "s_per_step": statistics.median(seconds), "steps": steps}
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["baseline_rss_mib"] = baseline_rss
    return result


def time_loss_alone(loss: str, num_items: int, steps: int, rows: int, width: int, device: torch.device) -> float:
    """Median seconds of the loss's forward and backward over ``rows`` random hidden states: the
    loss's own growth with the catalogue, apart from the rest of the step."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=generator).to(device).requires_grad_()
    table = (torch.randn(num_items + 1, width, generator=generator) * 0.1).to(device).requires_grad_()
    targets = torch.randint(1, num_items + 1, (rows,), generator=generator).to(device)
    losses = {"ce": full_cross_entropy, "sampled_softmax": lambda *args: sampled_softmax(*args, 256)}
    seconds = []
    for step in range(steps + 1):  # the first call warms up and is not counted
        started = time.perf_counter()
        losses[loss](hidden, table, targets).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--losses", nargs="+", default=["ce", "sampled_softmax"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--loss-only", type=int, default=0, metavar="ROWS",
                        help="time only the loss (forward and backward) over this many hidden states")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--one", nargs=2, metavar=("LOSS", "ITEMS"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (args.steps, args.batch_size, args.max_len, args.width, args.device, args.loss_only)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), *shape)))
        return
    rows = []
    for num_items in args.items:
        for loss in args.losses:
            child = [sys.executable, __file__, *sys.argv[1:], "--one", loss, str(num_items)]
            output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    result = {"model": "sasrec", "items_kind": "id", "device": args.device, "threads": args.threads,
              "batch_size": args.batch_size, "max_len": args.max_len, "width": args.width, "results": rows,
              "command": shlex.join(["python", *sys.argv])}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
