"""Time ``evaluate()`` at MovieLens scale with a model that only hands back random scores.

The model does no work (it returns the next rows of a precomputed score matrix), so the timings
are the evaluator's own cost: batching, history exclusion, ranking and metrics. Histories are
random with the interaction counts of the real data sets (ml-100k: 943 users, 100k interactions;
ml-1m: 6,040 users, 1M interactions), since the cost of excluding seen items grows with them.

    .venv/bin/python benchmarks/bench_evaluation.py [--threads 1] [--repeats 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from dmesr.config import EvalConfig
from dmesr.data.batches import evaluation_inputs
from dmesr.data.schema import SequenceSplit
from dmesr.evaluation import evaluate

SCALES = {"ml-100k": (943, 1682, 100_000), "ml-1m": (6040, 3416, 1_000_209)}  # users, items, interactions


class RandomScores(nn.Module):
    """Returns consecutive rows of a fixed random ``[num_users, num_items + 1]`` score matrix."""

    def __init__(self, num_users: int, num_items: int, device: str, seed: int = 0):
        super().__init__()
        self.num_items = num_items
        scores = torch.rand(num_users, num_items + 1, generator=torch.Generator().manual_seed(seed))
        self.scores = scores.to(device)
        self.cursor = 0

    def predict_scores(self, histories: torch.Tensor) -> torch.Tensor:
        rows = self.scores[self.cursor : self.cursor + len(histories)]
        self.cursor = (self.cursor + len(histories)) % len(self.scores)
        return rows


def random_split(num_users: int, num_items: int, num_interactions: int, negatives: int, seed: int = 0) -> SequenceSplit:
    rng = np.random.default_rng(seed)
    lengths = 5 + rng.multinomial(num_interactions - 5 * num_users, np.full(num_users, 1 / num_users))
    flat = rng.integers(1, num_items + 1, size=lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    targets = np.stack([flat[offsets[1:] - 2], flat[offsets[1:] - 1]])
    sampled = rng.integers(1, num_items + 1, size=(2, num_users, negatives))
    sampled = np.where(sampled == targets[:, :, None], sampled % num_items + 1, sampled)  # never the target
    return SequenceSplit(
        name="random",
        item_ids=np.arange(1, num_items + 1).astype(str),
        user_ids=np.arange(num_users).astype(str),
        offsets=offsets,
        flat_items=flat,
        items=pd.DataFrame({"item": np.arange(1, num_items + 1).astype(str)}),
        fingerprint="benchmark",
        valid_negatives=sampled[0],
        test_negatives=sampled[1],
    )


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = {
        "full, seen excluded": EvalConfig(),
        "full, nothing excluded": EvalConfig(exclude_history=False),
        "sampled, 100 negatives": EvalConfig(protocol="sampled"),
    }
    print(f"device: {args.device}; torch threads: {args.threads}; median of {args.repeats} runs")
    for name, (num_users, num_items, interactions) in SCALES.items():
        split = random_split(num_users, num_items, interactions, negatives=100)
        inputs = evaluation_inputs(split, "test", max_len=200)
        model = RandomScores(num_users, num_items, args.device)
        for label, config in configs.items():
            seconds = median_seconds(lambda: evaluate(model, inputs, config, args.device), args.repeats)
            print(f"{name:8s} {num_users:5d} users x {num_items + 1:5d} columns  {label:24s} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
