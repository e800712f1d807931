"""The run store: every finished run directory (``final.json``) under a root, as one table.

Notebooks and reports read this table; nothing here trains or evaluates. Aggregation is
mean +- std over seeds of the same (dataset, model, method, item encoder, config hash) cell.

The method of a run is the name its experiment grid gave it (``cell.json``, written by
:mod:`dmesr.experiments.runner`); a run trained outside a grid is named by its item-encoder kind,
with ``id`` called ``backbone`` as in the grids. ``write_store`` saves the table as
``<root>/store.csv`` and ``<root>/store.parquet``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from dmesr.config import saved_run_config

KEYS = ["dataset", "model", "method", "items", "config"]
BREAKDOWN_GROUPS = ("head", "tail", "short", "long")
# Settings every run of a comparison must share, stored per run as ``<section>_<field>`` columns
# from its ``config.yaml`` so a report can state the protocol and flag a dataset that mixes them
PROTOCOL_FIELDS = (("data", "max_len"), ("model", "hidden_size"), ("model", "num_layers"), ("train", "loss"),
                   ("train", "batch_size"), ("train", "lr"), ("train", "max_epochs"), ("train", "patience"))


def run_method(run_dir: Path, items: str) -> tuple[str, str]:
    """``(experiment, method)`` of a run: from ``cell.json`` when a grid wrote one."""
    cell_path = run_dir / "cell.json"
    if cell_path.exists():
        cell = json.loads(cell_path.read_text())
        return cell["experiment"], cell["method"]
    return "", "backbone" if items == "id" else items


def collect_runs(root: str | Path) -> pd.DataFrame:
    """One row per finished run: identity, protocol settings (``PROTOCOL_FIELDS``), validation
    metrics of the selected epoch (``valid_*``), test metrics (``test_*``), head/tail and short/long
    metrics (``head_*``, ...), sampled-protocol metrics when evaluated (``sampled_*``), timings."""
    rows = []
    for final_path in sorted(Path(root).glob("**/final.json")):
        final = json.loads(final_path.read_text())
        run_dir = final_path.parent
        experiment, method = run_method(run_dir, final["items"])
        row = {
            "dataset": final["dataset"], "model": final["model"], "method": method, "items": final["items"],
            "config": run_dir.name.rsplit("-seed", 1)[0], "seed": final["seed"], "experiment": experiment,
            "run_dir": str(run_dir), "best_epoch": final["best_epoch"], "epochs": final["epochs"],
            "hardware": final["hardware"],
            **{k: v for k, v in final["valid"].items() if k.startswith("valid_")},
            **{f"test_{k}": v for k, v in final["test"].items()},
            **{f"seconds_{k}": v for k, v in final["seconds"].items()},
        }
        config = saved_run_config(run_dir)
        row.update({f"{section}_{field}": getattr(getattr(config, section), field) for section, field in PROTOCOL_FIELDS})
        for group in BREAKDOWN_GROUPS:
            row.update({f"{group}_{k}": v for k, v in final.get("test_breakdown", {}).get(group, {}).items()})
        sampled_path = run_dir / "evaluation-sampled.json"
        if sampled_path.exists():
            row.update({f"sampled_{k}": v for k, v in json.loads(sampled_path.read_text())["test"].items()})
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no finished runs (final.json) under {root}")
    return pd.DataFrame(rows)


def write_store(root: str | Path) -> Path:
    """Collect the runs under ``root`` into ``store.csv`` and ``store.parquet`` there; returns the csv path."""
    root = Path(root)
    runs = collect_runs(root)
    csv_path = root / "store.csv"
    for path, write in ((csv_path, runs.to_csv), (root / "store.parquet", runs.to_parquet)):
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # concurrent shards may write at once
        write(partial, index=False)
        os.replace(partial, path)
    return csv_path


def summarize(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, std and seed count of ``metrics`` per cell."""
    grouped = runs.groupby(KEYS, sort=True)
    table = grouped[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = grouped.size()
    return table.reset_index()


def mean_std(mean: float, std: float, digits: int = 4) -> str:
    std_text = "n/a" if pd.isna(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {std_text}"
