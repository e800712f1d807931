"""The proposed method at a glance: against its backbone and the best baseline, per (dataset, model).

The best baseline of a cell is the one with the highest mean *validation* metric (how a practitioner
would pick it); the strongest one on test is shown too, as the stricter comparison. Roles (backbone,
baselines, proposed method, variants) are the runs' own (:mod:`dmesr.experiments.roles`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dmesr.analysis.comparisons import SEED_MARK, SELECTION_METRIC, USER_MARK, seeds_text, users_mean
from dmesr.evaluation import paired_test
from dmesr.experiments.roles import runs_roles
from dmesr.experiments.run_store import PER_USER_PREFIX
from dmesr.markdown import markdown_table


def _relative(value: float, reference: float) -> float:
    return 100.0 * (value - reference) / reference


def significance(runs: pd.DataFrame, method: str, reference: str, metric: str, alpha: float,
                 per_user_test: str = "ttest") -> str:
    """``SEED_MARK`` / ``USER_MARK`` where ``method`` and ``reference`` differ on test ``metric`` with p < ``alpha``
    (a paired t-test over seeds, ``per_user_test`` over test users), as far as the runs allow: two shared seeds for the first,
    stored per-user vectors for the second."""
    column, users = f"test_{metric}", f"{PER_USER_PREFIX}{metric}"
    a, b = (runs[runs["method"] == m].set_index("seed") for m in (method, reference))
    seeds = sorted(set(a.index) & set(b.index))
    marks = ""
    if len(seeds) >= 2 and paired_test(a.loc[seeds, column].to_numpy(), b.loc[seeds, column].to_numpy())["p_value"] < alpha:
        marks += SEED_MARK
    if seeds and users in runs and all(isinstance(v, np.ndarray) for v in [*a.loc[seeds, users], *b.loc[seeds, users]]):
        mean_a, mean_b = (users_mean(frame.loc[seeds], metric) for frame in (a, b))
        if len(mean_a) == len(mean_b) and paired_test(mean_a, mean_b, per_user_test)["p_value"] < alpha:
            marks += USER_MARK
    return marks


def _mean(runs: pd.DataFrame, method: str, metric: str, split: str = "test") -> float:
    return runs.loc[runs["method"] == method, f"{split}_{metric}"].mean()


def _best_on(runs: pd.DataFrame, methods, metric: str, split: str) -> str | None:
    """The method of ``methods`` with the highest mean ``split`` ``metric`` in ``runs``; ``None`` where none of
    them ran or the runs have no such column."""
    present = [m for m in methods if m in set(runs["method"])]
    if not present or f"{split}_{metric}" not in runs:
        return None
    return max(present, key=lambda m: _mean(runs, m, metric, split))


def _versus(runs: pd.DataFrame, proposed: str, method: str, metric: str, alpha: float,
            per_user_test: str) -> tuple[str, str]:
    """A table cell: ``method``'s test mean and ``proposed`` relative to it with the marks of the paired tests;
    and those marks."""
    marks = significance(runs, proposed, method, metric, alpha, per_user_test)
    reference = _mean(runs, method, metric)
    return f"`{method}` {reference:.4f} ({_relative(_mean(runs, proposed, metric), reference):+.1f}%{marks})", marks


def proposed_summary(store: pd.DataFrame, metric: str = SELECTION_METRIC, alpha: float = 0.05,
                     per_user_test: str = "ttest") -> list[str]:
    """The proposed method against its backbone and the best competing baseline, one row per
    (dataset, model), sorted by the gain over the backbone (largest first).

    The best baseline of a cell is the one with the highest mean *validation* ``metric`` (how a
    practitioner would pick it); the strongest one on test is shown too, as the stricter comparison.
    Where the grid ran several of the proposed method's variants, the one best on validation is shown as well.
    Roles (backbone, baselines, proposed method, variants) are the runs' (:mod:`dmesr.experiments.roles`).
    """
    roles = runs_roles(store)
    if not roles.proposed:
        return []
    rows, gains, wins_backbone, significant_wins = [], [], 0, 0
    versus_selected, versus_strongest = [], []  # dmesr relative to each cell's baseline (wins and averages)
    tuned_wins_backbone, tuned_wins_selected, with_tuned, partial_cells = 0, 0, 0, 0
    for (dataset, model), runs in store.groupby(["dataset", "model"], sort=True):
        def mean(method, split):
            return _mean(runs, method, metric, split)

        if not {roles.proposed, roles.backbone} <= set(runs["method"]):
            continue
        backbone, proposed = mean(roles.backbone, "test"), mean(roles.proposed, "test")
        selected = _best_on(runs, roles.baselines, metric, "valid")
        strongest = _best_on(runs, roles.baselines, metric, "test")
        variants = [m for m in roles.tuning if m in set(runs["method"])]
        tuned = _best_on(runs, roles.tuning, metric, "valid") if len(variants) > 1 else None

        def versus(method):
            return "n/a" if method is None else _versus(runs, roles.proposed, method, metric, alpha, per_user_test)[0]

        gain = _relative(proposed, backbone)
        gain_marks = significance(runs, roles.proposed, roles.backbone, metric, alpha, per_user_test)
        gains.append(gain)
        wins_backbone += proposed > backbone
        significant_wins += proposed > backbone and bool(gain_marks)
        if selected is not None:
            versus_selected.append(_relative(proposed, mean(selected, "test")))
            versus_strongest.append(_relative(proposed, mean(strongest, "test")))
        if tuned is not None:
            with_tuned += 1
            tuned_wins_backbone += mean(tuned, "test") > backbone
            tuned_wins_selected += selected is not None and mean(tuned, "test") > mean(selected, "test")
        seeds = runs.groupby("method").size()

        def with_seeds(method, value):  # a cell still running shows how many of its seeds the mean has
            count = seeds[method]
            return f"{value:.4f}" + ("" if count == seeds.max() else f" ({seeds_text(count, seeds.max())} seeds)")

        tuned_text = ("n/a" if tuned is None else f"`{tuned}` {with_seeds(tuned, mean(tuned, 'test'))} "
                                                  f"({_relative(mean(tuned, 'test'), backbone):+.1f}%)")

        partial_cells += int(seeds[[roles.backbone, roles.proposed]].min() < seeds.max())
        rows.append((gain, [dataset, model, with_seeds(roles.backbone, backbone), with_seeds(roles.proposed, proposed),
                            f"{gain:+.1f}%{gain_marks}", versus(selected), versus(strongest), tuned_text]))
    if not rows:
        return []
    rows.sort(key=lambda row: -row[0])
    competing = ", ".join(f"`{m}`" for m in roles.baselines)
    wins_selected = sum(relative > 0 for relative in versus_selected)
    versus_best = (f"the best baseline (chosen on validation {metric} among {competing}) in {wins_selected} of "
                   f"{len(versus_selected)} cells with baselines (on average over those cells {np.mean(versus_selected):+.1f}% "
                   f"against it, {np.mean(versus_strongest):+.1f}% against the strongest baseline on test)"
                   if versus_selected else f"no baseline ({competing}) ran" if competing else "the grid declares no baselines")
    variants = ", ".join(f"`{variant}`" for variant in roles.variants)
    tuned_sentence = (f" Tuned on validation (the best of `{roles.proposed}` and the variants the grid ran: {variants}), "
                      f"`{roles.proposed}` beats its backbone in {tuned_wins_backbone} of {with_tuned} cells "
                      f"with variants and the validation-chosen baseline in {tuned_wins_selected}; the baselines had "
                      f"no such tuning." if with_tuned else "")
    return [f"## `{roles.proposed}` at a glance (test {metric}, mean over seeds)",
            (f"`{roles.proposed}` beats its backbone in {wins_backbone} of {len(rows)} (dataset, model) cells"
             + (f" ({partial_cells} of them with fewer seeds so far, marked)" if partial_cells else "")
             + f", with a significant difference ({SEED_MARK} over seeds or {USER_MARK} over test users, paired "
               f"test p < {alpha}) in {significant_wins}; "
             f"{versus_best}; mean gain over the backbone {np.mean(gains):+.1f}%.{tuned_sentence} Rows are sorted "
             f"by the gain of `{roles.proposed}`, largest first; percentages in the baseline columns are "
             f"`{roles.proposed}` relative to that baseline with its significance marks, in the last column the variant "
             f"relative to the backbone."),
            markdown_table(["dataset", "model", "backbone", roles.proposed, "gain over backbone",
                            f"best baseline on validation: test ({roles.proposed} vs it)",
                            f"strongest baseline on test ({roles.proposed} vs it)",
                            f"{roles.proposed} variant best on validation: test (vs backbone)"],
                           [row for _, row in rows])]


def tuned_section(store: pd.DataFrame, tuned: pd.DataFrame, tuned_name: str, metric: str = SELECTION_METRIC,
                  alpha: float = 0.05, per_user_test: str = "ttest") -> list[str]:
    """Whether the proposed method's gain survives tuning. ``tuned`` holds, per (dataset, model), every method
    tuned on the same trial budget (``dmesr tune``) and run with every seed at its best setting; each cell is
    set beside the same cell of ``store`` (the methods with their defaults): the backbone's and the proposed
    method's test ``metric`` both ways, the gain over the backbone, and the proposed method against the tuned
    baseline best on validation, with the paired tests of the tuned runs."""
    roles = runs_roles(tuned)
    if not roles.proposed or tuned.empty:
        return []
    rows, wins, significant_wins, wins_baseline, significant_baseline_wins = [], 0, 0, 0, 0
    for (dataset, model), runs in tuned.groupby(["dataset", "model"], sort=True):
        if not {roles.proposed, roles.backbone} <= set(runs["method"]):  # a cell whose seed runs have not all begun
            continue
        defaults = store[(store["dataset"] == dataset) & (store["model"] == model)]
        backbone, proposed = _mean(runs, roles.backbone, metric), _mean(runs, roles.proposed, metric)
        gain, marks = _relative(proposed, backbone), significance(runs, roles.proposed, roles.backbone, metric, alpha,
                                                                    per_user_test)
        wins += proposed > backbone
        significant_wins += proposed > backbone and bool(marks)
        default_backbone, default_proposed = (_mean(defaults, m, metric) for m in (roles.backbone, roles.proposed))
        default_gain = ("n/a" if np.isnan(default_backbone) or np.isnan(default_proposed)
                        else f"{_relative(default_proposed, default_backbone):+.1f}%")
        selected = _best_on(runs, roles.baselines, metric, "valid")
        versus = "n/a"
        if selected is not None:
            versus, versus_marks = _versus(runs, roles.proposed, selected, metric, alpha, per_user_test)
            ahead = proposed > _mean(runs, selected, metric)
            wins_baseline += ahead
            significant_baseline_wins += ahead and bool(versus_marks)
        seeds = runs.groupby("method").size()
        rows.append([dataset, model, f"{default_backbone:.4f} → {backbone:.4f}",
                     f"{default_proposed:.4f} → {proposed:.4f}", f"{default_gain} → {gain:+.1f}%{marks}", versus,
                     seeds_text(seeds.min(), seeds.max())])
    cells = len(rows)
    if not cells:
        return []
    return [f"## Does the gain survive tuning? (collection `{tuned_name}`)",
            f"Each method of these cells was searched on validation {metric} with the same number of trials "
            f"(`dmesr tune`), then its best setting was run with every seed and tested once. Arrows go from this "
            f"report's runs (the defaults) to the tuned ones; marks are the tuned runs' paired tests.",
            f"In {wins} of the {cells} (dataset, model) cells tuned, `{roles.proposed}` beats its tuned backbone "
            f"({significant_wins} with a significant difference, {SEED_MARK} over seeds or {USER_MARK} over test "
            f"users, p < {alpha}), and in {wins_baseline} the tuned baseline best on validation "
            f"({significant_baseline_wins} significantly).",
            markdown_table(["dataset", "model", f"backbone test {metric}", f"`{roles.proposed}` test {metric}",
                            "gain over backbone", f"best tuned baseline on validation: test (`{roles.proposed}` vs it)",
                            "seeds"], rows)]
