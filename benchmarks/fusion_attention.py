"""How sharp DMESR's cross-attention over the original-text tokens is in trained runs.

For every finished run of one grid method (``cell.json``) under the given folders, loads the best
checkpoint and measures :func:`dmesr.explorer.attention_sharpness` over all items: normalised
entropy (1 = the attention is a plain average of the item's tokens) and the mean largest weight
against its uniform value. Prints one row per (dataset, model), mean over seeds. Needs the runs'
``best.pt`` (not committed: run on the machine that trained them).

    .venv/bin/python benchmarks/fusion_attention.py reports/runs/main/ml-100k --method dmesr \
        --out reports/bench/fusion-attention-ml-100k.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch

from dmesr.experiments.store import collect_runs
from dmesr.explorer import attention_sharpness, load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="folders holding finished run directories (searched recursively)")
    parser.add_argument("--method", default="dmesr", help="grid method name (cell.json) of the runs to measure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = pd.concat([collect_runs(root) for root in args.roots])
    rows = [{"dataset": run.dataset, "model": run.model, "seed": run.seed,
             **attention_sharpness(load_trained(run.run_dir).model)}
            for run in runs[runs["method"] == args.method].itertuples()]
    if not rows:
        sys.exit(f"no finished run of method {args.method!r} under {', '.join(args.roots)}")
    table = pd.DataFrame(rows).groupby(["dataset", "model"]).agg(
        seeds=("seed", "count"), normalised_entropy=("normalised_entropy", "mean"),
        max_weight=("max_weight", "mean"), uniform_max_weight=("uniform_max_weight", "mean")).reset_index()
    print(table.to_string(index=False, float_format="%.3f"))
    if args.out:
        result = {"method": args.method, "rows": table.to_dict("records"), "runs": rows,
                  "command": shlex.join(["python", *sys.argv])}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
