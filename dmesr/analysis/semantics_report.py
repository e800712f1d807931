"""Where DMESR's gain comes from: the controls beside DMESR, description quality, gain against quality.

Reads the run store (the backbone and ``dmesr`` runs of one collection, the controls and other
describers' ``dmesr`` runs of another, paired by dataset, model and seed: the controls grid shares
main.yaml's settings) and the JSON files of ``dmesr experiments quality``, and writes
``reports/semantics.md`` with its figure. Every number in it comes from those inputs.

A method's describer and control are read from its runs' configs (``items.describer``,
``items.control``), so a new describer needs only its runs and its quality file, no code here.
A description file is matched to a describer by its name, ``<dataset>.<describer>.<view>.jsonl``.

"As much as DMESR": a control whose per-user test NDCG@10 is not significantly below DMESR's in a
cell (paired t-test over users, seeds averaged, p >= 0.05, or a mean at least DMESR's) matches it
there; the first lines of the report say in how many cells each control matches DMESR and how its
mean gain over the backbone compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dmesr.analysis.comparisons import compare_with_backbone, p_text
from dmesr.experiments.run_store import load_runs
from dmesr.markdown import markdown_table, mean_std

METRIC = "NDCG@10"
ALPHA = 0.05
PROPOSED, BACKBONE = "dmesr", "backbone"
CONTROL_WORDS = {"shuffled": "shuffled descriptions", "random": "random features",
                 "text-only": "the original text alone through the fusion"}


def _items_settings(config_yaml: str) -> dict:
    return (yaml.safe_load(config_yaml) or {}).get("items", {})


def semantic_runs(reference: str, controls: str, store: str | Path) -> pd.DataFrame:
    """Backbone and ``dmesr`` runs of ``reference`` and every ``dmesr``-kind run of ``controls``, on the
    datasets the controls cover, with ``describer`` and ``control`` columns."""
    control_runs = load_runs(controls, store)
    runs = load_runs(reference, store)
    runs = runs[runs["method"].isin([BACKBONE, PROPOSED]) & runs["dataset"].isin(control_runs["dataset"])
                & runs["model"].isin(control_runs["model"])]  # the backbones the controls ran with (no pop)
    runs = pd.concat([runs, control_runs], ignore_index=True)
    items = [_items_settings(text) for text in runs["config_yaml"]]
    runs["describer"] = [str(settings.get("describer", "")) if kind != "id" else ""
                         for settings, kind in zip(items, runs["items"])]
    runs["control"] = [str(settings.get("control") or "none") for settings in items]
    return runs


def comparison_rows(runs: pd.DataFrame) -> list[dict]:
    """One row per dataset x model x method: test NDCG@10, change over the backbone, over DMESR, p-values."""
    rows = []
    for (dataset, model), cell in runs.groupby(["dataset", "model"], sort=True):
        backbone, proposed = (cell[cell["method"] == name] for name in (BACKBONE, PROPOSED))
        for method in [BACKBONE, PROPOSED] + sorted(set(cell["method"]) - {BACKBONE, PROPOSED}):
            runs_of = cell[cell["method"] == method]
            if runs_of.empty:
                continue
            values = runs_of[f"test_{METRIC}"]
            describer, control = runs_of["describer"].iloc[0], runs_of["control"].iloc[0]
            row = {"dataset": dataset, "model": model, "method": method, "seeds": runs_of["seed"].nunique(),
                   "describer": describer, "control": control, "holds": holds(method, describer, control),
                   "mean": values.mean(), "std": values.std(), "vs_backbone": None, "vs_dmesr": None}
            if method != BACKBONE and not backbone.empty:
                row["vs_backbone"] = compare_with_backbone(runs_of, backbone, [METRIC], "ttest")[0][METRIC]
            if method not in (BACKBONE, PROPOSED) and not proposed.empty:
                row["vs_dmesr"] = compare_with_backbone(runs_of, proposed, [METRIC], "ttest")[0][METRIC]
            rows.append(row)
    return rows


def matches_dmesr(row: dict) -> bool:
    """Not significantly below DMESR in the per-user test (or not below it at all)."""
    result = row["vs_dmesr"]
    return result["rel_pct"] >= 0 or result["p_users"] is None or result["p_users"] >= ALPHA


def verdict(rows: list[dict]) -> list[str]:
    """The report's first lines: how each control's gain compares with DMESR's."""
    proposed = [row for row in rows if row["method"] == PROPOSED and row["vs_backbone"]]
    if not proposed:
        return ["No DMESR runs to compare the controls with yet."]
    cells = {(row["dataset"], row["model"]) for row in proposed}
    lines = [f"DMESR gains {np.mean([r['vs_backbone']['rel_pct'] for r in proposed]):+.1f}% test {METRIC} over its "
             f"backbone on average over {len(cells)} cells (dataset x backbone)."]
    as_much = {}  # control -> whether it matches DMESR in most of its cells
    for control, words in CONTROL_WORDS.items():
        same = [row for row in rows if row["control"] == control and row["vs_dmesr"] and row["vs_backbone"]
                and (row["dataset"], row["model"]) in cells]
        if not same:
            lines.append(f"With {words}: not run yet.")
            continue
        matched = sum(matches_dmesr(row) for row in same)
        gain = np.mean([row["vs_backbone"]["rel_pct"] for row in same])
        same_cells = {(row["dataset"], row["model"]) for row in same}
        reference = np.mean([r["vs_backbone"]["rel_pct"] for r in proposed if (r["dataset"], r["model"]) in same_cells])
        lines.append(f"With {words}: {gain:+.1f}% over the backbone (DMESR {reference:+.1f}% in the same cells); "
                     f"as good as DMESR (not significantly below it, per-user paired t-test, p >= {ALPHA}) in "
                     f"{matched} of {len(same)} cells.")
        as_much[control] = matched * 2 > len(same)
    lines.append(f"**{reading(as_much)}**")
    return lines


