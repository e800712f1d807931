"""Experiments: grids of runs from YAML, the runner, the run store, the results report, exports.

    cells = load_grid("configs/experiments/main.yaml")   # one Cell per dataset x model x method x seed
    run_grid(cells, workers=2)                             # skips finished cells, resumes partial ones
    evaluate_runs("runs/main", "sampled")                  # the sampled protocol for every finished run
    report("runs/main")                                    # runs/main/results.md
"""

from dmesr.experiments.export import export, export_split
from dmesr.experiments.grid import Cell, expand_grid, load_grid
from dmesr.experiments.reevaluate import evaluate_runs
from dmesr.experiments.report import report, write_results_report
from dmesr.experiments.runner import CellOutcome, cell_status, experiments_run, run_grid, shard_cells
from dmesr.experiments.store import collect_runs, summarize, write_store

__all__ = [
    "Cell",
    "CellOutcome",
    "cell_status",
    "evaluate_runs",
    "collect_runs",
    "expand_grid",
    "experiments_run",
    "export",
    "export_split",
    "load_grid",
    "report",
    "run_grid",
    "shard_cells",
    "summarize",
    "write_results_report",
    "write_store",
]
