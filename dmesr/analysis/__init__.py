"""Analysis: what the run store's runs say, written as reports (every number read from the store).

    report("main", "reports/results.md")                   # the results report of the store's collection "main"
    summarize(load_runs("main"), ["test_NDCG@10"])         # mean, std and seeds per cell

The runs themselves (grids, the runner, the store) are :mod:`dmesr.experiments`.
"""

from dmesr.analysis.comparisons import summarize
from dmesr.analysis.results_report import report, write_results_report

__all__ = ["report", "summarize", "write_results_report"]
