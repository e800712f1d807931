"""The report on repeat-consumption data: repeat / new targets and trained models against the heuristics."""

from __future__ import annotations

import json

import numpy as np

from dmesr.analysis.results_report import write_results_report
from dmesr.evaluation import paired_test
from dmesr.experiments.run_store import collect_runs
from dmesr.markdown import mean_std
from tests.test_experiments_report import NUM_USERS, per_user_metrics, section, write_run

REPEAT_USERS = np.arange(NUM_USERS) < 40  # the first 40 test users' targets are repeats


def write_repeat_run(root, model, method, seed, per_user):
    """A run whose final.json splits the users into repeat and new targets, as train_run writes it."""
    write_run(root, model, method, seed, per_user)
    final_path = next((root / "toy" / model).glob(f"{method}-*-seed{seed}")) / "final.json"
    final = json.loads(final_path.read_text())
    for group, members in (("repeat", REPEAT_USERS), ("new", ~REPEAT_USERS)):
        final["test_breakdown"][group] = {**{name: float(values[members].mean()) for name, values in per_user.items()},
                                          "num_users": float(members.sum())}
    final_path.write_text(json.dumps(final))


def test_repeat_and_new_targets_and_models_below_a_heuristic_are_named(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        write_repeat_run(root, "sasrec", "backbone", seed, per_user_metrics(rng, 0.3))
        write_repeat_run(root, "sasrec", "repeat-head", seed, per_user_metrics(rng, 0.7))
        write_repeat_run(root, "repeat-pop", "backbone", seed, per_user_metrics(np.random.default_rng(9), 0.5))
        write_repeat_run(root, "pop", "backbone", seed, per_user_metrics(np.random.default_rng(8), 0.1))
    store = collect_runs(root)
    text = write_results_report(store, tmp_path / "results.md", command="dmesr report runs").read_text()
    repeats = section(text, "### Repeat and new targets")
    assert "`repeat`): 40, the others (`new`): 20" in repeats

    def cell(model, method):
        return store[(store["model"] == model) & (store["method"] == method)].sort_values("seed")

    plain, baseline = cell("sasrec", "backbone"), cell("repeat-pop", "backbone")
    repeat_ndcg = [np.load(f"{d}/test_per_user.npz")["NDCG@10"][REPEAT_USERS].mean() for d in plain["run_dir"]]
    change = 100 * (plain["test_NDCG@10"].mean() - baseline["test_NDCG@10"].mean()) / baseline["test_NDCG@10"].mean()
    p_seeds = paired_test(plain["test_NDCG@10"].to_numpy(), baseline["test_NDCG@10"].to_numpy())["p_value"]
    row = next(line for line in repeats.splitlines() if line.startswith("| sasrec | backbone |"))
    assert mean_std(np.mean(repeat_ndcg), np.std(repeat_ndcg, ddof=1)) in row
    assert f"{change:+.1f}%" in row and f"({p_seeds:.3g} / " in row
    assert "**A trained model is below a trivial baseline:** `sasrec` `backbone` is below `repeat-pop`" in repeats
    assert "`sasrec` `repeat-head` is below" not in repeats and "below `pop`" not in repeats
    assert "Significantly above `repeat-pop`: `sasrec` `repeat-head` (+" in repeats


def test_without_repeats_only_the_baselines_are_compared(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        write_run(tmp_path / "runs", "sasrec", "backbone", seed, per_user_metrics(rng, 0.3))
    text = write_results_report(collect_runs(tmp_path / "runs"), tmp_path / "r.md", command="x").read_text()
    assert "Repeat and new targets" not in text and "against the trivial baselines" not in text
    for seed in (1, 2):
        write_run(tmp_path / "runs", "pop", "backbone", seed, per_user_metrics(np.random.default_rng(8), 0.6))
    text = write_results_report(collect_runs(tmp_path / "runs"), tmp_path / "r.md", command="x").read_text()
    baselines = section(text, "### Trained models against the trivial baselines")
    assert "repeat NDCG@10" not in baselines and "`sasrec` `backbone` is below `pop`" in baselines
