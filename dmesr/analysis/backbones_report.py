"""The backbones report: ml-1m runs of the three backbones against their published values, and the
speed benchmark written by ``benchmarks/bench_backbones.py``.

    dmesr report ml-1m-backbones-h100 ml-1m-backbones-full --out reports/backbones.md \
        --bench reports/bench/backbones-cpu-ml-100k.json reports/bench/backbones-cpu-ml-1m.json \
        --notes reports/backbones-notes.md

One ml-1m table per collection of the run store (each one set of runs: its hardware and training
budget). Every figure is read from the store and the benchmark files; the only constants here are
the published anchors compared against (Klenitskiy & Vasilev, RecSys 2023, Table 3, ml-1m, full ranking).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dmesr.markdown import markdown_table, mean_std

PUBLISHED = {  # (HR@10, NDCG@10) as printed in the paper
    "sasrec": (0.3152, 0.1821),
    "bert4rec": (0.2843, 0.1537),
    "gru4rec": (0.2811, 0.1648),
}
MINIMUM = "SASRec NDCG@10 >= 0.16 and HR@10 >= 0.28; BERT4Rec and GRU4Rec within 10% of their published values"


def ml1m_section(name: str, runs: pd.DataFrame) -> list[str]:
    """One set of ml-1m backbone runs against the published values."""
    lines = [
        f"## ml-1m under the published protocol: `{name}`",
        "",
        f"Runs: collection `{name}` of the run store (config, per-epoch metrics and final test metrics of each run). "
        f"Hardware: {', '.join(sorted(runs['hardware'].unique()))}. Minimum asked: {MINIMUM}.",
        "",
    ]
    # a set whose runs ran on different machines names each run's machine beside its epochs
    mixed = runs["hardware"].nunique() > 1
    rows = []
    for model, group in runs.groupby("model"):
        hr, ndcg = PUBLISHED[model]
        epochs = ", ".join(f"{run.best_epoch}/{run.epochs}" + (f" ({run.hardware})" if mixed else "")
                           for run in group.itertuples())
        rows.append([model, len(group), mean_std(group["test_HR@10"].mean(), group["test_HR@10"].std()),
                     mean_std(group["test_NDCG@10"].mean(), group["test_NDCG@10"].std()), f"{hr:.4f} / {ndcg:.4f}",
                     f"{group['test_NDCG@10'].mean() / ndcg:.2f}", epochs, ", ".join(sorted(set(group["stopped"])))])
    header = ["model", "seeds", "HR@10 (ours)", "NDCG@10 (ours)", "published HR@10 / NDCG@10",
              "ours / published NDCG@10", "epochs (best/last)", "stopped by"]
    return [*lines, markdown_table(header, rows)]


def bench_section(bench_paths: list[Path]) -> list[str]:
    rows = [row for path in bench_paths for row in json.loads(Path(path).read_text())]
    lines = [
        "## Speed benchmark",
        "",
        f"From {', '.join(f'`{path}`' for path in bench_paths)}, written by `benchmarks/bench_backbones.py` "
        "(settings in its docstring: CE loss, max length 50, batch 256, width 64, 2 layers, 2 heads, lr 1e-3; "
        "training until patience or the time budget). Peak memory is the process's maximum resident set (CPU) "
        "or allocated GPU memory.",
        "",
    ]
    header = ["dataset", "model", "hardware", "s/epoch", "sequences/s", "best epoch", "s to best",
              "full-ranking eval s (all users)", "peak MB", "test NDCG@10", "test HR@10"]
    table = [[row["dataset"], row["model"], row["hardware"], f"{row['seconds_per_epoch']:.2f}",
              f"{row['sequences_per_second']:.0f}", row["best_epoch"], f"{row['seconds_to_best']:.1f}",
              f"{row['full_ranking_eval_seconds']:.3f} ({row['users']})", f"{row['peak_memory_mb']:.0f}",
              f"{row['test_NDCG@10']:.4f}", f"{row['test_HR@10']:.4f}"] for row in rows]
    return [*lines, markdown_table(header, table)]


def write_backbones_report(runs: dict[str, pd.DataFrame], bench_paths: list[str | Path], out_path: str | Path,
                           command: str, notes: str | Path | None = None) -> Path:
    """``runs``: name -> runs table of one set of ml-1m backbone runs; ``notes``: markdown appended as is."""
    parts = ["# Backbones: SASRec, BERT4Rec, GRU4Rec", "", f"Command: `{command}`",
             *(line for name, table in runs.items() for line in ["", *ml1m_section(name, table)]), "",
             *bench_section(list(bench_paths))]
    if notes:
        parts += ["", Path(notes).read_text().rstrip()]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(parts) + "\n")
    return out_path
