"""How sharp DMESR's cross-attention over the original-text tokens is in trained runs.

For every finished run of one grid method (``cell.json``) under the given folders, loads the best
checkpoint and measures :func:`dmesr.explorer.attention_sharpness` over all items: normalised
entropy (1 = the attention is a plain average of the item's tokens) and the mean largest weight
against its uniform value; one row per (dataset, model), mean over seeds. Needs the runs' ``best.pt``
(checkpoints stay with the run directories, on the machine that trained them).

    dmesr experiments attention reports/runs/main/ml-100k --method dmesr --out reports/bench/fusion-attention-dmesr.json
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dmesr.experiments.run_store import collect_tables
from dmesr.explorer import attention_sharpness, load_trained


def attention_table(roots: list[str | Path], method: str = "dmesr") -> tuple[pd.DataFrame, list[dict]]:
    """Per (dataset, model): seeds and mean sharpness of the finished runs of ``method``; and the per-run rows."""
    runs = pd.concat([collect_tables(root)["runs"] for root in roots], ignore_index=True)
    rows = [{"dataset": run.dataset, "model": run.model, "seed": run.seed,
             **attention_sharpness(load_trained(run.run_dir).model)}
            for run in runs[runs["method"] == method].itertuples()]
    if not rows:
        raise FileNotFoundError(f"no finished run of method {method!r} under {', '.join(map(str, roots))}")
    table = pd.DataFrame(rows).groupby(["dataset", "model"]).agg(
        seeds=("seed", "count"), normalised_entropy=("normalised_entropy", "mean"),
        max_weight=("max_weight", "mean"), uniform_max_weight=("uniform_max_weight", "mean")).reset_index()
    return table, rows


def attention_command(roots: list[str], method: str, out: str | None, command: str) -> None:
    """CLI entry: print the table; with ``out``, also write it (and the per-run rows) as JSON."""
    table, rows = attention_table(roots, method)
    print(table.to_string(index=False, float_format="%.3f"))
    if out:
        result = {"method": method, "rows": table.to_dict("records"), "runs": rows, "command": command}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
