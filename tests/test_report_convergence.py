"""Reports say when a run stopped at its epoch cap while validation still rose (not converged)."""

from __future__ import annotations

import pandas as pd

from dmesr.analysis.results_report import not_converged_sentence, runs_table, still_rising


def _runs(stops):
    return pd.DataFrame([{"dataset": "ml-100k", "model": "sasrec", "method": method, "seed": 42, "hardware": "cpu",
                          "stopped": stopped, "best_epoch": best, "epochs": epochs, "seconds_train_total": 1.0,
                          "seconds_train_epoch_median": 0.2, "seconds_test_evaluation": 0.1}
                         for method, (stopped, best, epochs) in stops.items()])


def test_a_run_cut_by_its_epoch_cap_while_rising_is_marked_not_converged():
    runs = _runs({"backbone": ("max_epochs", 5, 5), "dmesr": ("max_epochs", 3, 5), "text": ("patience", 7, 17)})
    assert list(still_rising(runs)) == [True, False, False]
    assert not_converged_sentence(runs)[0].startswith("**Not converged:** 1 of 3 runs stopped at their epoch cap")
    assert "| 5/5 (cap, rising) |" in runs_table(runs) and "| 3/5 |" in runs_table(runs)
    assert not_converged_sentence(runs[runs["method"] != "backbone"]) == []
