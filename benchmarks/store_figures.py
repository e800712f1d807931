"""Figures the code's design rests on, read from the run store: what an epoch costs per backbone and hardware
(the grid's dry-run estimates borrow epoch times across backbones and never across hardware), and how much
smaller the per-user test vectors are compressed (each run folder keeps them).

    .venv/bin/python benchmarks/store_figures.py --collection main

Epoch cost is each run's median training seconds per epoch (``seconds_train_epoch_median``); a cell is a
(dataset, hardware, method) with runs of all three backbones, compared by the slowest backbone's median over
the fastest's.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import pandas as pd

from dmesr.config import BACKBONES
from dmesr.experiments.run_store import DEFAULT_STORE, load_runs, read_table


def epoch_costs(runs: pd.DataFrame) -> None:
    runs = runs[runs["model"].isin(BACKBONES)]
    cells = runs.groupby(["dataset", "hardware", "method", "model"])["seconds_train_epoch_median"].median()
    cells = cells.unstack("model").dropna()
    ratio = cells.max(axis=1) / cells.min(axis=1)
    print(f"cells with every backbone: {len(ratio)}; slowest / fastest backbone per epoch: median "
          f"{ratio.median():.2f}, within 1.5x in {(ratio <= 1.5).mean():.0%} of cells, largest {ratio.max():.2f} "
          f"({', '.join(ratio.idxmax())})")
    seconds = runs.groupby(["dataset", "hardware"])["seconds_train_epoch_median"]
    print(seconds.describe(percentiles=[0.1, 0.5, 0.9])[["count", "10%", "50%", "90%"]].round(2).to_string())


def per_user_compression(collection: str, store: str) -> None:
    users = pd.read_parquet(f"{store}/per_user.parquet", filters=[("collection", "==", collection)])
    ratios = []
    for _, run in users.groupby("run"):
        run = run.sort_values("user_index")
        vectors = {name: run[name].to_numpy() for name in run.columns
                   if name not in ("collection", "run", "user_index")}
        plain, packed = io.BytesIO(), io.BytesIO()
        np.savez(plain, **vectors)
        np.savez_compressed(packed, **vectors)
        ratios.append(plain.tell() / packed.tell())
    print(f"per-user test vectors of {len(ratios)} runs: np.savez / np.savez_compressed size, median "
          f"{np.median(ratios):.1f}x (range {min(ratios):.1f}-{max(ratios):.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", default="main")
    parser.add_argument("--store", default=str(DEFAULT_STORE))
    args = parser.parse_args()
    read_table("runs", args.store)  # a missing store is one line naming it
    epoch_costs(load_runs(args.collection, args.store, per_user=False))
    per_user_compression(args.collection, args.store)


if __name__ == "__main__":
    main()