def reading(as_much: dict[str, bool]) -> str:
    """What the controls that match DMESR in most cells (``as_much``) say about where its gain comes from."""
    if as_much.get("random"):
        return ("DMESR with random features of the same norms gains about as much as with real inputs in most "
                "cells: its gain cannot be credited to the semantics at all (the extra item-side parameters and their "
                "training may explain it).")
    if as_much.get("shuffled"):
        text = ("DMESR with shuffled descriptions (every item another item's) gains about as much as with the real "
                "ones in most cells: its gain cannot be credited to what the descriptions say.")
        if as_much.get("text-only") and "random" in as_much:
            text += (" The original text alone through the same fusion gains about as much too, and random features "
                     "lose most of the gain: it comes from the item's own text (title, year, genres), not from the "
                     "extra parameters.")
        return text
    if "shuffled" in as_much or "random" in as_much:
        return ("Broken inputs (shuffled descriptions, random features) fall significantly below DMESR in most "
                "cells: what the descriptions say contributes to its gain.")
    return "No control has run yet."


def holds(method: str, describer: str, control: str) -> str:
    """What a method's MLLM view held, in words (the describer's descriptions, or its control)."""
    if method == BACKBONE:
        return "nothing (ID embeddings only)"
    return CONTROL_WORDS.get(control, f"descriptions by {describer}")


def controls_frame(rows: list[dict]) -> pd.DataFrame:
    """``comparison_rows`` as a table to display: per cell and method, test NDCG@10 and its changes."""
    def change(result):
        return "" if result is None else f"{result['rel_pct']:+.1f}%"

    return pd.DataFrame([{"dataset": row["dataset"], "model": row["model"], "method": row["method"],
                          "MLLM view holds": row["holds"], "seeds": row["seeds"],
                          f"test {METRIC}": mean_std(row["mean"], row["std"]),
                          "vs backbone": change(row["vs_backbone"]), "vs dmesr": change(row["vs_dmesr"]),
                          "p (users) vs dmesr": p_text(row["vs_dmesr"]["p_users"]) if row["vs_dmesr"] else ""}
                         for row in rows])


