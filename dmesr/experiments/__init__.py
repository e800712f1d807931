"""Experiments: grids of runs from YAML, the runner, the run store, re-evaluation, reproduction, tuning, exports.

    cells = load_grid("configs/experiments/main.yaml")   # one Cell per dataset x model x method x seed
    run_grid(cells, workers=2)                             # skips finished cells, resumes partial ones
    evaluate_runs("runs/main", "sampled")                  # the sampled protocol for every finished run
    add_to_store("runs/main")                              # its finished runs into reports/store

What is read out of the store (reports, comparisons, figures' inputs) is :mod:`dmesr.analysis`.
"""

from dmesr.experiments.export import export, export_split
from dmesr.experiments.grid import Cell, expand_grid, load_grid
from dmesr.experiments.reevaluate import evaluate_runs
from dmesr.experiments.run_store import add_to_store, collect_runs, load_epochs, load_runs
from dmesr.experiments.runner import CellOutcome, cell_status, experiments_run, run_grid, shard_cells

__all__ = [
    "Cell",
    "add_to_store",
    "CellOutcome",
    "cell_status",
    "evaluate_runs",
    "collect_runs",
    "expand_grid",
    "experiments_run",
    "export",
    "export_split",
    "load_epochs",
    "load_grid",
    "load_runs",
    "run_grid",
    "shard_cells",
]
