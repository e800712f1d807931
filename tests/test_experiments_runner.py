"""Grid runner: real tiny runs, skip-when-done, dry-run statuses and estimates, failures, workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dmesr.analysis.results_report import report
from dmesr.config import load_config, save_config
from dmesr.experiments import runner, status
from dmesr.experiments.grid import expand_grid
from dmesr.experiments.reevaluate import evaluate_missing, evaluate_runs
from dmesr.experiments.run_store import add_to_store, collect_runs, load_epochs, load_runs
from dmesr.experiments.runner import (
    cell_status,
    estimate_seconds,
    experiments_run,
    run_grid,
    select_cells,
    with_thread_share,
)
from tests.conftest import make_tiny_split

TINY = {"data.max_len": 8, "model.hidden_size": 16, "model.num_layers": 1, "model.num_heads": 1,
        "train.batch_size": 8, "train.lr": 0.01, "train.max_epochs": 2, "train.patience": 50, "train.device": "cpu"}


def tiny_grid(tmp_path, models=("sasrec",), seeds=(1,), **changes):
    spec = {"name": "tiny", "base": {**TINY, "output_dir": str(tmp_path / "runs")}, "datasets": ["tiny"],
            "models": list(models), "seeds": list(seeds),
            "methods": {"backbone": {}, "slow-lr": {"train.lr": 0.001}}, **changes}
    return expand_grid(spec)


@pytest.fixture
def tiny_data(monkeypatch):
    """Every run trains (and is re-evaluated) on the synthetic split (no download)."""
    for module in ("dmesr.training.run", "dmesr.experiments.reevaluate"):
        monkeypatch.setattr(f"{module}.prepare_split", lambda config: make_tiny_split())
    monkeypatch.setattr("dmesr.experiments.runner.dataset_problem", lambda dataset: "")  # "tiny" is loadable here


@pytest.mark.slow  # ~6 s: the first training in a process imports torch's optimizer machinery
def test_grid_runs_then_second_run_does_nothing(tmp_path, tiny_data, monkeypatch):
    cells = tiny_grid(tmp_path)
    assert [cell_status(c) for c in cells] == ["todo", "todo"]
    outcomes = run_grid(cells, show_progress=False)
    assert [o.status for o in outcomes] == ["finished", "finished"]
    for cell in cells:
        assert cell_status(cell) == "done"
        assert json.loads((cell.run_dir / "cell.json").read_text()) == cell.identity()
        assert json.loads((cell.run_dir / "final.json").read_text())["epochs"] == 2

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(runner, "train_run", must_not_train)
    started = time.perf_counter()
    again = run_grid(cells, show_progress=False)
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert time.perf_counter() - started < 1.0

    # stopped between final.json and the sampled evaluation: the next run adds the evaluation only
    sampled = cells[1].run_dir / "evaluation-sampled.json"
    expected = json.loads(sampled.read_text())
    sampled.unlink()
    assert [o.status for o in run_grid(cells, show_progress=False)] == ["skipped", "skipped"]
    assert json.loads(sampled.read_text()) == expected

    store = collect_runs(tmp_path / "runs")
    assert sorted(store["method"]) == ["backbone", "slow-lr"] and set(store["experiment"]) == {"tiny"}
    assert {"head_NDCG@10", "long_HR@10", "test_MRR@10"} <= set(store.columns)
    add_to_store(tmp_path / "runs", tmp_path / "store")
    stored = load_runs("runs", tmp_path / "store")
    assert stored.drop(columns="run_dir", errors="ignore").columns.tolist() == store.drop(columns="run_dir").columns.tolist()
    assert stored["test_NDCG@10"].tolist() == store["test_NDCG@10"].tolist()
    assert all((a == b).all() for a, b in zip(stored["user_NDCG@10"], store["user_NDCG@10"]))
    assert len(load_epochs("runs", tmp_path / "store")) == sum(store["epochs"])
    text = report([str(tmp_path / "runs")], tmp_path / "results.md", command="dmesr report runs").read_text()
    assert "| sasrec | slow-lr | 1 |" in text  # one seed: a per-user test, no seed test
    assert "Command: `dmesr report runs`" in text
    # the same report from the store alone, with the run folders gone
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)  # "runs" names a collection here, not the working directory's runs/ folder
    from_store = report(["runs"], tmp_path / "again.md", command="dmesr report runs", store=tmp_path / "store")
    assert from_store.read_text() == text


def test_failing_cell_is_logged_and_the_grid_goes_on(tmp_path, tiny_data, capsys, gru4rec_cells_fail):
    cells = tiny_grid(tmp_path, models=("gru4rec", "sasrec"), methods={"backbone": {}})
    outcomes = run_grid(cells, show_progress=False)
    assert [o.status for o in outcomes] == ["failed", "finished"]
    assert "the data broke" in outcomes[0].error
    assert "RuntimeError" in (cells[0].run_dir / "error.log").read_text()
    summary = capsys.readouterr().out
    assert "2 cells: 0 already done, 0 skipped (another process trains them), 1 finished, 1 failed" in summary
    assert "failed: tiny/gru4rec/backbone/seed1: RuntimeError: the data broke" in summary


def test_cells_are_selected_by_label_globs_in_grid_order(tmp_path):
    cells = tiny_grid(tmp_path, models=("sasrec", "gru4rec"), seeds=(1, 2))
    assert [c.label for c in select_cells(cells, ["tiny/*/slow-lr/*"])] == [
        "tiny/sasrec/slow-lr/seed1", "tiny/sasrec/slow-lr/seed2", "tiny/gru4rec/slow-lr/seed1", "tiny/gru4rec/slow-lr/seed2"]
    both = select_cells(cells, ["*/seed2", "tiny/gru4rec/backbone/*"])  # a union, each cell once
    assert [c.label for c in both] == [c.label for c in cells if c.seed == 2 or c.label.startswith("tiny/gru4rec/backbone")]
    assert select_cells(cells, ["tiny/*/back*/seed1"]) == [cells[0], cells[4]]
    with pytest.raises(ValueError) as error:
        select_cells(cells, ["tiny/*/dmesr/*"])
    assert str(error.value) == "no cell matches 'tiny/*/dmesr/*'; labels look like 'tiny/sasrec/backbone/seed1'"


def test_dry_run_lists_statuses_and_estimates_from_finished_runs(tmp_path, tiny_data, capsys):
    cells = tiny_grid(tmp_path, seeds=(1, 2, 3))
    guesses = run_grid(cells, dry_run=True)
    assert [o.status for o in guesses] == ["todo"] * 6
    assert all(o.estimate_source == "guess" and o.seconds == runner.DEFAULT_SECONDS_PER_EPOCH * 2 for o in guesses)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing

    run_grid(cells[:1], show_progress=False)  # backbone seed 1: done
    partial = cells[1]  # backbone seed 2: interrupted after its first epoch
    (partial.run_dir).mkdir(parents=True)
    (partial.run_dir / "config.yaml").write_text("")
    (partial.run_dir / "epochs.jsonl").write_text('{"epoch": 1}\n')
    capsys.readouterr()

    outcomes = run_grid(cells, dry_run=True)
    assert [o.status for o in outcomes] == ["done", "partial", "todo", "todo", "todo", "todo"]
    final = json.loads((cells[0].run_dir / "final.json").read_text())
    per_epoch = status._seconds_per_epoch_where_finished(cells[0].run_dir, final)
    assert outcomes[1].seconds == pytest.approx(per_epoch * 1) and outcomes[1].estimate_source == "measured"
    assert outcomes[2].seconds == pytest.approx(per_epoch * 2)
    # slow-lr has no finished run of its own: the same dataset and model's runs stand in
    assert outcomes[3].estimate_source == "measured" and outcomes[3].seconds == pytest.approx(per_epoch * 2)
    printed = capsys.readouterr().out
    assert "6 cells: 1 done, 1 partial, 4 todo" in printed
    assert estimate_seconds(cells[:1], ["done"]) == [(0.0, "measured")]
    # a selection of cells (--cells, --shard) is estimated from the finished runs of the whole grid
    assert run_grid(cells[3:4], dry_run=True)[0].estimate_source == "guess"
    selected = run_grid(cells[3:4], dry_run=True, measured_from=cells)[0]
    assert selected.estimate_source == "measured" and selected.seconds == pytest.approx(per_epoch * 2)
    assert run_grid(cells, shard="1/2", dry_run=True)[1].estimate_source == "measured"  # cells[3], beside the done one


def test_estimates_fall_back_to_other_backbones_of_the_dataset_then_guess(tmp_path):
    spec = {"name": "t", "base": {"output_dir": str(tmp_path), "train.max_epochs": 200}, "datasets": ["a", "b"],
            "models": ["sasrec", "gru4rec"], "seeds": [1], "methods": {"backbone": {}, "dmesr": {"train.lr": 0.01}}}
    cells = expand_grid(spec)
    done = {("a", "sasrec", "backbone"): (2.0, 10, "x86_64 CPU, 2 threads"), ("a", "sasrec", "dmesr"): (3.0, 20, None),
            ("b", "gru4rec", "backbone"): (0.1, 10, "Some GPU")}  # another kind of hardware: not used here
    for cell in cells:
        if (cell.dataset, cell.model, cell.method) in done:
            seconds, epochs, ran_on = done[(cell.dataset, cell.model, cell.method)]
            cell.run_dir.mkdir(parents=True)
            final = {"epochs": epochs, "seconds": {"train_epoch_median": seconds}} | ({"hardware": ran_on} if ran_on else {})
            (cell.run_dir / "final.json").write_text(json.dumps(final))
    statuses = [cell_status(cell) for cell in cells]
    estimates = {(c.dataset, c.model, c.method): e for c, e in zip(cells, estimate_seconds(cells, statuses))}
    assert estimates[("a", "gru4rec", "dmesr")] == (60.0, "other backbones")  # a's dmesr runs with SASRec
    assert estimates[("a", "gru4rec", "backbone")] == (20.0, "other backbones")
    assert estimates[("b", "sasrec", "dmesr")] == (runner.DEFAULT_SECONDS_PER_EPOCH * 200, "guess")
    assert estimates[("b", "sasrec", "backbone")] == (runner.DEFAULT_SECONDS_PER_EPOCH * 200, "guess")


def test_threads_are_shared_between_workers(monkeypatch):
    monkeypatch.setattr(runner, "available_cores", lambda: 2)
    cell = expand_grid({"name": "t", "datasets": ["d"], "models": ["sasrec"], "seeds": [1], "methods": {"m": {}}})[0]
    assert with_thread_share(cell, 2).config.train.num_threads == 1
    assert with_thread_share(cell, 4).config.train.num_threads == 1
    assert with_thread_share(cell, 1).config.train.num_threads == 2
    assert cell.config.train.num_threads == 0  # the original cell is unchanged
    pinned = expand_grid({"name": "t", "base": {"train.num_threads": 3}, "datasets": ["d"], "models": ["sasrec"],
                          "seeds": [1], "methods": {"m": {}}})[0]
    assert with_thread_share(pinned, 2).config.train.num_threads == 3  # an explicit setting is kept
    # --threads wins over both (a grid beside another job leaves it a core)
    assert with_thread_share(cell, 1, threads=1).config.train.num_threads == 1
    assert with_thread_share(pinned, 2, threads=1).config.train.num_threads == 1
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with_thread_share(cell, 1, threads=0)


def write_atomic_dataset(folder, split):
    """The synthetic split as RecBole atomic files, so that spawned workers can load it by path."""
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(split.num_users):
        lines += [f"{split.user_ids[user]}\t{split.item_ids[item - 1]}\t{t}" for t, item in enumerate(split.sequence(user))]
    (folder / f"{folder.name}.inter").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_two_worker_processes_run_a_grid_from_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    write_atomic_dataset(tmp_path / "walk", make_tiny_split())
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(json.dumps({
        "name": "tiny", "base": {**TINY, "data.num_sampled_negatives": 5, "output_dir": str(tmp_path / "runs")},
        "datasets": [str(tmp_path / "walk")],
        "models": ["sasrec", "gru4rec"], "seeds": [1], "methods": {"backbone": {}}, "store": str(tmp_path / "store")}))
    outcomes = experiments_run(experiment, workers=2)
    assert [o.status for o in outcomes] == ["finished", "finished"], [o.error for o in outcomes]
    store = collect_runs(tmp_path / "runs")
    assert sorted(store["model"]) == ["gru4rec", "sasrec"]
    assert sorted(load_runs("runs", tmp_path / "store")["model"]) == ["gru4rec", "sasrec"]  # each added on finishing
    assert np.all(store["test_HR@10"].between(0, 1))
    assert [o.status for o in experiments_run(experiment, limit=1)] == ["skipped"]
    # every finished cell was scored with the sampled protocol too; re-scoring reproduces it
    assert store["sampled_HR@10"].between(store["test_HR@10"], 1).all()  # 5 negatives: easier than full ranking
    first = next((tmp_path / "runs").glob("walk-*")) / "gru4rec"  # the folder's name + its files' fingerprint
    sampled = next(first.glob("*/evaluation-sampled.json"))
    written = json.loads(sampled.read_text())
    sampled.unlink()
    assert evaluate_runs(tmp_path / "runs", show_progress=False) == {"evaluated": 1, "already": 1, "no_negatives": 0}
    assert json.loads(sampled.read_text()) == written


def test_sampled_protocol_turned_off_is_known_without_loading_the_split(tmp_path, monkeypatch):
    def must_not_load(config):
        raise AssertionError("the split was loaded")

    monkeypatch.setattr("dmesr.experiments.reevaluate.prepare_split", must_not_load)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_config(load_config(overrides=["data.num_sampled_negatives=0"]), run_dir / "config.yaml")
    assert evaluate_missing(run_dir, "sampled") == "no_negatives"
    assert not (run_dir / "evaluation-sampled.json").exists()


@pytest.mark.slow
def test_ctrl_c_stops_queued_cells_and_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    write_atomic_dataset(tmp_path / "walk", make_tiny_split())  # cells that workers could finish
    cells = tiny_grid(tmp_path, models=("sasrec", "gru4rec"), seeds=(1, 2), datasets=[str(tmp_path / "walk")],
                      base={**TINY, "data.num_sampled_negatives": 5, "output_dir": str(tmp_path / "runs")})

    def interrupted(futures):
        raise KeyboardInterrupt
        yield  # a generator, like as_completed

    monkeypatch.setattr(runner, "as_completed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_grid(cells, workers=2, show_progress=False)
    deadline = time.monotonic() + 10
    while runner.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner.active_children() == []
    assert [cell_status(cell) for cell in cells].count("done") == 0


def _alive(pid: int) -> bool:
    """Running, i.e. neither gone nor a zombie waiting for a parent that will never reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_pool_workers_exit_when_the_grid_process_is_killed(tmp_path):
    # a grid process killed with SIGKILL cannot stop its workers: each must notice and exit by itself
    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "grid.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        from dmesr.experiments.runner import exit_with_parent

        def work(path):
            with open(path + ".tmp", "w") as handle:
                handle.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            time.sleep(300)

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=exit_with_parent)
            pool.submit(work, sys.argv[1])
            time.sleep(300)
    """))
    grid = subprocess.Popen([sys.executable, str(script), str(pid_file)], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid_file.exists(), "the worker never started"
        worker = int(pid_file.read_text())
        assert _alive(worker)
        grid.kill()
        grid.wait()
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker)
    finally:
        grid.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text())):  # the test failed: leave no orphan behind
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_run_resumed_on_other_hardware_is_measured_by_its_epochs_there(tmp_path):
    spec = {"name": "t", "base": {"output_dir": str(tmp_path)}, "datasets": ["a"], "models": ["gru4rec"],
            "seeds": [1, 2], "methods": {"backbone": {}}}
    started_on_gpu, todo = expand_grid(spec)
    started_on_gpu.run_dir.mkdir(parents=True)
    # 6 epochs on a GPU, then 3 here after a resume: final.json's median (1.0 s) is the GPU's
    seconds = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 30.0, 40.0, 35.0]
    (started_on_gpu.run_dir / "epochs.jsonl").write_text("".join(json.dumps({"train_seconds": s}) + "\n" for s in seconds))
    final = {"epochs": 9, "hardware": "x86_64 CPU, 1 threads", "seconds": {"train_epoch_median": 1.0}}
    (started_on_gpu.run_dir / "final.json").write_text(json.dumps(final))
    assert estimate_seconds([started_on_gpu, todo], ["done", "todo"])[1] == (35.0 * 9, "measured")
    # a run that never moved keeps the median of all its epochs, its slow and fast ones alike
    (started_on_gpu.run_dir / "epochs.jsonl").write_text("".join(json.dumps({"train_seconds": s}) + "\n" for s in seconds[:6]))
    assert estimate_seconds([started_on_gpu, todo], ["done", "todo"])[1] == (1.0 * 9, "measured")