def quality_frame(quality: list[dict]) -> pd.DataFrame:
    """``read_quality`` rows as a table to display: genre probe (and its no-information prior), wrong years."""
    return pd.DataFrame([{"dataset": row["dataset"], "source": row["source"], "items described": row["described"],
                          "genre probe micro-F1": round(row["probe"]["micro_f1"], 3),
                          "prior micro-F1": round(row["probe"]["prior"]["micro_f1"], 3),
                          "year off by > 1": round(row["contradictions"]["far_year_rate"], 3),
                          "foreign genre named": round(row["contradictions"]["foreign_genre_rate"], 3)}
                         for row in quality])


def read_quality(paths: list[str | Path]) -> list[dict]:
    """One row per (dataset, source) of ``dmesr experiments quality`` files (a source scored twice: the last)."""
    rows = {}
    for path in paths:
        result = json.loads(Path(path).read_text())
        for source in result["sources"]:
            name = Path(source["source"]).name
            rows[(result["dataset"], name)] = {**source, "dataset": result["dataset"], "source": name,
                                               "command": result["command"]}
    return sorted(rows.values(), key=lambda row: (row["dataset"], row["source"] != "original text", row["source"]))


def quality_of(quality: list[dict], dataset: str, describer: str, control: str) -> dict | None:
    """The quality row of what a method's MLLM view held: the original text for ``text-only``, else the
    describer's description file (``<dataset>.<describer>.*``); none for shuffled or random inputs."""
    if control in ("shuffled", "random"):
        return None
    for row in quality:
        if row["dataset"] != dataset:
            continue
        if control == "text-only" and row["source"] == "original text":
            return row
        if control == "none" and row["source"].startswith(f"{dataset}.{describer}."):
            return row
    return None


def gain_points(rows: list[dict], quality: list[dict]) -> pd.DataFrame:
    """Per dataset x model x method with a gain: its probe micro-F1 (NaN for shuffled/random) and gain."""
    points = []
    for row in rows:
        if row["vs_backbone"] is None:
            continue
        scored = quality_of(quality, row["dataset"], row["describer"], row["control"])
        points.append({"dataset": row["dataset"], "model": row["model"], "method": row["method"],
                       "control": row["control"], "gain": row["vs_backbone"]["rel_pct"],
                       "probe": scored["probe"]["micro_f1"] if scored else np.nan,
                       "prior": scored["probe"]["prior"]["micro_f1"] if scored else np.nan})
    return pd.DataFrame(points)


def _control_table(rows: list[dict], dataset: str) -> str:
    def change(result):
        return ("", "", "") if result is None else (f"{result['rel_pct']:+.1f}%", p_text(result["p_seeds"]),
                                                    p_text(result["p_users"]))

    table = []
    for row in rows:
        if row["dataset"] == dataset:
            what = CONTROL_WORDS.get(row["control"], f"descriptions by `{row['describer']}`" if row["describer"] else "")
            table.append([row["model"], f"`{row['method']}`", what, row["seeds"], mean_std(row["mean"], row["std"]),
                          *change(row["vs_backbone"]), *change(row["vs_dmesr"])])
    return markdown_table(["model", "method", "MLLM view holds", "seeds", f"test {METRIC}", "vs backbone",
                           "p (seeds)", "p (users)", "vs dmesr", "p (seeds)", "p (users)"], table)


def _quality_table(quality: list[dict]) -> str:
    rows = [[row["dataset"], row["source"] if row["source"] == "original text" else f"`{row['source']}`",
             f"{row['described']} of {row['items']}", *(f"{row['probe'][k]:.3f}" for k in ("micro_f1", "macro_f1")),
             *(f"{row['probe']['prior'][k]:.3f}" for k in ("micro_f1", "macro_f1")),
             *(f"{row['contradictions'][k]:.3f}" for k in ("any_year_rate", "far_year_rate",
                                                          "far_year_share_of_stating", "foreign_genre_rate"))]
            for row in quality]
    return markdown_table(["dataset", "source", "items described", "probe micro-F1", "probe macro-F1",
                           "prior micro-F1", "prior macro-F1", "states a year", "year off by > 1",
                           "off, of those stating one", "foreign genre named"], rows)


