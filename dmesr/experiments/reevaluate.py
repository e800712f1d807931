"""Evaluate the finished runs of a run store again under another protocol, e.g. the sampled one.

    dmesr experiments evaluate reports/runs/main --protocol sampled

Runs are trained and selected under the full-ranking protocol; papers of the LLM-ESR family report
the sampled protocol (the target among 100 negatives drawn once with the split). This scores each
finished run's best checkpoint with it and writes ``<run dir>/evaluation-<protocol>.json``, which
the run store and the results report read. Runs that already have that file are skipped, so the
command is resumable; runs whose split has no sampled negatives are skipped and counted.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from tqdm.auto import tqdm

from dmesr.config import saved_run_config
from dmesr.data import prepare_split
from dmesr.training.run import evaluate_run

logger = logging.getLogger(__name__)


def evaluate_missing(run_dir: Path, protocol: str = "sampled", device: str = "auto",
                     splits: dict | None = None) -> str:
    """Evaluate one finished run under ``protocol`` unless done; returns what happened:
    ``"already"``, ``"no_negatives"`` (sampled protocol, split without negatives) or ``"evaluated"``.
    ``splits`` caches the loaded splits by data config across calls."""
    if (run_dir / f"evaluation-{protocol}.json").exists():
        return "already"
    data = saved_run_config(run_dir).data
    # turned off in the config: known without loading the split (a grid rerun asks this of every done cell)
    if protocol == "sampled" and data.num_sampled_negatives == 0:
        return "no_negatives"
    splits = {} if splits is None else splits
    if repr(data) not in splits:
        splits[repr(data)] = prepare_split(data)
    split = splits[repr(data)]
    if protocol == "sampled" and split.test_negatives is None:
        logger.warning("%s: its split has no sampled negatives, not evaluated with the sampled protocol", run_dir)
        return "no_negatives"
    with contextlib.redirect_stdout(io.StringIO()):  # one line per run would bury a progress bar
        evaluate_run(run_dir, protocol, device, split=split)
    return "evaluated"


def evaluate_runs(root: str | Path, protocol: str = "sampled", device: str = "auto",
                  show_progress: bool = True) -> dict[str, int]:
    """:func:`evaluate_missing` for every finished run under ``root``; returns the counts of each outcome."""
    run_dirs = sorted(path.parent for path in Path(root).glob("**/final.json"))
    if not run_dirs:
        raise FileNotFoundError(f"no finished runs (final.json) under {root}")
    counts = {"evaluated": 0, "already": 0, "no_negatives": 0}
    splits = {}  # one load per data config: a grid has many runs of each dataset
    for run_dir in tqdm(run_dirs, desc=f"{protocol} evaluation", unit="run", disable=not show_progress):
        counts[evaluate_missing(run_dir, protocol, device, splits)] += 1
    print(f"{protocol} evaluation under {root}: {counts['evaluated']} runs evaluated, {counts['already']} "
          f"already were, {counts['no_negatives']} skipped (no sampled negatives in their split)")
    return counts
