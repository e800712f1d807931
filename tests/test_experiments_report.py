"""Results report from a hand-made run store (values and p-values recomputed here) and split export."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.recbole_sasrec import write_benchmark_files
from benchmarks.runs_to_threshold import against_recbole
from dmesr.analysis.proposed_summary import tuned_section
from dmesr.analysis.results_report import (
    REPORT_METRICS,
    proposed_summary,
    training_time_sentence,
    write_brief_report,
    write_results_report,
)
from dmesr.config import load_config, save_config
from dmesr.evaluation import paired_test
from dmesr.experiments.export import export_split
from dmesr.experiments.roles import Roles
from dmesr.experiments.run_store import PER_USER_PREFIX, collect_runs
from dmesr.markdown import mean_std
from tests.conftest import make_tiny_split

NUM_USERS = 60
GROUPS = ("head", "tail", "short", "long")


def write_run(root, model, method, seed, per_user, sampled=None, patience=20):
    """A finished run directory as train_run and the runner leave it, with given per-user metrics."""
    run_dir = root / "toy" / model / f"{method}-cafe0000-seed{seed}"
    run_dir.mkdir(parents=True)
    save_config(load_config(overrides=[f"model.name={model}", f"train.patience={patience}"]), run_dir / "config.yaml")
    means = {name: float(values.mean()) for name, values in per_user.items()}
    final = {"dataset": "toy", "model": model, "items": "id" if method == "backbone" else "dmesr", "seed": seed,
             "best_epoch": 3, "epochs": 5, "stopped": "patience", "valid": {},
             "test": means, "test_breakdown": {g: {**means, "num_users": NUM_USERS / 2} for g in GROUPS},
             "seconds": {"train_total": 10.0 * seed, "to_best": 6.0, "train_epoch_median": 2.0, "test_evaluation": 0.1},
             "hardware": "Test CPU", "torch": "x", "parameters": 1}
    (run_dir / "final.json").write_text(json.dumps(final))
    (run_dir / "cell.json").write_text(json.dumps({"experiment": "toy-grid", "dataset": "toy", "model": model,
                                                   "method": method, "seed": seed}))
    (run_dir / "data.json").write_text(json.dumps({"fingerprint": "f" * 64,
                                                   "stats": {"users": NUM_USERS, "sequence_length": {"mean": 7.25}}}))
    np.savez(run_dir / "test_per_user.npz", **per_user)
    if sampled is not None:
        (run_dir / "evaluation-sampled.json").write_text(json.dumps({"protocol": "sampled", "test": sampled}))


def per_user_metrics(rng, hit_rate):
    ranks = np.where(rng.random(NUM_USERS) < hit_rate, rng.integers(0, 5, NUM_USERS), 50)
    metrics = {}
    for k in (5, 10, 20):
        metrics[f"HR@{k}"] = (ranks < k).astype(float)
        metrics[f"NDCG@{k}"] = np.where(ranks < k, 1 / np.log2(ranks + 2), 0.0)
        metrics[f"MRR@{k}"] = np.where(ranks < k, 1 / (ranks + 1), 0.0)
    return metrics


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        write_run(root, "sasrec", "backbone", seed, per_user_metrics(rng, 0.3), sampled={"HR@10": 0.5 + seed / 100})
        write_run(root, "sasrec", "dmesr", seed, per_user_metrics(rng, 0.6))
    for seed in (1, 2):
        write_run(root, "sasrec", "two-seeds", seed, per_user_metrics(rng, 0.4))
    write_run(root, "gru4rec", "dmesr", 1, per_user_metrics(rng, 0.5))  # no backbone for gru4rec
    return collect_runs(root)


def expected_tests(store, method, metric):
    def by_seed(name):
        return store[(store["model"] == "sasrec") & (store["method"] == name)].sort_values("seed")

    candidate, backbone = by_seed(method), by_seed("backbone")
    seeds = sorted(set(candidate["seed"]) & set(backbone["seed"]))
    candidate, backbone = candidate[candidate["seed"].isin(seeds)], backbone[backbone["seed"].isin(seeds)]
    seed_p = paired_test(candidate[f"test_{metric}"].to_numpy(), backbone[f"test_{metric}"].to_numpy())["p_value"]

    def users(runs):
        return np.mean([np.load(f"{run_dir}/test_per_user.npz")[metric] for run_dir in runs["run_dir"]], axis=0)

    return seed_p, paired_test(users(candidate), users(backbone))["p_value"]


def section(text, title):
    start = text.index(title)
    end = text.find("\n#", start + 1)  # the next heading of any level
    return text[start:] if end < 0 else text[start:end]


def test_report_tables_and_p_values_come_from_the_data(store, tmp_path):
    out = write_results_report(store, tmp_path / "out" / "results.md", command="dmesr report runs")
    text = out.read_text()
    assert text.startswith("# Results\n\nCommand: `dmesr report runs`")
    main = section(text, "### Test metrics")
    rows = [line for line in main.splitlines() if line.startswith(("| sasrec", "| gru4rec"))]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| gru4rec", "dmesr", "1 of 3"], ["| sasrec", "backbone", "3"], ["| sasrec", "dmesr", "3"],
        ["| sasrec", "two-seeds", "2 of 3"]]
    for method in ("dmesr", "two-seeds"):
        seed_p, user_p = expected_tests(store, method, "NDCG@10")
        p_row = next(line for line in section(text, "p-values").splitlines() if line.startswith(f"| sasrec | {method} |"))
        assert p_row.split(" | ")[2 + REPORT_METRICS.index("NDCG@10")] == f"{seed_p:.3g} / {user_p:.3g}"
        marks = ("†" if seed_p < 0.05 else "") + ("‡" if user_p < 0.05 else "")
        cell_runs = store[(store["model"] == "sasrec") & (store["method"] == method)]
        value = mean_std(cell_runs["test_NDCG@10"].mean(), cell_runs["test_NDCG@10"].std()) + marks
        assert f"| {value} |" in next(r for r in rows if r.startswith(f"| sasrec | {method} |"))
        all_backbone = store[(store["model"] == "sasrec") & (store["method"] == "backbone")]["test_NDCG@10"]
        gain = 100 * (cell_runs["test_NDCG@10"].mean() - all_backbone.mean()) / all_backbone.mean()  # every seed
        gain_row = next(line for line in section(text, "### Relative improvement").splitlines()
                        if line.startswith(f"| sasrec | {method} |"))
        assert f"| {gain:+.1f}%{marks} |" in gain_row
    pivot = section(text, "### Test NDCG@10 at a glance")
    mean = store.groupby(["model", "method"])["test_NDCG@10"].mean()
    gain = 100 * (mean["sasrec", "dmesr"] - mean["sasrec", "backbone"]) / mean["sasrec", "backbone"]
    assert "| method | gru4rec | sasrec |" in pivot
    assert f"| dmesr | {mean['gru4rec', 'dmesr']:.4f} | {mean['sasrec', 'dmesr']:.4f} ({gain:+.1f}%) |" in pivot
    assert f"| backbone |  | {mean['sasrec', 'backbone']:.4f} |" in pivot  # no gru4rec backbone: empty, no change
    assert expected_tests(store, "dmesr", "HR@10")[1] < 0.05  # hit rate 0.6 against 0.3 over 60 users: the per-user test sees it
    # gru4rec has no backbone runs: it is listed but never compared
    assert "| gru4rec | dmesr |" not in section(text, "### Relative improvement")
    assert "| users | 60 |" in text and "| sequence_length.mean | 7.25 |" in text
    assert "Protocol (from the runs' configs): max_len 50, hidden_size 64, num_layers 2, loss ce, " in text
    assert "patience 20." in text and "Mixed settings" not in text
    assert "head HR@10" in section(text, "### Head/tail") and "Users per group: head 30" in text
    sampled = section(text, "### Sampled protocol")
    assert "| sasrec | backbone | 3 |" in sampled and "| sasrec | dmesr |" not in sampled
    assert f"| {mean_std(0.52, 0.01)} |" in sampled
    assert "| toy | sasrec | backbone | 2 | Test CPU | 3/5 | 20.0 | 2.00 | 0.10 |" in text
    assert "Training time of all runs together: 160 s (0.04 h)." in text  # 2 * (10 + 20 + 30) + 10 + 20 + 10


def test_training_time_is_split_by_hardware_when_runs_ran_on_several(store):
    mixed = store.copy()
    mixed.loc[mixed.index[0], "hardware"] = "Test GPU"
    sentence = training_time_sentence(mixed)
    first = mixed["seconds_train_total"].iloc[0]
    assert sentence.startswith("Training time of all runs together: 160 s (0.04 h); by the hardware each run finished on: ")
    assert f"Test CPU {160 - first:.0f} s ({len(mixed) - 1} runs), Test GPU {first:.0f} s (1 run)" in sentence
    assert training_time_sentence(store) == "Training time of all runs together: 160 s (0.04 h)."


def test_brief_report_has_the_summary_two_metrics_overhead_and_notes(store, tmp_path):
    bench = tmp_path / "overhead.json"
    bench.write_text(json.dumps({"dataset": "toy", "model": "sasrec", "device": "cpu", "threads": 1, "batch_size": 128,
                                 "max_len": 50, "backbone_s_per_step": 0.2, "dmesr_s_per_step": 0.3, "ratio": 1.5,
                                 "command": "python bench.py --out overhead.json"}))
    gpu_bench = tmp_path / "overhead-gpu.json"  # no command: the file names the row; threads do not show on a GPU
    gpu_bench.write_text(json.dumps({"dataset": "toy", "model": "gru4rec", "device": "cuda", "threads": 1, "batch_size": 128,
                                     "max_len": 50, "backbone_s_per_step": 0.0047, "dmesr_s_per_step": 0.0125, "ratio": 2.66,
                                     "compile": "reduce-overhead"}))
    variant = tmp_path / "overhead-frozen.json"  # an item-encoder override: a variant, in a table of its own
    variant.write_text(json.dumps({"dataset": "toy", "model": "sasrec", "device": "cpu", "threads": 1, "batch_size": 128,
                                   "max_len": 50, "backbone_s_per_step": 0.2, "dmesr_s_per_step": 0.25, "ratio": 1.25,
                                   "set": ["train.batch_size=128", "items.freeze_adapters=true"]}))
    notes = tmp_path / "notes.md"
    notes.write_text("## Notes\n\nWritten by hand.\n")
    text = write_brief_report(store, tmp_path / "dmesr.md", "dmesr report runs --brief", [variant, bench, gpu_bench],
                              notes).read_text()
    assert text.startswith("# `dmesr` against its backbones, baselines and ablations\n\nCommand: `dmesr report runs --brief`")
    assert "## `dmesr` at a glance" in text and "beats its backbone in 1 of 1" in text
    header = next(line for line in section(text, "### Test metrics").splitlines() if line.startswith("| model"))
    assert header == "| model | method | seeds | HR@10 | NDCG@10 |"  # the toy store has no validation metrics
    assert "### Head/tail" not in text and "### Sampled protocol" not in text
    assert ("| toy | sasrec | 128 | 50 | cpu, 1 thread(s) | no | 200.0 | 300.0 | **1.50x** "
            "| `python bench.py --out overhead.json` |") in text
    assert "| toy | gru4rec | 128 | 50 | cuda | reduce-overhead | 4.7 | 12.5 | **2.66x** | `overhead-gpu.json` |" in text
    default_rows, variant_rows = section(text, "## Training-time overhead").split("Variants of the method")
    assert "1.25x" not in default_rows and "1.50x" not in variant_rows
    assert ("| toy | sasrec | 128 | 50 | cpu, 1 thread(s) | no | items.freeze_adapters=true | 200.0 | 250.0 | **1.25x** "
            "| `overhead-frozen.json` |") in variant_rows
    assert text.endswith("## Notes\n\nWritten by hand.\n")
    # tuned runs (here the same store, tuned to itself) are set beside the summary, before the per-dataset tables
    text = write_brief_report(store, tmp_path / "dmesr.md", "dmesr report runs --brief", tuned=("tuned-x", store)).read_text()
    assert text.index("## Does the gain survive tuning? (collection `tuned-x`)") < text.index("## toy")
    # asked for, a collection without a tuned cell is an error, not a report without the section
    with pytest.raises(ValueError, match="collection 'tuned-y' has no \\(dataset, model\\) cell"):
        write_brief_report(store, tmp_path / "dmesr.md", "c", tuned=("tuned-y", store[store["method"] != "dmesr"]))


def test_a_variant_collection_is_set_beside_the_proposed_method_seed_by_seed(store, tmp_path):
    rng = np.random.default_rng(1)
    for seed in (1, 2, 3):
        write_run(tmp_path / "variants", "sasrec", "dmesr-lean", seed, per_user_metrics(rng, 0.45))
    variants = collect_runs(tmp_path / "variants")
    text = write_brief_report(store, tmp_path / "dmesr.md", "dmesr report runs --brief",
                              beside={"lean": variants}).read_text()
    table = section(text, "## Collection `lean` beside `dmesr`")
    dmesr = store[(store["model"] == "sasrec") & (store["method"] == "dmesr")].sort_values("seed")
    lean = variants.sort_values("seed")
    change = 100 * (lean["test_NDCG@10"].mean() - dmesr["test_NDCG@10"].mean()) / dmesr["test_NDCG@10"].mean()
    seed_p = paired_test(lean["test_NDCG@10"].to_numpy(), dmesr["test_NDCG@10"].to_numpy())["p_value"]
    assert change < 0  # a hit rate of 0.45 against dmesr's 0.6
    lean_test, dmesr_test = (mean_std(runs["test_NDCG@10"].mean(), runs["test_NDCG@10"].std()) for runs in (lean, dmesr))
    row = f"| toy | sasrec | `dmesr-lean` | 3 | n/a | n/a | {lean_test} | {dmesr_test} | {change:+.1f}% | {seed_p:.3g} |"
    assert row in table
    lonely = variants.assign(model="bert4rec")  # no dmesr runs of that model to pair with
    with pytest.raises(ValueError, match="no 'dmesr' runs for toy/bert4rec"):
        write_brief_report(store, tmp_path / "dmesr.md", "command", beside={"lean": lonely})


def test_a_dataset_whose_runs_mix_settings_is_flagged(tmp_path):
    rng = np.random.default_rng(0)
    for seed, patience in ((1, 10), (2, 20), (3, 20)):
        write_run(tmp_path / "runs", "sasrec", "backbone", seed, per_user_metrics(rng, 0.3), patience=patience)
    for seed in (1, 2):
        write_run(tmp_path / "runs", "gru4rec", "backbone", seed, per_user_metrics(rng, 0.3), patience=30)
    text = write_results_report(collect_runs(tmp_path / "runs"), tmp_path / "r.md", command="x").read_text()
    assert "**Mixed settings within a method's runs, its rows are not comparable:** patience 10 (1 runs), 20 (2 runs), " \
           "30 (2 runs)." in text
    only_between = collect_runs(tmp_path / "runs").query("seed != 1 or model == 'gru4rec'")
    text = write_results_report(only_between, tmp_path / "r.md", command="x").read_text()
    assert "Per backbone (the rows of one backbone share it): patience 20 (sasrec), 30 (gru4rec)." in text
    assert "Mixed settings" not in text
    # each method with its own setting (a tuned grid), every seed alike: listed per method, not flagged
    for seed in (1, 2):
        write_run(tmp_path / "per-method", "sasrec", "backbone", seed, per_user_metrics(rng, 0.3), patience=10)
        write_run(tmp_path / "per-method", "sasrec", "dmesr", seed, per_user_metrics(rng, 0.3), patience=20)
    text = write_results_report(collect_runs(tmp_path / "per-method"), tmp_path / "r.md", command="x").read_text()
    assert "Per method (each method's own setting, every seed alike): patience 10 (backbone), 20 (dmesr)." in text
    assert "Mixed settings" not in text


def test_report_refuses_ambiguous_or_incomplete_stores(store, tmp_path):
    with pytest.raises(ValueError, match="share a \\(dataset, backbone, method, seed\\)"):
        write_results_report(pd.concat([store, store.iloc[:1]]), tmp_path / "r.md", command="x")
    with pytest.raises(ValueError, match="no column\\(s\\) test_NDCG@50"):
        write_results_report(store, tmp_path / "r.md", command="x", metrics=("NDCG@50",))
    only_methods = store[store["method"] != "backbone"]
    text = write_results_report(only_methods, tmp_path / "r.md", command="x").read_text()
    assert "No `backbone` runs for this dataset" in text
    only_backbone = store[store["method"] == "backbone"]
    text = write_results_report(only_backbone, tmp_path / "r.md", command="x").read_text()
    assert "Only `backbone` runs for this dataset: nothing to compare." in text and "p-values" not in text


def test_summary_picks_the_best_baseline_on_validation_and_sorts_by_gain():
    # (dataset, model, method) -> (validation, test) NDCG@10 of two seeds
    cells = {("a", "sasrec", "backbone"): (0.10, 0.10), ("a", "sasrec", "dmesr"): (0.12, 0.11),
             ("a", "sasrec", "text"): (0.13, 0.105), ("a", "sasrec", "llmesr"): (0.11, 0.12),
             ("b", "gru4rec", "backbone"): (0.20, 0.20), ("b", "gru4rec", "dmesr"): (0.20, 0.19),
             ("b", "gru4rec", "concat"): (0.15, 0.195), ("b", "bert4rec", "dmesr"): (0.3, 0.3)}  # no backbone: left out
    store = pd.DataFrame([{"dataset": d, "model": m, "method": method, "seed": seed,
                           "valid_NDCG@10": valid + seed / 1000, "test_NDCG@10": test + seed / 1000}
                          for (d, m, method), (valid, test) in cells.items() for seed in (1, 2)])
    title, sentence, table = proposed_summary(store)
    table = table.replace("†", "")  # every seed differs by the same amount here: the marks are tested below
    assert "beats its backbone in 1 of 2 (dataset, model) cells, with a significant difference" in sentence
    # a/sasrec beats text (chosen on validation), b/gru4rec loses to concat
    assert "best baseline (chosen on validation NDCG@10 among" in sentence and "in 1 of 2 cells with baselines" in sentence
    gain_a = 100 * (0.1115 - 0.1015) / 0.1015
    gain_b = 100 * (0.1915 - 0.2015) / 0.2015
    assert f"mean gain over the backbone {(gain_a + gain_b) / 2:+.1f}%" in sentence
    # averages over the cells: a against text (validation) / llmesr (test), b against concat (both)
    versus_concat = 100 * (0.1915 - 0.1965) / 0.1965
    average_selected = (100 * (0.1115 - 0.1065) / 0.1065 + versus_concat) / 2
    average_strongest = (100 * (0.1115 - 0.1215) / 0.1215 + versus_concat) / 2
    assert (f"(on average over those cells {average_selected:+.1f}% against it, {average_strongest:+.1f}% against "
            "the strongest baseline on test)") in sentence
    rows = [line for line in table.splitlines()[2:]]
    assert rows[0].startswith(f"| a | sasrec | 0.1015 | 0.1115 | {gain_a:+.1f}% | `text` 0.1065 (")  # largest gain first
    assert f"| `llmesr` 0.1215 ({100 * (0.1115 - 0.1215) / 0.1215:+.1f}%) |" in rows[0]
    assert rows[1].startswith("| b | gru4rec |") and len(rows) == 2
    assert rows[0].endswith("| n/a |")  # one DMESR variant per cell: nothing tuned
    assert proposed_summary(store[store["method"] != "dmesr"]) == []
    no_baselines = store[store["method"].isin(["backbone", "dmesr"])]
    assert "; no baseline (`text`, `mllm`, `concat`, `llmesr`) ran;" in proposed_summary(no_baselines)[1]
    # a cell still running: its means say how many seeds they hold, the sentence counts such cells
    running = store[~((store["dataset"] == "b") & (store["method"] == "dmesr") & (store["seed"] == 2))]
    _, sentence, table = proposed_summary(running)
    assert "(1 of them with fewer seeds so far, marked), with a significant difference" in sentence
    assert "| b | gru4rec | 0.2015 | 0.1910 (1 of 2 seeds) |" in table and "| a | sasrec | 0.1015 | 0.1115 |" in table


def test_summary_marks_only_differences_the_paired_tests_support():
    rng = np.random.default_rng(0)
    base = rng.random(400)

    def rows(method, shift, seed_noise):
        return [{"dataset": "a", "model": "sasrec", "method": method, "seed": seed, "run": f"{method}-seed{seed}",
                 "valid_NDCG@10": 0.1,
                 "test_NDCG@10": base.mean() + shift + seed_noise[seed - 1],
                 f"{PER_USER_PREFIX}NDCG@10": base + shift + rng.normal(0, 0.3, base.size)} for seed in (1, 2, 3)]

    # dmesr clearly above the backbone (every seed, every user); text only by noise
    store = pd.DataFrame(rows("backbone", 0.0, (0.0, 0.01, -0.01)) + rows("dmesr", 0.1, (0.001, 0.011, -0.009))
                         + rows("text", 0.1, (0.05, -0.04, 0.0)))
    _, sentence, table = proposed_summary(store)
    assert "with a significant difference († over seeds or ‡ over test users, paired test p < 0.05) in 1;" in sentence
    row = table.splitlines()[2]
    assert "% †‡ |".replace(" ", "") in row.replace(" ", "")  # the gain over the backbone carries both marks
    versus_text = row.split("|")[6]
    assert "`text`" in versus_text and "†" not in versus_text  # dmesr against text: no seed-level difference
    # a single seed: no test over seeds; the users' test alone marks
    _, sentence, table = proposed_summary(store[store["seed"] == 1])
    assert "in 1;" in sentence and "‡" in table.splitlines()[2] and "†" not in table.splitlines()[2]


def test_tuned_section_sets_each_tuned_cell_beside_the_defaults():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    roles = Roles("backbone", ("text", "llmesr"), "dmesr", ()).to_json()

    def rows(model, method, valid, test):
        return [{"dataset": "a", "model": model, "method": method, "seed": seed, "run": f"{model}-{method}-{seed}",
                 "roles": roles, "valid_NDCG@10": valid, "test_NDCG@10": test + 0.001 * seed,
                 f"{PER_USER_PREFIX}NDCG@10": base + test + rng.normal(0, 0.01, base.size)} for seed in (1, 2, 3)]

    defaults = pd.DataFrame(rows("sasrec", "backbone", 0.1, 0.10) + rows("sasrec", "dmesr", 0.1, 0.12)
                            + rows("gru4rec", "backbone", 0.1, 0.05) + rows("gru4rec", "dmesr", 0.1, 0.10))
    # tuned: sasrec's gain vanishes and text (best on validation, not llmesr) beats dmesr; gru4rec keeps a gain
    tuned = pd.DataFrame(rows("sasrec", "backbone", 0.1, 0.11) + rows("sasrec", "dmesr", 0.1, 0.11)
                         + rows("sasrec", "text", 0.3, 0.13) + rows("sasrec", "llmesr", 0.2, 0.14)
                         + rows("gru4rec", "backbone", 0.1, 0.08) + rows("gru4rec", "dmesr", 0.1, 0.10)
                         + rows("gru4rec", "text", 0.1, 0.09))
    heading, _, sentence, table = tuned_section(defaults, tuned, "tuned-x")
    assert heading == "## Does the gain survive tuning? (collection `tuned-x`)"
    assert "In 1 of the 2 (dataset, model) cells tuned, `dmesr` beats its tuned backbone (1 with a significant" in sentence
    assert "and in 1 the tuned baseline best on validation (1 significantly)" in sentence
    gru4rec, sasrec = table.splitlines()[2:]
    assert gru4rec.startswith("| a | gru4rec | 0.0520 → 0.0820 | 0.1020 → 0.1020 | +96.2% → +24.4%†‡ | `text` 0.0920")
    assert sasrec.startswith("| a | sasrec | 0.1020 → 0.1120 | 0.1220 → 0.1120 | +19.6% → +0.0% | `text` 0.1320 (-15.2%")
    assert sasrec.endswith("| 3 |")
    assert tuned_section(defaults, tuned.iloc[:0], "tuned-x") == []
    # a cell whose proposed method has no run yet is left out, not shown as nan
    started = tuned[~((tuned["model"] == "gru4rec") & (tuned["method"] == "dmesr"))]
    _, _, sentence, table = tuned_section(defaults, started, "tuned-x")
    assert "of the 1 (dataset, model) cells" in sentence and "gru4rec" not in table and "nan" not in table
    assert tuned_section(defaults, started[started["model"] == "gru4rec"], "tuned-x") == []


def test_summary_shows_the_dmesr_variant_best_on_validation():
    # (method) -> (validation, test) NDCG@10; dmesr-dual wins validation, dmesr-gate (best on test) must not be picked
    cells = {"backbone": (0.10, 0.10), "dmesr": (0.11, 0.105), "dmesr-dual": (0.13, 0.108), "dmesr-gate": (0.12, 0.2),
             "text": (0.12, 0.11), "dmesr-no-fusion": (0.5, 0.5)}  # an ablation, not a variant
    roles = Roles("backbone", ("text",), "dmesr", ("dmesr-dual", "dmesr-gate")).to_json()  # as a grid declares them
    store = pd.DataFrame([{"dataset": "a", "model": "sasrec", "method": method, "seed": seed,
                           "valid_NDCG@10": valid, "test_NDCG@10": test, "roles": roles}
                          for method, (valid, test) in cells.items() for seed in (1, 2)])
    _, sentence, table = proposed_summary(store)
    assert table.splitlines()[2].endswith("| `dmesr-dual` 0.1080 (+8.0%) |")
    assert "`dmesr` beats its backbone in 1 of 1 (dataset, model) cells" in sentence
    assert "Tuned on validation (the best of `dmesr` and the variants the grid ran: `dmesr-dual`, `dmesr-gate`)" \
        in sentence and "beats its backbone in 1 of 1 cells with variants and the " \
        "validation-chosen baseline in 0;" in sentence
    # a variant still running says how many seeds its mean holds
    _, _, table = proposed_summary(store[~((store["method"] == "dmesr-dual") & (store["seed"] == 2))])
    assert table.splitlines()[2].endswith("| `dmesr-dual` 0.1080 (1 of 2 seeds) (+8.0%) |")


def test_runs_outside_a_grid_are_named_by_their_item_encoder(store, tmp_path):
    backbone_dir, dmesr_dir = (store[(store["model"] == "sasrec") & (store["method"] == m)]["run_dir"].iloc[0]
                               for m in ("backbone", "dmesr"))
    for run_dir in (backbone_dir, dmesr_dir):
        (Path(run_dir) / "cell.json").unlink()
    runs = collect_runs(tmp_path / "runs").set_index("run_dir")
    assert runs.loc[backbone_dir, "method"] == "backbone" and runs.loc[backbone_dir, "experiment"] == ""
    assert runs.loc[dmesr_dir, "method"] == "dmesr"  # the item-encoder kind written in final.json


def read_folder(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_export_is_deterministic_checksummed_and_complete(tmp_path):
    split = make_tiny_split()
    first = read_folder(export_split(split, tmp_path / "a"))
    second = read_folder(export_split(make_tiny_split(), tmp_path / "b"))
    assert first == second
    assert set(first) == {"item_map.csv", "user_map.csv", "train.csv", "valid.csv", "test.csv", "README.md",
                          "sampled_negatives_valid.csv", "sampled_negatives_test.csv", "SHA256SUMS"}
    sums = dict(reversed(line.split("  ")) for line in first["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(first) - {"SHA256SUMS"}
    assert all(hashlib.sha256(first[name]).hexdigest() == digest for name, digest in sums.items())

    folder = tmp_path / "a"
    train, valid, test = (pd.read_csv(folder / f"{stage}.csv") for stage in ("train", "valid", "test"))
    assert len(train) == split.num_users * 10 and len(valid) == len(test) == split.num_users
    rebuilt = pd.concat([train, valid, test]).sort_values(["user", "position"])
    assert np.array_equal(rebuilt["item"].to_numpy(), split.flat_items)
    assert np.array_equal(test.sort_values("user")["item"].to_numpy(), split.flat_items[split.offsets[1:] - 1])
    items = pd.read_csv(folder / "item_map.csv")
    assert list(items.columns) == ["item", "original_id", "text"] and items["item"].tolist() == list(range(1, 31))
    assert items["text"].iloc[4] == "Title: item 5."
    negatives = pd.read_csv(folder / "sampled_negatives_test.csv")
    assert np.array_equal(negatives.pivot(index="user", columns="rank", values="item").to_numpy(), split.test_negatives)
    assert split.fingerprint in first["README.md"].decode()


def test_recbole_benchmark_files_hold_the_exported_split_and_nothing_else(tmp_path):
    """RecBole's reference run sees exactly dmesr's split: every training prefix, then validation and test."""
    split = make_tiny_split(num_users=6, num_items=80, length=60)  # histories longer than RecBole's 50 items
    counts = write_benchmark_files(export_split(split, tmp_path / "export"), tmp_path / "recbole")
    assert counts == {"train": 6 * 57, "valid": 6, "test": 6}
    stages = {stage: pd.read_csv(tmp_path / "recbole" / f"dmesr_split.{stage}.inter", sep="\t", dtype=str)
              for stage in ("train", "valid", "test")}
    for user in range(6):
        sequence = split.flat_items[split.offsets[user]:split.offsets[user + 1]]
        rows = {stage: table[table["user_id:token"] == str(user)] for stage, table in stages.items()}
        for stage, row, end in [*(("train", row, 1 + k) for k, row in enumerate(rows["train"].itertuples())),
                                ("valid", next(rows["valid"].itertuples()), 58), ("test", next(rows["test"].itertuples()), 59)]:
            history = [int(token) for token in row[2].split(" ")]
            assert history == sequence[max(0, end - 50):end].tolist(), (stage, user, end)
            assert int(row[3]) == sequence[end], (stage, user, end)


def test_runs_are_paired_with_recboles_run_of_the_same_seed_user_by_user(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ours = {seed: rng.random(50) for seed in (1, 2, 5)}
    theirs = {seed: rng.random(50) for seed in (1, 2, 3)}
    rows = []
    for seed, values in ours.items():
        (tmp_path / f"s{seed}").mkdir()
        np.savez(tmp_path / f"s{seed}" / "test_per_user.npz", **{"NDCG@10": values})
        rows.append({"run": str(tmp_path / f"s{seed}"), "seed": seed, "test": float(values.mean())})
    recbole = tmp_path / "recbole.json"
    recbole.write_text(json.dumps({"runs": [{"seed": seed, "test_ndcg10_per_user": values.tolist()}
                                            for seed, values in theirs.items()]}))
    against_recbole(rows, recbole)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1")]
    single, pooled = paired_test(ours[1], theirs[1]), paired_test((ours[1] + ours[2]) / 2, (theirs[1] + theirs[2]) / 2)
    assert lines[0] == (f"| 1 | {ours[1].mean():.4f} | {theirs[1].mean():.4f} | "
                        f"{single['mean_diff']:+.4f} | {single['p_value']:.3f} |")
    assert lines[1] == (f"| 1 2 | {(ours[1] + ours[2]).mean() / 2:.4f} | {(theirs[1] + theirs[2]).mean() / 2:.4f} | "
                        f"{pooled['mean_diff']:+.4f} | {pooled['p_value']:.3f} |")  # seed 5 has no partner
    with pytest.raises(SystemExit, match="shares a seed"):
        against_recbole([row for row in rows if row["seed"] == 5], recbole)
    with pytest.raises(SystemExit, match="two runs with the same seed"):
        against_recbole(rows + rows[:1], recbole)
    for text in ("<html>", '{"seeds": []}'):
        recbole.write_text(text)
        with pytest.raises(SystemExit, match="not a results file of benchmarks/recbole_sasrec.py"):
            against_recbole(rows, recbole)
    with pytest.raises(SystemExit, match="not a results file"):
        against_recbole(rows, tmp_path / "missing.json")
    recbole.write_text(json.dumps({"runs": [{"seed": 1, "test_ndcg10_per_user": [0.5] * 49}]}))
    with pytest.raises(SystemExit, match="49 test users, the runs have 50"):
        against_recbole(rows, recbole)


def test_export_refuses_foreign_files_and_drops_stale_negatives(tmp_path):
    folder = export_split(make_tiny_split(), tmp_path / "x")
    export_split(dataclasses.replace(make_tiny_split(), valid_negatives=None, test_negatives=None), folder)
    assert not (folder / "sampled_negatives_test.csv").exists()
    assert "sampled_negatives" not in (folder / "SHA256SUMS").read_text()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not part of an export \\(notes.txt\\)"):
        export_split(make_tiny_split(), folder)
    short = dataclasses.replace(make_tiny_split(), offsets=np.array([0, 2, 480]))
    with pytest.raises(ValueError, match="needs >= 3 interactions"):
        export_split(short, tmp_path / "y")


def test_notebook_tables_mark_the_same_tests_as_the_report(store):
    from dmesr.analysis.comparisons import breakdown_table, results_table

    table = results_table(store, "NDCG@10").set_index(["model", "method"])
    seed_p, user_p = expected_tests(store, "dmesr", "NDCG@10")
    row = table.loc[("sasrec", "dmesr")]
    assert row["p_seeds"] == pytest.approx(seed_p) and row["p_users"] == pytest.approx(user_p)
    assert row["marks"] == ("†" if seed_p < 0.05 else "") + ("‡" if user_p < 0.05 else "")
    assert table.loc[("sasrec", "backbone"), "marks"] == "" and table.loc[("sasrec", "dmesr"), "seeds"] == 3
    groups = breakdown_table(store, "NDCG@10")
    assert set(groups["users"]) == set(GROUPS) and len(groups) == 4 * len(table)


def test_collect_then_report_from_the_store_alone_on_the_command_line(tmp_path):
    import shutil

    from dmesr.cli import main

    rng = np.random.default_rng(1)
    root = tmp_path / "toy-runs"
    for seed in (1, 2):
        write_run(root, "sasrec", "backbone", seed, per_user_metrics(rng, 0.3))
        write_run(root, "sasrec", "dmesr", seed, per_user_metrics(rng, 0.6))
    store = tmp_path / "store"
    assert main(["experiments", "collect", str(root), "--store", str(store)]) == 0
    assert main(["report", str(root), "--out", str(tmp_path / "from-folder.md")]) == 0
    shutil.rmtree(root)
    assert main(["report", "toy-runs", "--store", str(store), "--out", str(tmp_path / "from-store.md")]) == 0
    folder, stored = ((tmp_path / name).read_text().splitlines() for name in ("from-folder.md", "from-store.md"))
    assert folder[3:] == stored[3:] and "| sasrec | dmesr |" in "\n".join(stored)  # all but the command line
    assert main(["report", "no-such-collection", "--store", str(store), "--out", str(tmp_path / "x.md")]) == 2


def test_partial_role_declarations_of_one_experiment_merge_and_conflicts_are_refused():
    from dmesr.experiments.roles import Roles, runs_roles

    full = Roles("backbone", ("text",), "dmesr", ("dmesr-gate",)).to_json()
    backbone_only = Roles().to_json()  # e.g. a grid of trivial baselines
    assert runs_roles(pd.DataFrame({"roles": [full, backbone_only, full]})) == \
        Roles("backbone", ("text",), "dmesr", ("dmesr-gate",))
    other = Roles("backbone", (), "llmesr", ()).to_json()
    with pytest.raises(ValueError, match="conflicting method roles"):
        runs_roles(pd.DataFrame({"roles": [full, other]}))
