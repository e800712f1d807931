"""Comparisons of methods over the run store: relative improvements and paired significance tests.

Every report and notebook table that compares a method with its backbone goes through here, so a
mark in ``reports/results.md`` and one in notebook 05 come from the same test.

Significance (no correction for multiple comparisons, so read marks as indications):

* over seeds: a paired t-test on the per-seed test metric of the method and its backbone, over
  the seeds both have (at least 2);
* over users: each run's per-user test vector (the store's ``per_user`` table) is averaged over
  those paired seeds per user, then the two per-user vectors are compared with a paired test
  (t-test by default). With many users this test finds small differences that the seed test cannot.

Relative improvement is ``100 * (mean(method) - mean(backbone)) / mean(backbone)`` over each
cell's seeds.

    runs = load_runs("main")                       # dmesr.experiments.run_store
    table = results_table(runs, "NDCG@10")         # one row per dataset x model x method, with marks
    groups = breakdown_table(runs, "NDCG@10")      # head/tail items, short/long users
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from dmesr.evaluation import paired_test
from dmesr.experiments.roles import runs_roles
from dmesr.experiments.run_store import BREAKDOWN_GROUPS, PER_USER_PREFIX

REPORT_METRICS = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10")
BREAKDOWN_METRICS = ("HR@10", "NDCG@10")
SELECTION_METRIC = "NDCG@10"  # the early-stopping metric; the best baseline is chosen on it, on validation
SEED_MARK, USER_MARK = "†", "‡"
TEST_NAMES = {"ttest": "t-test", "wilcoxon": "Wilcoxon signed-rank test"}
CELL_KEYS = ["dataset", "model", "method", "items", "config"]  # the runs of one cell differ by seed only


def summarize(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean, std and seed count of ``metrics`` per cell."""
    grouped = runs.groupby(CELL_KEYS, sort=True)
    table = grouped[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = grouped.size()
    return table.reset_index()


def users_mean(runs: pd.DataFrame, metric: str) -> np.ndarray:
    """Per-user ``metric`` averaged over the given runs (seeds) of one cell."""
    column = f"{PER_USER_PREFIX}{metric}"
    vectors = list(runs[column]) if column in runs else [None] * len(runs)
    missing = [run for run, vector in zip(runs["run"], vectors) if not isinstance(vector, np.ndarray)]
    if missing:
        raise ValueError(f"runs {missing} have no per-user test {metric}: the per-user significance test needs it")
    if len({len(vector) for vector in vectors}) != 1:
        raise ValueError(f"runs {list(runs['run'])} have different numbers of test users")
    return np.mean(vectors, axis=0)


def compare_with_backbone(method_runs: pd.DataFrame, backbone_runs: pd.DataFrame, metrics, per_user_test: str):
    """``{metric: {"rel_pct", "p_seeds", "p_users"}}`` and the paired seeds (p is None where untestable)."""
    seeds = sorted(set(method_runs["seed"]) & set(backbone_runs["seed"]))
    paired_method = method_runs.set_index("seed").loc[seeds].sort_index()
    paired_backbone = backbone_runs.set_index("seed").loc[seeds].sort_index()
    results = {}
    for metric in metrics:
        column = f"test_{metric}"
        baseline_mean = backbone_runs[column].mean()
        rel_pct = 100.0 * (method_runs[column].mean() - baseline_mean) / baseline_mean if baseline_mean else np.nan
        p_seeds = p_users = None
        if len(seeds) >= 2:
            p_seeds = paired_test(paired_method[column].to_numpy(), paired_backbone[column].to_numpy(), "ttest")["p_value"]
        if seeds:
            p_users = paired_test(users_mean(paired_method, metric), users_mean(paired_backbone, metric),
                                  per_user_test)["p_value"]
        results[metric] = {"rel_pct": rel_pct, "p_seeds": p_seeds, "p_users": p_users}
    return results, seeds


def p_text(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def significance_marks(result: dict, alpha: float) -> str:
    """``SEED_MARK`` and/or ``USER_MARK`` for a :func:`compare_with_backbone` result with p < ``alpha``."""
    return ((SEED_MARK if result["p_seeds"] is not None and result["p_seeds"] < alpha else "")
            + (USER_MARK if result["p_users"] is not None and result["p_users"] < alpha else ""))


def seeds_text(count: int, most: int) -> str:
    return str(count) if count == most else f"{count} of {most}"


def model_cells(runs: pd.DataFrame):
    """(model, method, runs) per cell, in the order of the runs' method roles within each model (the
    backbone first)."""
    roles = runs_roles(runs)
    for model in sorted(runs["model"].unique()):
        model_runs = runs[runs["model"] == model]
        for method in roles.order(model_runs["method"]):
            yield model, method, model_runs[model_runs["method"] == method]


def _labels(runs: pd.DataFrame) -> pd.Series:
    """The method, with what sets its config apart where one method ran with several configs (ablations
    run outside a grid): its ``items`` and ``model`` settings that differ from the most common value among
    them (none for the common config; every value where none is most common), else the config hash."""
    labels = runs["method"].astype(str).copy()
    for _, group in runs.groupby(["dataset", "model", "method"]):
        if group["config"].nunique() < 2:
            continue
        texts = group.drop_duplicates("config").set_index("config")["config_yaml"] if "config_yaml" in group else {}
        settings = {config: _settings(text) for config, text in dict(texts).items()}
        names = sorted({name for values in settings.values() for name in values})
        common = {name: _most_common([repr(values.get(name)) for values in settings.values()]) for name in names}
        said = {config: ", ".join(f"{name.split('.', 1)[1]}={values.get(name)}" for name in names
                                  if repr(values.get(name)) != common[name]) for config, values in settings.items()}
        unique = pd.Series(said).value_counts()
        method = group["method"].iloc[0]
        for config, index in group.groupby("config").groups.items():
            text = said.get(config)
            if text is None or unique[text] > 1:  # nothing read, or not enough to tell it apart: the hash too
                text = f"{text}, {config}" if text else config
            labels[index] = f"{method} ({text})" if text else method
    return labels


def _most_common(values: list[str]) -> str | None:
    """The value more frequent than any other, or ``None`` on a tie."""
    counts = pd.Series(values).value_counts()
    return counts.index[0] if len(counts) == 1 or counts.iloc[0] > counts.iloc[1] else None


def _settings(config_yaml: str) -> dict:
    """A run's ``items`` and ``model`` settings, flat (``items.integration``: ``sum``)."""
    config = yaml.safe_load(config_yaml) or {}
    return {f"{section}.{name}": value for section in ("items", "model")
            for name, value in (config.get(section) or {}).items()}


def results_table(runs: pd.DataFrame, metric: str, alpha: float = 0.05, per_user_test: str = "ttest") -> pd.DataFrame:
    """One row per dataset x model x method (label): test ``metric`` mean and std over seeds, the change
    over the same model's backbone (the runs' method roles), both p-values and the significance marks."""
    backbone_method = runs_roles(runs).backbone
    runs = runs.assign(label=_labels(runs))
    rows = []
    for (dataset, model, label), cell in runs.groupby(["dataset", "model", "label"], sort=True):
        values = cell[f"test_{metric}"]
        row = {"dataset": dataset, "model": model, "method": label, "seeds": cell["seed"].nunique(),
               f"{metric}_mean": values.mean(), f"{metric}_std": values.std(), "vs backbone": "", "marks": ""}
        backbone = runs[(runs["dataset"] == dataset) & (runs["model"] == model) & (runs["method"] == backbone_method)]
        if cell["method"].iloc[0] != backbone_method and backbone["config"].nunique() == 1:
            result = compare_with_backbone(cell, backbone, [metric], per_user_test)[0][metric]
            row.update({"vs backbone": f"{result['rel_pct']:+.1f}%", "marks": significance_marks(result, alpha),
                        "p_seeds": result["p_seeds"], "p_users": result["p_users"]})
        rows.append(row)
    return pd.DataFrame(rows)


def breakdown_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per dataset x model x method (label) x user group (``BREAKDOWN_GROUPS``): test ``metric``
    mean and std over seeds."""
    runs = runs.assign(label=_labels(runs))
    rows = []
    for (dataset, model, label), cell in runs.groupby(["dataset", "model", "label"], sort=True):
        for group in BREAKDOWN_GROUPS:
            values = cell.get(f"{group}_{metric}", pd.Series(dtype=float)).dropna()
            if len(values):
                rows.append({"dataset": dataset, "model": model, "method": label, "users": group,
                             f"{metric}_mean": values.mean(), f"{metric}_std": values.std()})
    return pd.DataFrame(rows)
