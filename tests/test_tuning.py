"""`dmesr tune`: the search space read from a grid file, a study run to its budget on validation only,
a worker killed mid-trial and the study resumed with its trial count unchanged, workers sharing studies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from dmesr.cli import main
from dmesr.experiments.grid import load_grid
from dmesr.experiments.tuning import load_tuning, storage_url, tune
from tests.conftest import make_tiny_split
from tests.test_experiments_runner import TINY, write_atomic_dataset

ROOT = Path(__file__).resolve().parents[1]


def experiment(tmp_path: Path, trials: int = 3, **tuning) -> Path:
    """A grid over the synthetic split (as files, so that spawned workers can read it) with a tuning section."""
    dataset = tmp_path / "walk"
    if not dataset.exists():
        write_atomic_dataset(dataset, make_tiny_split())
    spec = {"name": "tiny", "base": {**TINY, "train.max_epochs": 4, "output_dir": str(tmp_path / "runs")},
            "datasets": [str(dataset)], "models": ["sasrec"], "seeds": [7, 8],
            "methods": {"backbone": {}, "no-dropout": {"model.dropout": 0.0}},
            "roles": {"backbone": "backbone", "baselines": ["no-dropout"]},
            "tuning": {"trials": trials, "startup_trials": 2, "pruner": {"startup_trials": 1, "warmup_epochs": 1},
                       "space": {"train.lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True}},
                       "per_method": {"no-dropout": {"train.batch_size": {"choices": [4, 8]}}}, **tuning}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def trials_of(output_dir: Path, study: str) -> list:
    return optuna.load_study(study_name=study, storage=storage_url(output_dir)).get_trials(deepcopy=False)


def test_search_space_is_read_per_method_from_the_grid_file(tmp_path):
    _, tuning, studies = load_tuning(experiment(tmp_path))
    assert tuning.trials == 3 and tuning.seed == 7  # the grid's first seed trains every trial
    assert tuning.output_dir == tmp_path / "runs-tuning"
    assert [study.name.split("/", 1)[1] for study in studies] == ["sasrec/backbone", "sasrec/no-dropout"]
    lr, batch = studies[1].dimensions
    assert (lr.key, lr.low, lr.high, lr.log) == ("train.lr", 1e-3, 3e-2, True)
    assert (batch.key, batch.choices) == ("train.batch_size", (4, 8))
    assert [d.key for d in studies[0].dimensions] == ["train.lr"]  # per_method adds only to its method
    assert studies[0].cell.config.train.seed == 7 and studies[1].cell.config.model.dropout == 0.0
    assert load_grid(experiment(tmp_path))  # the grid runner accepts the same file


@pytest.mark.parametrize("change, message", [
    ({"space": {"train.lrr": {"low": 0.1, "high": 1.0}}}, "unknown config key 'train.lrr'"),
    ({"space": {"train.seed": {"low": 1, "high": 3}}}, "axis of the grid"),
    ({"space": {"train.lr": {"low": 0.1, "high": 0.01}}}, "low < high"),
    ({"space": {"train.lr": {"low": 0.0, "high": 0.01, "log": True}}}, "low must be > 0"),
    ({"space": {"model.dropout": {"choices": [0.1, 1.5]}}}, r"model.dropout=1.5: model.dropout must be in \[0, 1\)"),
    ({"per_method": {"dmesr": {"items.align_weight": {"low": 0.0, "high": 1.0}}}}, "not a method"),
    ({"trials": 0}, "tuning.trials must be an integer >= 1"),
    ({"sampler": "tpe"}, "unknown tuning key"),
])
def test_a_bad_search_space_is_refused_naming_the_key(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_tuning(experiment(tmp_path, **change))


def test_a_study_spends_its_budget_on_validation_only(tmp_path, monkeypatch, capsys):
    from dmesr.training import trainer

    def validation_only(split, stage, max_len):
        assert stage == "valid", "the tuner evaluated the test split"
        return real(split, stage, max_len)

    real = trainer.evaluation_inputs
    monkeypatch.setattr(trainer, "evaluation_inputs", validation_only)
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    path = experiment(tmp_path, trials=4)
    summary = tune(path, show_progress=False)
    assert summary["errors"] == []
    for row in summary["studies"]:
        assert row["complete"] + row["pruned"] == 4 and row["failed"] == row["interrupted"] == 0
        assert 0 < row["best_valid_ndcg10"] <= 1 and row["train_seconds"] > 0
    output = tmp_path / "runs-tuning"
    trials = trials_of(output, summary["studies"][1]["study"])
    assert len(trials) == 4 and not list(output.rglob("final.json"))  # nothing was tested
    best = max((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    assert summary["studies"][1]["best_params"] == best.params and set(best.params) == {"train.lr", "train.batch_size"}
    epochs = [json.loads(line) for line in (output.glob(f"*/sasrec/no-dropout/trial-{best.number:04d}/epochs.jsonl")
                                             .__next__().read_text().splitlines())]
    assert best.value == max(row["valid_NDCG@10"] for row in epochs)  # its best validation epoch
    assert best.intermediate_values == {row["epoch"]: row["valid_NDCG@10"] for row in epochs}
    markdown = (output / "summary.md").read_text()
    assert "| sasrec | no-dropout |" in markdown and f"{summary['studies'][1]['best_valid_ndcg10']:.4f}" in markdown
    # the best settings, as an experiment file that runs them with every seed of the grid
    cells = load_grid(next((output / "best").glob("walk-*-sasrec.yaml")))
    assert [(c.method, c.seed) for c in cells] == [(m, s) for m in ("backbone", "no-dropout") for s in (7, 8)]
    assert cells[2].config.train.lr == best.params["train.lr"] and cells[2].config.model.dropout == 0.0
    assert cells[0].config.output_dir == str(tmp_path / "runs-tuned")
    # a rerun (the command line) finds the budget spent: no trial is added
    assert main(["tune", str(path)]) == 0 and "summary.md" in capsys.readouterr().out
    assert json.loads((output / "summary.json").read_text())["studies"] == summary["studies"]
    assert len(trials_of(output, summary["studies"][1]["study"])) == 4


KILLER = textwrap.dedent("""
    import os, signal, sys
    from dmesr.training import trainer
    from dmesr.experiments.tuning import tune

    path, log, kill_run, kill_epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    real = trainer.Trainer.train_epoch

    def train_epoch(self, epoch):  # records each (trial, epoch) trained; dies at the chosen one
        if (self.run_dir.name, epoch) == (kill_run, kill_epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        with open(log, "a") as handle:
            handle.write(f"{self.run_dir.parent.name}/{self.run_dir.name} {epoch}\\n")
        return real(self, epoch)

    trainer.Trainer.train_epoch = train_epoch
    tune(path, show_progress=False)
""")


@pytest.mark.slow  # two processes, each importing torch
def test_a_study_killed_mid_trial_resumes_with_its_trial_count_unchanged(tmp_path):
    path = experiment(tmp_path, trials=3, pruner={"startup_trials": 3, "warmup_epochs": 0})  # no pruning
    script, log = tmp_path / "killer.py", tmp_path / "trained.txt"
    script.write_text(KILLER)
    environment = {"DMESR_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                   "PATH": "/usr/bin:/bin"}

    def run(kill_run: str) -> int:
        return subprocess.run([sys.executable, str(script), str(path), str(log), kill_run, "3"], cwd=ROOT,
                              env=environment, capture_output=True, text=True).returncode

    assert run("trial-0001") == -9  # killed with SIGKILL in trial 1's third epoch
    output = tmp_path / "runs-tuning"
    study = next(s.name for s in load_tuning(path)[2] if s.name.endswith("/backbone"))
    before = trials_of(output, study)
    assert [t.state for t in before] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    assert run("none") == 0  # the rerun: trial 1 resumes, then trial 2 and the other method's study
    trials = trials_of(output, study)
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # the killed trial: failed, not counted
    retried = trials[2]
    assert retried.user_attrs["continues"] == 1 and retried.user_attrs["run"] == "trial-0001"
    assert retried.params == before[1].params  # the same settings, in the same folder
    assert sorted(retried.intermediate_values) == [1, 2, 3, 4]  # the whole curve, the first two epochs replayed
    trained = log.read_text().split("\n")[:-1]
    assert len(trained) == len(set(trained))  # no epoch of any trial was trained twice
    assert trained.count("backbone/trial-0001 1") == 1 and "backbone/trial-0001 3" in trained
    summary = json.loads((output / "summary.json").read_text())
    backbone = next(row for row in summary["studies"] if row["method"] == "backbone")
    assert (backbone["complete"], backbone["pruned"], backbone["interrupted"]) == (3, 0, 1)


@pytest.mark.slow  # spawned workers import torch
def test_two_workers_share_one_study_and_spend_exactly_its_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    path = experiment(tmp_path, trials=3)
    summary = tune(path, workers=2, threads=1, cells=["*/no-dropout"], show_progress=False)
    assert [row["method"] for row in summary["studies"]] == ["no-dropout"]
    (row,) = summary["studies"]
    assert row["complete"] + row["pruned"] == 3 and row["running"] == 0
    runs = {t.user_attrs["run"] for t in trials_of(tmp_path / "runs-tuning", row["study"])}
    assert runs == {"trial-0000", "trial-0001", "trial-0002"}
