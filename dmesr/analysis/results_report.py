"""The results report: markdown tables computed from the run store, nothing typed in by hand.

For every dataset: mean ± std over seeds of HR@5/10/20, NDCG@5/10/20 and MRR@10 per backbone x
method; the relative improvement of each method over the same backbone with ID embeddings (the
method named ``backbone``) with two paired significance tests (:mod:`dmesr.analysis.comparisons`);
head/tail and short/long breakdowns; the sampled protocol when runs were evaluated with it. Then the
dataset statistics and the hardware and wall time of every run. The command that wrote the report
heads it.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from dmesr.analysis.comparisons import (
    BREAKDOWN_METRICS,
    REPORT_METRICS,
    SEED_MARK,
    SELECTION_METRIC,
    TEST_NAMES,
    USER_MARK,
    compare_with_backbone,
    model_cells,
    p_text,
    seeds_text,
    significance_marks,
)
from dmesr.analysis.proposed_summary import proposed_summary, tuned_section
from dmesr.config import TRIVIAL_BASELINES
from dmesr.experiments.roles import runs_roles
from dmesr.experiments.run_store import (
    BREAKDOWN_GROUPS,
    DEFAULT_STORE,
    PROTOCOL_FIELDS,
    REPEAT_GROUPS,
    runs_from,
)
from dmesr.markdown import markdown_table, mean_std, short_value


def pivot_table(runs: pd.DataFrame, metric: str = SELECTION_METRIC) -> str:
    """Methods x backbones: mean test ``metric`` over seeds and its change over the backbone."""
    backbone_method = runs_roles(runs).backbone
    models = sorted(runs["model"].unique())
    means = runs.groupby(["method", "model"])[f"test_{metric}"].mean()
    rows = []
    for method in runs_roles(runs).order(runs["method"]):
        row = [method]
        for model in models:
            if (method, model) not in means:
                row.append("")
                continue
            value, base = means[(method, model)], means.get((backbone_method, model))
            change = "" if method == backbone_method or base is None else f" ({100 * (value - base) / base:+.1f}%)"
            row.append(f"{value:.4f}{change}")
        rows.append(row)
    return markdown_table(["method", *models], rows)


def protocol_line(runs: pd.DataFrame) -> str:
    """The settings a dataset's runs share (``PROTOCOL_FIELDS``), read from the runs. A setting that
    differs between backbones only is listed per backbone (each backbone's rows, the ones compared with
    each other, still share it); one that is the same within each method but differs between methods is
    listed per method (a method's own setting, as a tuned grid chooses it); one that differs within a
    method's runs of one backbone is flagged with its run counts."""
    shared, by_model, by_method, mixed = [], [], [], []
    for section, field in PROTOCOL_FIELDS:
        column = f"{section}_{field}"
        if column not in runs:
            continue
        if runs[column].nunique() == 1:
            shared.append(f"{field} {runs[column].iloc[0]}")
        elif runs.groupby("model")[column].nunique().max() == 1:
            models = runs.groupby(column)["model"].unique()
            by_model.append(f"{field} " + ", ".join(f"{value} ({', '.join(sorted(names))})" for value, names in models.items()))
        elif runs.groupby(["model", "method"])[column].nunique().max() == 1:
            methods = runs.groupby(column)["method"].unique()
            by_method.append(f"{field} " + ", ".join(f"{short_value(value)} ({', '.join(sorted(names))})"
                                                     for value, names in methods.items()))
        else:
            counts = runs[column].value_counts().sort_index()
            mixed.append(f"{field} " + ", ".join(f"{value} ({count} runs)" for value, count in counts.items()))
    text = "Protocol (from the runs' configs): " + ", ".join(shared) + "."
    if by_model:
        text += f" Per backbone (the rows of one backbone share it): {'; '.join(by_model)}."
    if by_method:
        text += f" Per method (each method's own setting, every seed alike): {'; '.join(by_method)}."
    if mixed:
        text += f" **Mixed settings within a method's runs, its rows are not comparable:** {'; '.join(mixed)}."
    return text


def dataset_section(runs: pd.DataFrame, metrics, alpha: float, per_user_test: str, breakdown_metrics,
                    details: bool = True) -> str:
    """Main table, improvement + p-values and (``details``) breakdowns and sampled protocol for one
    dataset's runs."""
    backbone_method = runs_roles(runs).backbone
    most_seeds = runs.groupby(["model", "method"])["seed"].nunique().max()
    main_rows, gain_rows, p_rows = [], [], []
    valid_column = f"valid_{SELECTION_METRIC}"
    for model, method, cell_runs in model_cells(runs):
        backbone_runs = runs[(runs["model"] == model) & (runs["method"] == backbone_method)]
        comparison = None
        if method != backbone_method and len(backbone_runs):
            comparison, paired = compare_with_backbone(cell_runs, backbone_runs, metrics, per_user_test)
            gain_rows.append([model, method, len(paired)]
                             + [f"{comparison[m]['rel_pct']:+.1f}%{significance_marks(comparison[m], alpha)}" for m in metrics])
            p_rows.append([model, method]
                          + [f"{p_text(comparison[m]['p_seeds'])} / {p_text(comparison[m]['p_users'])}"
                             for m in metrics])
        main_rows.append([model, method, seeds_text(cell_runs["seed"].nunique(), most_seeds)]
                         + [_cell_text(cell_runs, f"test_{m}") + (significance_marks(comparison[m], alpha) if comparison else "")
                            for m in metrics]
                         + ([_cell_text(cell_runs, valid_column)] if valid_column in runs else []))
    parts = [protocol_line(runs),
             f"### Test {SELECTION_METRIC} at a glance (mean over seeds; change over `{backbone_method}`)",
             pivot_table(runs), "### Test metrics (mean ± std over seeds)",
             markdown_table(["model", "method", "seeds", *metrics]
                            + [f"valid {SELECTION_METRIC} (selection)"] * (valid_column in runs), main_rows)]
    if gain_rows:
        parts += [f"### Relative improvement over `{backbone_method}` (same model)",
                  markdown_table(["model", "method", "paired seeds", *metrics], gain_rows),
                  f"p-values, over seeds (paired t-test) / over users (paired {TEST_NAMES[per_user_test]}):",
                  markdown_table(["model", "method", *metrics], p_rows)]
    elif set(runs["method"]) == {backbone_method}:
        parts.append(f"Only `{backbone_method}` runs for this dataset: nothing to compare.")
    else:
        parts.append(f"No `{backbone_method}` runs for this dataset: no improvements or significance tests.")
    parts += repeat_section(runs, alpha, per_user_test)
    if details:
        parts += _breakdown_section(runs, breakdown_metrics) + _sampled_section(runs, metrics)
    return "\n\n".join(parts)


def repeat_section(runs: pd.DataFrame, alpha: float, per_user_test: str, metric: str = SELECTION_METRIC
                   ) -> list[str]:
    """Test ``metric`` over all users and, on data with repeat consumption, split into users whose target
    is a repeat / a new item; each trained cell against the trivial baselines (``pop``, ``repeat-pop``) with
    paired tests, and one plain sentence naming every trained model below a baseline. Nothing where the
    runs have neither repeats nor a baseline (most MovieLens collections)."""
    repeats = "repeat_num_users" in runs and bool((runs["repeat_num_users"].fillna(0) > 0).any())
    baselines = {name: runs[runs["model"] == name] for name in TRIVIAL_BASELINES if (runs["model"] == name).any()}
    trained = ~runs["model"].isin(TRIVIAL_BASELINES)
    if not repeats and not (baselines and trained.any()):
        return []
    groups = REPEAT_GROUPS if repeats else ()
    header = ["model", "method", "seeds", f"test {metric}", *(f"{group} {metric}" for group in groups)]
    header += [f"vs `{name}` (p seeds / users)" for name in baselines]
    rows, below, above = [], [], []
    for model, method, cell_runs in model_cells(runs):
        row = [model, method, cell_runs["seed"].nunique(),
               *(_cell_text(cell_runs, f"{group}_{metric}") for group in ("test", *groups))]
        for name, baseline_runs in baselines.items():
            if model in TRIVIAL_BASELINES:
                row.append("")
                continue
            result = compare_with_backbone(cell_runs, baseline_runs, [metric], per_user_test)[0][metric]
            marks = significance_marks(result, alpha)
            row.append(f"{result['rel_pct']:+.1f}%{marks} ({p_text(result['p_seeds'])} / {p_text(result['p_users'])})")
            if result["rel_pct"] < 0:
                below.append(f"`{model}` `{method}` is below `{name}` ({result['rel_pct']:+.1f}%, "
                             f"{'significant' if marks else 'not significant'})")
            elif marks and name == "repeat-pop":
                above.append(f"`{model}` `{method}` ({result['rel_pct']:+.1f}%{marks})")
        rows.append(row)
    first = runs.iloc[0]
    note = (f"Test users whose target is an item they had before (`repeat`): {int(first['repeat_num_users'])}, "
            f"the others (`new`): {int(first['new_num_users'])}. " if repeats else "No user consumes an item twice. ")
    note += (f"Changes are relative to each baseline's mean; p-values: paired t-test over seeds / paired "
             f"{TEST_NAMES[per_user_test]} over users, on all users.")
    if not baselines:
        verdict = "No `pop` or `repeat-pop` runs here: nothing tells whether the heuristics win."
    elif below:
        verdict = "**A trained model is below a trivial baseline:** " + "; ".join(below) + "."
        if above:  # where some are below, say which clear the stronger heuristic
            verdict += " Significantly above `repeat-pop`: " + ", ".join(above) + "."
    else:
        verdict = (f"Every trained model is above {' and '.join(f'`{name}`' for name in baselines)} "
                   f"(significantly where the table marks it).")
    title = "Repeat and new targets" if repeats else "Trained models against the trivial baselines"
    return [f"### {title} (test {metric}, mean ± std over seeds)", note, markdown_table(header, rows), verdict]


def _cell_text(runs: pd.DataFrame, column: str) -> str:
    values = runs[column].dropna()
    return mean_std(values.mean(), values.std()) if len(values) else "n/a"


def _breakdown_section(runs: pd.DataFrame, breakdown_metrics) -> list[str]:
    columns = [f"{group}_{m}" for group in BREAKDOWN_GROUPS for m in breakdown_metrics]
    present = [c for c in columns if c in runs and runs[c].notna().any()]
    if not present:
        return []
    first = runs.iloc[0]
    users = ", ".join(f"{group} {int(first[f'{group}_num_users'])}" for group in BREAKDOWN_GROUPS
                      if f"{group}_num_users" in runs)
    note = "Users per group: " + users
    if "head_num_head_items" in runs:
        note += f"; head items: the {int(first['head_num_head_items'])} most popular training items"
    if "short_median_train_length" in runs:
        note += f"; short/long split at the median training length {first['short_median_train_length']:g}"
    rows = [[model, method] + [_cell_text(cell_runs, c) for c in present] for model, method, cell_runs in model_cells(runs)]
    return ["### Head/tail items and short/long users (test, mean ± std over seeds)", note + ".",
            markdown_table(["model", "method", *[c.replace("_", " ") for c in present]], rows)]


def _sampled_section(runs: pd.DataFrame, metrics) -> list[str]:
    columns = [f"sampled_{m}" for m in metrics if f"sampled_{m}" in runs]
    sampled = runs.dropna(subset=columns) if columns else runs.iloc[:0]
    if sampled.empty:
        return []
    rows = [[model, method, cell_runs["seed"].nunique()] + [_cell_text(cell_runs, c) for c in columns]
            for model, method, cell_runs in model_cells(sampled)]
    return ["### Sampled protocol (target among sampled negatives; only runs evaluated with it)",
            markdown_table(["model", "method", "seeds", *[c.removeprefix("sampled_") for c in columns]], rows)]


def _flatten(stats: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dataset_statistics(runs: pd.DataFrame) -> str:
    """Statistics of each split (the runs' data provenance), one column per dataset."""
    columns = {}
    for dataset, dataset_runs in runs.groupby("dataset", sort=True):
        data = [json.loads(provenance) for provenance in dataset_runs["data_provenance"]]
        fingerprints = {entry["fingerprint"] for entry in data}
        if len(fingerprints) > 1:
            raise ValueError(f"runs of {dataset} were trained on {len(fingerprints)} different splits; "
                             "report them from separate run roots")
        columns[dataset] = {**_flatten(data[0]["stats"]), "fingerprint": data[0]["fingerprint"][:12]}
    names = list(columns)
    keys = list(dict.fromkeys(key for stats in columns.values() for key in stats))
    rows = [[key] + [_stat_text(columns[name].get(key, "")) for name in names] for key in keys]
    return markdown_table(["statistic", *names], rows)


def _stat_text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def still_rising(runs: pd.DataFrame) -> pd.Series:
    """Runs stopped by their epoch cap with their best validation epoch the last: not converged."""
    return (runs["stopped"] == "max_epochs") & (runs["best_epoch"] == runs["epochs"])


def not_converged_sentence(store: pd.DataFrame) -> list[str]:
    """A warning when some runs were cut off by the epoch cap while validation still rose."""
    rising = still_rising(store)
    if not rising.any():
        return []
    return [f"**Not converged:** {int(rising.sum())} of {len(store)} runs stopped at their epoch cap with validation "
            f"still rising (best epoch = last epoch; 'cap, rising' in the runs table): every comparison that includes "
            "them compares unfinished models."]


def runs_table(runs: pd.DataFrame) -> str:
    rising = still_rising(runs)
    runs = runs.assign(stop=[f"{b}/{e}" + (" (cap, rising)" if r else "")
                             for b, e, r in zip(runs["best_epoch"], runs["epochs"], rising)])
    rows = [[r.dataset, r.model, r.method, r.seed, r.hardware, r.stop,
             f"{r.seconds_train_total:.1f}", f"{r.seconds_train_epoch_median:.2f}", f"{r.seconds_test_evaluation:.2f}"]
            for r in runs.sort_values(["dataset", "model", "method", "seed"]).itertuples()]
    return markdown_table(["dataset", "model", "method", "seed", "hardware", "best/last epoch",
                           "train s", "s/epoch", "test eval s"], rows)


def _check_store(store: pd.DataFrame, metrics, per_user_test: str) -> None:
    if per_user_test not in TEST_NAMES:
        raise ValueError(f"unknown per-user test {per_user_test!r}; known: {', '.join(TEST_NAMES)}")
    missing = [f"test_{m}" for m in metrics if f"test_{m}" not in store]
    if missing:
        raise ValueError(f"the run store has no column(s) {', '.join(missing)}")
    duplicated = store.duplicated(["dataset", "model", "method", "seed"], keep=False)
    if duplicated.any():
        first = store[duplicated].iloc[0]
        raise ValueError(f"{duplicated.sum()} runs share a (dataset, backbone, method, seed), e.g. "
                         f"{first['dataset']}/{first['model']}/{first['method']}/seed{first['seed']}: "
                         "report runs of different configs from separate run roots")


def _legend(store: pd.DataFrame, alpha: float, per_user_test: str) -> str:
    backbone_method = runs_roles(store).backbone
    return (f"Finished runs: {len(store)}. Mean ± std over seeds; a seeds entry 'k of n' marks a cell with fewer "
            f"seeds than the others. {SEED_MARK}: paired t-test over seeds p < {alpha}; {USER_MARK}: paired "
            f"{TEST_NAMES[per_user_test]} over test users p < {alpha}; both against the `{backbone_method}` "
            "method (ID embeddings) of the same model, without correction for multiple comparisons.")


def _tuned_parts(store: pd.DataFrame, tuned: tuple[str, pd.DataFrame], alpha: float, per_user_test: str) -> list[str]:
    """The section of the tuned collection ``tuned`` (name, runs); asked for, it must have a cell to show."""
    name, runs = tuned
    parts = tuned_section(store, runs, name, alpha=alpha, per_user_test=per_user_test)
    if not parts:
        raise ValueError(f"collection {name!r} has no (dataset, model) cell with runs of both its backbone and its "
                         "proposed method: nothing to set beside the defaults (is it a tuned collection?)")
    return parts


def _write(out_path: str | Path, parts: list[str]) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n\n".join(parts) + "\n")
    return out_path


def method_changes(bench: dict) -> list[str]:
    """The item-encoder overrides (``items.*``) a benchmark ran with: a variant of the method, not DMESR."""
    return [override for override in bench.get("set", []) if override.startswith("items.")]


def overhead_table(paths: list[str | Path]) -> str:
    """The step-time ratios written by ``benchmarks/bench_dmesr_overhead.py --out``, one row per file: DMESR as
    configured first, then the variants with a changed item encoder (their changes in a column of their own)."""
    benches = [(Path(path), json.loads(Path(path).read_text())) for path in sorted(paths, key=str)]
    configured = [(path, bench) for path, bench in benches if not method_changes(bench)]
    variants = [(path, bench) for path, bench in benches if method_changes(bench)]
    sections = [_overhead_rows(configured, changed=False)] if configured else []
    if variants:
        sections += ["Variants of the method (item encoder changed, results change with it; not the default):",
                     _overhead_rows(variants, changed=True)]
    return "\n\n".join(sections)


def _overhead_rows(benches: list[tuple[Path, dict]], changed: bool) -> str:
    """One table of :func:`overhead_table`; ``changed`` adds the column of item-encoder changes."""
    rows = []
    for path, bench in benches:
        # host threads matter on a CPU only; on a GPU the device does the work
        device = f"cpu, {bench['threads']} thread(s)" if bench["device"] == "cpu" else bench["device"]
        compiled = bench.get("compile") or "no"  # torch.compile mode of both losses, if any
        rows.append([bench["dataset"], bench["model"], bench["batch_size"], bench.get("max_len", "n/a"), device,
                     compiled, *([", ".join(method_changes(bench))] if changed else []),
                     f"{bench['backbone_s_per_step'] * 1000:.1f}", f"{bench['dmesr_s_per_step'] * 1000:.1f}",
                     f"**{bench['ratio']:.2f}x**",
                     f"`{bench['command']}`" if "command" in bench else f"`{path.name}`"])
    header = ["dataset", "model", "batch", "max len", "device", "compiled", *(["changed"] if changed else []),
              "backbone ms/step", "DMESR ms/step", "ratio", "command (or file)"]
    return markdown_table(header, rows)


def beside_proposed_table(runs: pd.DataFrame, variants: pd.DataFrame, metric: str = SELECTION_METRIC,
                          per_user_test: str = "ttest") -> str:
    """Each method of ``variants`` beside the proposed method of ``runs`` with the same dataset and model, paired
    by seed: validation and test ``metric`` of both, and the variant's test change with its paired tests."""
    proposed = runs_roles(runs).proposed
    rows = []
    for (dataset, model, method), cell in variants.groupby(["dataset", "model", "method"], sort=True):
        reference = runs[(runs["dataset"] == dataset) & (runs["model"] == model) & (runs["method"] == proposed)]
        if reference.empty:
            raise ValueError(f"no {proposed!r} runs for {dataset}/{model} to set {method!r} beside")
        result, seeds = compare_with_backbone(cell, reference, [metric], per_user_test)
        change = result[metric]
        valid = f"valid_{metric}"
        rows.append([dataset, model, f"`{method}`", len(seeds),
                     *(f"{group[valid].mean():.4f}" if valid in group else "n/a" for group in (cell, reference)),
                     *(mean_std(group[f"test_{metric}"].mean(), group[f"test_{metric}"].std()) for group in (cell, reference)),
                     f"{change['rel_pct']:+.1f}%", p_text(change["p_seeds"]), p_text(change["p_users"])])
    return markdown_table(["dataset", "model", "method", "paired seeds", f"valid {metric}", f"valid {metric} `{proposed}`",
                           f"test {metric}", f"test {metric} `{proposed}`", f"test vs `{proposed}`", "p (seeds)",
                           "p (users)"], rows)


def write_brief_report(store: pd.DataFrame, out_path: str | Path, command: str, overhead: list[str | Path] = (),
                       notes: str | Path | None = None, metrics=("HR@10", "NDCG@10"), alpha: float = 0.05,
                       per_user_test: str = "ttest", beside: dict[str, pd.DataFrame] | None = None,
                       tuned: tuple[str, pd.DataFrame] | None = None) -> Path:
    """The method's report: the summary (and the tuned cells beside it, ``tuned``: as in
    :func:`write_results_report`), HR@10 / NDCG@10 with paired tests per dataset, the training overhead
    benchmarks, the runs of other collections (``beside``: name -> runs) set beside the proposed method, then
    hand-written notes (``notes``, included verbatim)."""
    _check_store(store, metrics, per_user_test)
    parts = [f"# `{runs_roles(store).proposed}` against its backbones, baselines and ablations", f"Command: `{command}`",
             _legend(store, alpha, per_user_test), *proposed_summary(store, alpha=alpha, per_user_test=per_user_test),
             *not_converged_sentence(store)]
    if tuned is not None:
        parts += _tuned_parts(store, tuned, alpha, per_user_test)
    for dataset in sorted(store["dataset"].unique()):
        parts += [f"## {dataset}", dataset_section(store[store["dataset"] == dataset], metrics, alpha,
                                                   per_user_test, (), details=False)]
    if overhead:
        parts += ["## Training-time overhead (one optimiser step, DMESR over its backbone)", overhead_table(overhead)]
    for name, variants in (beside or {}).items():
        parts += [f"## Collection `{name}` beside `{runs_roles(store).proposed}`",
                  f"Paired by seed; the change is relative to the proposed method's mean; p-values: paired t-test over "
                  f"seeds, paired {TEST_NAMES[per_user_test]} over users.",
                  beside_proposed_table(store, variants, per_user_test=per_user_test)]
    if notes:
        parts.append(Path(notes).read_text().strip())
    return _write(out_path, parts)


def training_time_sentence(store: pd.DataFrame) -> str:
    """The summed training time, split by hardware when the runs ran on several machines (a GPU's hour
    and a CPU thread's hour are not the same amount of work)."""
    total = store["seconds_train_total"].sum()
    sentence = f"Training time of all runs together: {total:.0f} s ({total / 3600:.2f} h)"
    if store["hardware"].nunique() < 2:
        return sentence + "."
    per_hardware = store.groupby("hardware")["seconds_train_total"].agg(["sum", "size"])
    return (sentence + "; by the hardware each run finished on: "
            + ", ".join(f"{hardware} {seconds:.0f} s ({count} run{'s' * (count != 1)})"
                        for hardware, seconds, count in zip(per_hardware.index, per_hardware["sum"], per_hardware["size"]))
            + ". A run resumed on other hardware has that hardware's epochs in its epochs.csv (epoch_seconds).")


def write_results_report(store: pd.DataFrame, out_path: str | Path, command: str, metrics=REPORT_METRICS,
                         alpha: float = 0.05, per_user_test: str = "ttest",
                         breakdown_metrics=BREAKDOWN_METRICS, tuned: tuple[str, pd.DataFrame] | None = None) -> Path:
    """Write the markdown report of the runs in ``store`` (a :func:`collect_runs` table); ``tuned``: a collection's
    name and runs, every method tuned on the same budget, set beside the summary (:func:`tuned_section`)."""
    _check_store(store, metrics, per_user_test)
    parts = ["# Results", f"Command: `{command}`", _legend(store, alpha, per_user_test),
             *proposed_summary(store, alpha=alpha, per_user_test=per_user_test), *not_converged_sentence(store)]
    if tuned is not None:
        parts += _tuned_parts(store, tuned, alpha, per_user_test)
    parts += ["## Datasets", dataset_statistics(store)]
    for dataset in sorted(store["dataset"].unique()):
        runs = store[store["dataset"] == dataset]
        parts += [f"## {dataset}", dataset_section(runs, metrics, alpha, per_user_test, breakdown_metrics)]
    parts += ["## Runs: hardware and wall time", training_time_sentence(store), runs_table(store)]
    return _write(out_path, parts)


def report(sources: list[str], out_path: str | Path | None = None, command: str | None = None,
           brief: bool = False, overhead: list[str] = (), notes: str | None = None, bench: list[str] = (),
           store: str | Path = DEFAULT_STORE, beside: list[str] = (), tuned: str | None = None) -> Path:
    """CLI entry: the report of the runs of ``sources``, each a collection of the run ``store`` or a folder
    of run directories (default out: ``<folder>/results.md``). ``brief``: the method's report
    (:func:`write_brief_report`) with ``overhead`` files, the collections ``beside`` and ``notes``; ``bench``: the
    backbones report (:func:`dmesr.analysis.backbones_report.write_backbones_report`), one section per source;
    ``tuned``: a collection of tuned runs whose cells the results and brief reports set beside their own."""
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    if tuned is not None and bench:
        raise ValueError("--tuned belongs to the results and --brief reports, not to --bench")
    if bench:
        from dmesr.analysis.backbones_report import write_backbones_report

        if out_path is None:
            raise ValueError("the backbones report (--bench) needs --out")
        written = write_backbones_report({source: runs_from(source, store) for source in sources}, bench,
                                         out_path, command, notes)
        print(f"wrote {written}")
        return written
    if len(sources) != 1:
        raise ValueError(f"one collection or runs folder per report (the backbones report, --bench, takes several), "
                         f"got {len(sources)}")
    source = sources[0]
    if out_path is None:
        if not Path(source).is_dir():
            raise ValueError(f"{source!r} is a collection of the run store: name the report file with --out")
        out_path = Path(source) / "results.md"
    runs = runs_from(source, store)
    tuned_runs = None if tuned is None else (tuned, runs_from(tuned, store))
    if brief:
        written = write_brief_report(runs, out_path, command, overhead, notes,
                                     beside={name: runs_from(name, store) for name in beside}, tuned=tuned_runs)
    else:
        if overhead or notes or beside:
            raise ValueError("--overhead, --beside and --notes belong to the --brief report")
        written = write_results_report(runs, out_path, command, tuned=tuned_runs)
    print(f"wrote {written}")
    return written