def _quality_sentences(points: pd.DataFrame) -> list[str]:
    """Per dataset: the describers' (and the text's) probe scores beside their mean gains, in probe order."""
    lines = []
    for dataset, group in points.dropna(subset=["probe"]).groupby("dataset", sort=True):
        means = group.groupby("method").agg(probe=("probe", "first"), gain=("gain", "mean")).sort_values("probe")
        pairs = "; ".join(f"`{method}` probe {row.probe:.3f}, gain {row.gain:+.1f}%" for method, row in means.iterrows())
        trend = ""
        if len(means) > 1:
            order = "rises with" if means["gain"].is_monotonic_increasing else "does not rise steadily with"
            trend = f"; the gain {order} the probe score over these {len(means)} points"
        lines.append(f"- {dataset}: {pairs} (mean gain over the backbones{trend}).")
    return lines


def semantics_report(reference: str, controls: str, quality_paths: list[str], out: str | Path,
                     command: str, store: str | Path = "reports/store") -> Path:
    """Write the report (and its figure beside it, under ``figures/``); returns the report's path."""
    from dmesr.viz import gain_against_quality, save_figure

    runs = semantic_runs(reference, controls, store)
    rows = comparison_rows(runs)
    quality = read_quality(quality_paths)
    points = gain_points(rows, quality)
    out = Path(out)
    figure_path = save_figure(gain_against_quality(points), out.parent / "figures", "semantics-gain-vs-quality")
    lines = ["# Where DMESR's gain comes from", "", *verdict(rows), "",
             f"Regenerate (reads the run store's collections `{reference}` and `{controls}` and the quality files):", "",
             f"    {command}", "",
             "The controls' runs: `dmesr experiments run configs/experiments/controls.yaml --workers 2` (the commands "
             "that make the features it needs are at the top of that file); the quality files: the commands below.", "",
             "## The controls", "",
             "Each control is `dmesr` with one change to its frozen inputs (`items.control`, dmesr/models/controls.py); "
             "model, training and every other setting are main.yaml's, so each pairs with the `dmesr` and backbone runs "
             f"of `{reference}` seed by seed. Shuffled descriptions leave each item its own original text (the fusion's keys "
             "and values); random features replace that too; `text-only` reads no description at all. "
             f"Test {METRIC}, full ranking, mean ± std over seeds; changes are relative to "
             "the mean; p-values: paired t-tests over seeds and over users (seeds averaged per user).", ""]
    for dataset in sorted(runs["dataset"].unique()):
        lines += [f"### {dataset}", "", _control_table(rows, dataset), ""]
    lines += ["## Description quality per source", "",
              "Genre probe: all-MiniLM-L6-v2 vectors of each text, 5-fold cross-validated one-vs-rest logistic "
              "regression predicting the item's genres (those with at least 5 items); out-of-fold F1. Prior: every item "
              "gets the most frequent genres of its training folds. The original text states the genres, so its probe "
              "is an upper reference. Contradictions: share of texts that state any year; that state a year more than 1 "
              "off the item's year; of those that state a year, the share whose year is off; that name a genre the item "
              "lacks (method: dmesr/analysis/description_quality.py). Commands:", "",
              *sorted({f"    {row['command']}" for row in quality}), "", _quality_table(quality), "",
              "## Gain against description quality", "",
              f"![DMESR's gain over the backbone against the genre-probe score of its MLLM view]"
              f"({figure_path.relative_to(out.parent).as_posix()})", "",
              f"One point per method and backbone: the relative test {METRIC} gain over the backbone against the genre "
              "probe's micro-F1 of what the MLLM view held (its descriptions, or for `text-only` the original text); "
              "large markers: the mean over backbones. Shuffled and random inputs carry nothing about their item: "
              "their mean gains are the horizontal lines.", "", *_quality_sentences(points), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
