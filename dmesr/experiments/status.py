"""Where each cell of a grid stands, and how long the rest will take (the dry run's table).

A cell is *done* when its run directory holds ``final.json``, *running* while another process holds
the directory's lock, *partial* when training started, else *todo*.

Time estimates (dry run) use the grid's finished runs: median seconds per epoch times median
epochs of finished runs of the same dataset, minus the epochs a partial run already has. The
closest runs are used: same model and method, else same model ("measured"), else the same method
with the other backbones, else any run of the dataset ("other backbones": backbones of one width
cost about the same per epoch). Only runs that finished on this kind of hardware count (any CPU for a
CPU, the same GPU model for a GPU: the same epoch takes many times longer on a CPU thread than on a
GPU), and of a run resumed on other hardware only the epochs that ran where it finished. A dataset
without such runs gets ``DEFAULT_SECONDS_PER_EPOCH`` times ``train.max_epochs``, marked as a guess.
The figures behind both choices: reports/dmesr-notes.md, "Epoch times".
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from dmesr.experiments.grid import Cell
from dmesr.lock import is_locked
from dmesr.training.run import hardware, hardware_kind, lock_path
from dmesr.training.trainer import read_epoch_log

DEFAULT_SECONDS_PER_EPOCH = 30.0  # a guess (ml-100k-sized data on a laptop CPU), used only before any run finished
SAME_SPEED_FACTOR = 3.0  # an epoch over 3x slower or faster than its run's last one ran on other hardware
STATUSES = ("done", "running", "partial", "todo")  # running: another process trains it now


def cell_status(cell: Cell) -> str:
    run_dir = cell.run_dir
    if (run_dir / "final.json").exists():
        return "done"
    if is_locked(lock_path(run_dir)):
        return "running"
    return "partial" if (run_dir / "config.yaml").exists() else "todo"


def _finished_epochs(run_dir: Path) -> int:
    return len(read_epoch_log(run_dir / "epochs.jsonl"))


def _seconds_per_epoch_where_finished(run_dir: Path, final: dict) -> float:
    """Median training seconds per epoch of a finished run, on the hardware its ``final.json`` names.

    A run resumed on other hardware (started on a GPU, finished on a CPU) has epochs of two speeds
    that ``final.json``'s median mixes; its last epoch ran on the named hardware. So only the epochs
    within a factor :data:`SAME_SPEED_FACTOR` of the last one count. A run that never moved keeps (nearly)
    all its epochs: load on one machine changes an epoch's time far less than that."""
    seconds = [row["train_seconds"] for row in read_epoch_log(run_dir / "epochs.jsonl")]
    if not seconds:
        return final["seconds"]["train_epoch_median"]
    last = seconds[-1]
    return statistics.median(s for s in seconds if last / SAME_SPEED_FACTOR <= s <= last * SAME_SPEED_FACTOR)


def _estimate_keys(cell: Cell) -> list[tuple[tuple, str]]:
    """Groups of finished runs that predict ``cell``'s cost, closest first, with their label."""
    return [((cell.dataset, cell.model, cell.method), "measured"), ((cell.dataset, cell.model), "measured"),
            ((cell.dataset, "*", cell.method), "other backbones"), ((cell.dataset,), "other backbones")]


def estimate_seconds(cells: list[Cell], statuses: list[str], measured_from: list[Cell] = ()
                     ) -> list[tuple[float, str]]:
    """``(seconds, source)`` still needed by each cell (0 for done cells); source says what it rests on.

    Besides the finished ``cells``, the finished cells of ``measured_from`` (e.g. the rest of the grid
    when only some cells are run) are measured too."""
    finished: dict[tuple, list[tuple[float, int]]] = {}
    # each run once: ``measured_from`` may repeat cells (the whole grid and a selection of it)
    by_run = {cell.run_dir: cell for cell in measured_from}
    for cell in cells:
        by_run.pop(cell.run_dir, None)
    others = [cell for cell in by_run.values() if cell_status(cell) == "done"]
    here = hardware_kind(hardware())
    for cell, status in [*zip(cells, statuses), *((cell, "done") for cell in others)]:
        if status != "done":
            continue
        final = json.loads((cell.run_dir / "final.json").read_text())
        per_epoch, epochs = _seconds_per_epoch_where_finished(cell.run_dir, final), final["epochs"]
        if hardware_kind(final.get("hardware", here)) != here:
            continue
        for key, _ in _estimate_keys(cell):
            finished.setdefault(key, []).append((per_epoch, epochs))
    estimates = []
    for cell, status in zip(cells, statuses):
        if status == "done":
            estimates.append((0.0, "measured"))
            continue
        measured, source = next(((finished[key], source) for key, source in _estimate_keys(cell) if key in finished),
                                (None, "guess"))
        if measured:
            per_epoch = statistics.median(seconds for seconds, _ in measured)
            epochs = statistics.median(count for _, count in measured)
        else:
            per_epoch, epochs = DEFAULT_SECONDS_PER_EPOCH, cell.config.train.max_epochs
        seconds = per_epoch * max(0.0, epochs - _finished_epochs(cell.run_dir))
        if cell.config.train.max_minutes > 0:
            seconds = min(seconds, 60.0 * cell.config.train.max_minutes)
        estimates.append((seconds, source))
    return estimates
