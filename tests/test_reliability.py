"""Nothing lost, nothing mixed up: dataset identity, non-zero exits, writer locks, torn files, checked settings,
odd input files. Tiny synthetic data and one- or two-epoch runs throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmesr.cli import main
from dmesr.config import load_config
from dmesr.data.identity import dataset_key
from dmesr.data.loaders import load_recbole_atomic
from dmesr.data.tables import load_table
from dmesr.enrich import pipeline
from dmesr.enrich.cache import CacheWriter, DescriptionCache, read_jsonl_records
from dmesr.enrich.describers import Describer
from dmesr.enrich.feature_files import save_features
from dmesr.enrich.features import SemanticFeatures
from dmesr.experiments import runner
from dmesr.experiments.grid import expand_grid
from dmesr.lock import InProgressError, exclusive, is_locked
from dmesr.training.run import lock_path, run_directory, train_run
from dmesr.training.runtime import load_checkpoint
from tests.conftest import make_tiny_split

TINY = {"data.max_len": 8, "model.hidden_size": 16, "model.num_layers": 1, "model.num_heads": 1,
        "train.batch_size": 8, "train.lr": 0.01, "train.max_epochs": 2, "train.patience": 50, "train.device": "cpu"}


def tiny_config(tmp_path: Path, **overrides):
    pairs = {**TINY, "output_dir": str(tmp_path / "runs"), **overrides}
    return load_config(overrides=[f"{k}={v}" for k, v in pairs.items()])


def write_atomic(folder: Path, rows: list[str], header: str = "user_id:token\titem_id:token\ttimestamp:float",
                 items: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{folder.name}.inter").write_text("\n".join([header, *rows]) + "\n")
    if items is not None:
        (folder / f"{folder.name}.item").write_text("\n".join(["item_id:token\ttitle:token_seq", *items]) + "\n")
    return folder


def walk_rows(shift: int = 0) -> list[str]:
    return [f"u{u}\ti{(u + t + shift) % 9}\t{t}" for u in range(6) for t in range(6)]


# ------------------------------------------------------------------ dataset identity


def test_two_folders_named_alike_get_their_own_caches_features_and_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    a = write_atomic(tmp_path / "A" / "data", walk_rows(0))
    b = write_atomic(tmp_path / "B" / "data", walk_rows(1))
    assert dataset_key(str(a)) != dataset_key(str(b)) and dataset_key(str(a)).startswith("data-")
    assert pipeline.default_enrich_dir(str(a)) != pipeline.default_enrich_dir(str(b))
    assert run_directory(tiny_config(tmp_path, **{"data.dataset": a})).parent.parent.name == dataset_key(str(a))
    assert run_directory(tiny_config(tmp_path, **{"data.dataset": a})) != \
        run_directory(tiny_config(tmp_path, **{"data.dataset": b}))
    assert dataset_key("ml-1m") == "ml-1m"  # a registered dataset's files are pinned: its name is its identity


def _features(item_ids, key):
    n, dim = len(item_ids), 4
    return SemanticFeatures(item_ids=np.asarray(item_ids), views={"text": np.ones((n, dim), np.float32)},
                            view_present={"text": np.ones(n, bool)}, text_pooled=np.ones((n, dim), np.float32),
                            text_tokens=np.ones((n, 2, dim), np.float16), text_mask=np.ones((n, 2), bool),
                            meta={"encoder": "all-MiniLM-L6-v2", "dataset_key": key})


def test_features_recorded_for_other_data_are_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    a = write_atomic(tmp_path / "A" / "data", walk_rows(0))
    config = tiny_config(tmp_path, **{"data.dataset": a, "items.kind": "text"})
    folder = pipeline.features_folder(str(a), config.items.describer, config.items.encoder)
    save_features(_features([f"i{k}" for k in range(9)], "data-00000000"), folder)  # made from other files
    with pytest.raises(ValueError, match="were made from dataset data-00000000"):
        pipeline.load_dataset_features(str(a), config.items)
    save_features(_features([f"i{k}" for k in range(9)], dataset_key(str(a))), folder)
    assert pipeline.load_dataset_features(str(a), config.items).meta["dataset_key"] == dataset_key(str(a))


@pytest.mark.parametrize("name", ["..", ".", "", "some/.."])
def test_dataset_names_that_are_no_folder_name_are_refused(tmp_path, name, capsys):
    assert main(["train", "--dataset", name, "--output-dir", str(tmp_path / "runs")]) == 2
    assert "has no name to file it under" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not any(tmp_path.iterdir())


# ------------------------------------------------------------------ failures exit non-zero


class UnloadableDescriber(Describer):
    describer_id = "broken"

    def __init__(self):
        self.loads = 0

    def load(self):
        self.loads += 1
        raise OSError("model weights not found")

    def describe(self, requests):
        self.load()


def test_a_describer_that_cannot_load_fails_once_before_the_loop(tmp_path):
    items = pd.DataFrame({"item": [str(k) for k in range(30)], "text": ["a film"] * 30})
    broken = UnloadableDescriber()
    with pytest.raises(OSError, match="model weights not found"):
        pipeline.describe_items(items, "d", broken, views=["text"], cache_dir=tmp_path, progress=False)
    assert broken.loads == 1


def test_a_describer_whose_every_item_fails_is_an_error(tmp_path):
    class Failing(Describer):
        describer_id = "failing"

        def describe(self, requests):
            raise RuntimeError("generation failed")

    items = pd.DataFrame({"item": ["1", "2"], "text": ["a", "b"]})
    with pytest.raises(RuntimeError, match="every one of 2 item views failed"):
        pipeline.describe_items(items, "d", Failing(), views=["text"], cache_dir=tmp_path, progress=False)


def tiny_spec(tmp_path, **changes):
    return {"name": "tiny", "base": {**TINY, "train.max_epochs": 1, "output_dir": str(tmp_path / "runs")},
            "datasets": ["tiny"], "models": ["sasrec"], "seeds": [1], "methods": {"backbone": {}}, **changes}


@pytest.fixture
def tiny_data(monkeypatch):
    for module in ("dmesr.training.run", "dmesr.experiments.reevaluate"):
        monkeypatch.setattr(f"{module}.prepare_split", lambda config: make_tiny_split())
    monkeypatch.setattr("dmesr.experiments.runner.dataset_problem", lambda dataset: "", raising=False)


def test_a_grid_with_a_failed_cell_exits_non_zero_naming_it(tmp_path, tiny_data, capsys, gru4rec_cells_fail):
    experiment = tmp_path / "grid.yaml"
    experiment.write_text(json.dumps(tiny_spec(tmp_path, models=["gru4rec", "sasrec"])))
    assert main(["experiments", "run", str(experiment)]) == 1
    assert "1 cell(s) failed or cannot run: tiny/gru4rec/backbone/seed1" in capsys.readouterr().err


def test_bad_cells_are_refused_before_anything_runs_and_flagged_by_the_dry_run(tmp_path, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(runner, "train_run", lambda config, show_progress=True: trained.append(config))
    experiment = tmp_path / "grid.yaml"
    experiment.write_text(json.dumps(tiny_spec(tmp_path, models=["sasrec", "nosuchmodel"])))
    assert main(["experiments", "run", str(experiment)]) == 2
    err = capsys.readouterr().err
    assert "tiny/nosuchmodel/backbone/seed1: unknown model.name 'nosuchmodel'" in err and trained == []
    # a dataset that is neither registered nor a folder: refused before training, flagged by the dry run
    experiment.write_text(json.dumps(tiny_spec(tmp_path, datasets=["ml-100k", "no-such-data"])))
    assert main(["experiments", "run", str(experiment)]) == 2
    assert "no-such-data/sasrec/backbone/seed1: unknown dataset 'no-such-data'" in capsys.readouterr().err
    assert trained == []
    outcomes = runner.experiments_run(experiment, dry_run=True)
    assert [o.status for o in outcomes] == ["todo", "invalid"]
    assert "INVALID" in capsys.readouterr().out
    assert main(["experiments", "run", str(experiment), "--dry-run"]) == 1


# ------------------------------------------------------------------ one writer at a time


def test_a_second_trainer_of_a_run_folder_is_refused_and_a_stale_lock_taken_over(tmp_path):
    split = make_tiny_split()
    config = tiny_config(tmp_path, **{"train.max_epochs": 1})
    run_dir = run_directory(config)
    with exclusive(lock_path(run_dir), str(run_dir)):
        assert is_locked(lock_path(run_dir))
        with pytest.raises(InProgressError, match=rf"run in progress \(pid {os.getpid()}\)"):
            train_run(config, show_progress=False, split=split)
    assert not (run_dir / "epochs.jsonl").exists()
    # the lock file of a process that died (here: a finished child's pid) holds no lock
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(run_dir).write_text(dead.stdout)
    assert not is_locked(lock_path(run_dir))
    train_run(config, show_progress=False, split=split)
    assert len((run_dir / "epochs.jsonl").read_text().splitlines()) == 1
    assert not lock_path(run_dir).exists()


def test_the_grid_skips_a_cell_that_another_process_trains(tmp_path, tiny_data, capsys):
    cells = expand_grid(tiny_spec(tmp_path, seeds=[1, 2]))
    with exclusive(lock_path(cells[0].run_dir), str(cells[0].run_dir)):
        assert runner.cell_status(cells[0]) == "running"
        outcomes = runner.run_grid(cells, show_progress=False)
    assert [o.status for o in outcomes] == ["running", "finished"]
    assert not (cells[0].run_dir / "final.json").exists()
    assert "1 skipped (another process trains them)" in capsys.readouterr().out


def test_a_second_enrich_writer_of_a_cache_file_is_refused(tmp_path):
    class Counting(Describer):
        describer_id = "counting"

        def describe(self, requests):
            return [f"about {r.item}" for r in requests]

    items = pd.DataFrame({"item": ["1", "2"], "text": ["a", "b"]})
    path = tmp_path / "counting.all.jsonl"  # the file this describer appends to
    with exclusive(path.with_name(path.name + ".lock"), str(path)):
        with pytest.raises(InProgressError, match=rf"pid {os.getpid()}"):
            pipeline.describe_items(items, "d", Counting(), views=["text"], cache_dir=tmp_path, progress=False)
    assert not path.exists()
    assert pipeline.describe_items(items, "d", Counting(), views=["text"], cache_dir=tmp_path,
                                   progress=False)["done"] == 2


# ------------------------------------------------------------------ torn files


def test_a_torn_epoch_log_line_is_skipped_and_the_run_resumes(tmp_path, caplog):
    split = make_tiny_split()
    config = tiny_config(tmp_path, **{"train.max_epochs": 2})
    run_dir = train_run(config, show_progress=False, split=split)
    final = json.loads((run_dir / "final.json").read_text())
    (run_dir / "final.json").unlink()  # killed after the last epoch's checkpoint, mid-way through a log line
    with open(run_dir / "epochs.jsonl", "a") as handle:
        handle.write('{"epoch": 3, "loss": 1.2, "train_')
    train_run(config, show_progress=False, split=split)
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert f"{run_dir / 'epochs.jsonl'}:3: skipping a torn or unreadable line" in caplog.text
    assert json.loads((run_dir / "final.json").read_text())["valid"] == final["valid"]


def test_final_json_takes_the_best_epoch_from_the_checkpoint_not_the_log(tmp_path):
    split = make_tiny_split()
    config = tiny_config(tmp_path, **{"train.max_epochs": 2})
    run_dir = train_run(config, show_progress=False, split=split)
    final = json.loads((run_dir / "final.json").read_text())
    state = load_checkpoint(run_dir / "checkpoint.pt")["state"]
    assert state["best_valid"] == final["valid"] and len(state["epoch_train_seconds"]) == 2
    (run_dir / "final.json").unlink()
    (run_dir / "epochs.jsonl").write_text("")  # the log lost (a kill while it was rewritten)
    train_run(config, show_progress=False, split=split)
    again = json.loads((run_dir / "final.json").read_text())
    assert again["valid"] == final["valid"] and again["best_epoch"] == final["best_epoch"]


def test_a_log_rewrite_killed_midway_keeps_the_old_log(tmp_path, monkeypatch):
    split = make_tiny_split()
    config = tiny_config(tmp_path, **{"train.max_epochs": 2})
    run_dir = train_run(config, show_progress=False, split=split)
    (run_dir / "final.json").unlink()
    (run_dir / "checkpoint.pt").unlink()  # the resume then drops every logged epoch: a rewrite
    before = (run_dir / "epochs.jsonl").read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dmesr.paths.os.replace", killed)  # every small-file rewrite goes through paths
    monkeypatch.setattr("dmesr.paths.Path.write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, show_progress=False, split=split)
    assert (run_dir / "epochs.jsonl").read_text() == before


def test_an_unreadable_checkpoint_is_named_with_what_to_do(tmp_path):
    split = make_tiny_split()
    config = tiny_config(tmp_path, **{"train.max_epochs": 1})
    run_dir = train_run(config, show_progress=False, split=split)
    (run_dir / "final.json").unlink()
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated
    with pytest.raises(RuntimeError) as error:
        train_run(tiny_config(tmp_path, **{"train.max_epochs": 1}), show_progress=False, split=split)
    message = str(error.value)
    assert str(checkpoint) in message and "delete it" in message and "weights_only=False" not in message
    assert "\n" not in message


def test_a_whole_last_cache_record_without_newline_is_kept_as_read(tmp_path):
    record = dict(dataset="d", item="1", view="text", describer="x", prompt_hash="h", description="one")
    path = tmp_path / "x.all.jsonl"
    path.write_text(json.dumps(record))  # whole, but the newline was never written
    cache = DescriptionCache(tmp_path, "d")
    assert len(cache.done_keys()) == 1
    CacheWriter(path).append([dict(record, item="2")])
    assert [r["item"] for r in read_jsonl_records(path)] == ["1", "2"]


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "-1"], "train.max_epochs must be >= 1, got -1"),
    (["--set", "train.patience=0"], "train.patience must be >= 1, got 0"),
    (["--set", "train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    (["--set", "train.seed=1.7"], "config key 'train.seed' expects an integer, got 1.7"),
    (["--items", "bogus"], "unknown items.kind 'bogus'; known: id, text"),
    (["--model", "nosuch"], "unknown model.name 'nosuch'"),
    (["--set", "train.lr=-1"], "train.lr must be >= 0"),
])
def test_bad_settings_are_one_line_and_leave_no_run_folder(tmp_path, flags, message, capsys):
    assert main(["train", "--output-dir", str(tmp_path / "runs"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_yaml_integers_refuse_fractions(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {seed: 1.7}\n")
    with pytest.raises(ValueError, match="'train.seed' expects an integer, got 1.7"):
        load_config(config)
    config.write_text("train: {seed: 3.0}\n")  # a whole number written as a float is that number
    assert load_config(config).train.seed == 3


@pytest.mark.parametrize("options, message", [({"limit": -1}, "limit must be a whole number >= 0"),
                                              ({"batch_size": 0}, "batch_size must be a whole number >= 1")])
def test_enrich_limit_and_batch_size_are_checked(tmp_path, options, message):
    items = pd.DataFrame({"item": ["1", "2", "3"], "text": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=message):
        pipeline.describe_items(items, "d", "precomputed", views=["text"], cache_dir=tmp_path, progress=False,
                                path=tmp_path / "none.jsonl", **options)


# ------------------------------------------------------------------ odd input files


@pytest.mark.parametrize("marker", ["NA", "NaN", "null", ""])
def test_missing_value_ids_are_refused_naming_the_file(tmp_path, marker):
    folder = write_atomic(tmp_path / "d", ["u1\ti1\t1", f"u1\t{marker}\t2", "u2\ti1\t3"])
    with pytest.raises(ValueError, match=rf"{folder / 'd.inter'}: missing item id in row 1"):
        load_recbole_atomic(folder)


def test_ids_match_between_log_and_item_table_after_one_normalisation(tmp_path, caplog):
    (tmp_path / "log.csv").write_text("user,item,time\n1,1.0,10\n1,2.0,11\n2,3.0,12\n")
    (tmp_path / "items.csv").write_text("item,title\n1,Alpha\n2,Beta\n")
    raw = load_table(tmp_path / "log.csv", "user", "item", "time", items_path=tmp_path / "items.csv")
    assert list(raw.interactions["item"]) == ["1", "2", "3"]
    texts = dict(zip(raw.items["item"], raw.items["text"]))
    assert texts["1"] == "Title: Alpha." and texts["2"] == "Title: Beta."
    assert f"{tmp_path / 'items.csv'}: 1 of 3 items in the interactions have no row here" in caplog.text


def test_mixed_numbers_and_iso_times_name_the_file(tmp_path):
    (tmp_path / "log.csv").write_text("user,item,time\n1,a,881250949\n1,b,2020-01-01T00:00:00\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'log.csv'}: timestamps must be all numbers or all ISO"):
        load_table(tmp_path / "log.csv", "user", "item", "time")


@pytest.mark.parametrize("name", ["log.csv", "d/d.inter"])
def test_an_empty_file_is_named(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("")
    with pytest.raises(ValueError, match=rf"{path}: the file is empty"):
        load_table(path, "user", "item", "time") if name.endswith(".csv") else load_recbole_atomic(path.parent)


def test_a_missing_column_names_the_file(tmp_path):
    folder = write_atomic(tmp_path / "d", ["u1\ti1"], header="user_id:token\titem_id:token")
    with pytest.raises(ValueError, match=rf"{folder / 'd.inter'}: missing required column 'timestamp'"):
        load_recbole_atomic(folder)


# ------------------------------------------------------------------ the command line


def test_ctrl_c_is_one_line_saying_where_the_run_resumes(tmp_path, monkeypatch, capsys):
    def interrupted(config, show_progress=True):
        raise KeyboardInterrupt

    monkeypatch.setattr("dmesr.training.run.train_run", interrupted)
    assert main(["train", "--output-dir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "interrupted; rerun the same command to resume" in err and str(tmp_path) in err


def test_bad_yaml_is_one_line_naming_the_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train: {lr: 0.1\nmodel: [\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(config) in err and "not valid YAML" in err


def test_a_waiting_writer_queues_behind_the_holder_instead_of_failing(tmp_path):
    import threading

    path, order = tmp_path / ".lock", []
    held, release = threading.Event(), threading.Event()

    def holder():
        with exclusive(path, "the store"):
            held.set()
            release.wait(5)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with pytest.raises(InProgressError):
        with exclusive(path, "the store"):
            pass
    threading.Timer(0.2, release.set).start()
    with exclusive(path, "the store", wait=True):
        order.append("waiter in")
    thread.join()
    assert order == ["holder done", "waiter in"] and not path.exists()
