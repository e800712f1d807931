"""Hyperparameter search on validation NDCG@10: Optuna TPE, pruning, one SQLite study per method.

    dmesr tune configs/experiments/tuned.yaml --workers 2   # every (dataset, model, method) of the grid
    dmesr tune configs/experiments/tuned.yaml --cells 'ml-100k/sasrec/*'

The grid file declares the search under ``tuning``::

    tuning:
      trials: 6                      # the budget of every (dataset, model, method): the same for each
      seed: 1                        # the seed every trial trains with (default: the grid's first)
      startup_trials: 3              # TPE: random trials before it models the space
      pruner: {startup_trials: 2, warmup_epochs: 10}   # median pruning of hopeless trials
      space:                         # searched for every method
        train.lr: {low: 3.0e-4, high: 3.0e-3, log: true}
        model.dropout: {low: 0.1, high: 0.5}
        train.batch_size: {choices: [64, 128, 256]}
      per_method:                    # more dimensions (or other ranges) for one method
        dmesr: {items.align_weight: {low: 0.01, high: 1.0, log: true}}
      output_dir: runs/x-tuning      # default: the grid's output folder + "-tuning"

A dimension with integer bounds draws integers. Each trial trains the grid's cell config with the
sampled settings on top, and is scored by its best validation NDCG@10 (early stopping as configured).
The test split is never evaluated here: the best settings are run with every seed afterwards, by the
experiment files this writes (``best/<dataset>-<model>.yaml``), and only those runs are tested.

Pruning: each epoch's validation NDCG@10 is reported to the trial; the median pruner stops a trial
whose best score so far is below the median of the earlier trials at the same epoch.

The budget and interruptions: every study lives in ``<output_dir>/study.db`` (SQLite; any database URL
Optuna takes would let workers on several machines share it, given a shared folder for the trials'
files). A trial counts toward the budget once it is complete, pruned, or failed with an error (recorded
as the trial's ``error``). A trial whose process died (a kill, Ctrl-C) holds no lock on its run folder
any more: the next worker marks it failed and not counted, and queues its settings again, so the trial
resumes in the same folder from its last finished epoch. Nothing is trained twice, and the number of
counted trials ends at the budget. Workers (``--workers N`` here, or more ``dmesr tune`` processes)
share the studies: each takes the next trial under a lock on the study file.

After the workers end, ``summary.json`` and ``summary.md`` say per study: the budget, trials complete /
pruned / failed / interrupted, the best validation NDCG@10 and settings, and the training time spent.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from dmesr.config import load_config, merge_overrides, nested_overrides, save_config
from dmesr.data.identity import dataset_key
from dmesr.experiments.grid import AXIS_KEYS, Cell, expand_grid, read_experiment
from dmesr.experiments.runner import exit_with_parent, with_thread_share
from dmesr.lock import exclusive, is_locked
from dmesr.markdown import markdown_table, short_value
from dmesr.paths import write_atomically
from dmesr.training.trainer import SELECTION_METRIC, read_epoch_log

TUNING_KEYS = ("trials", "seed", "startup_trials", "pruner", "space", "per_method", "output_dir")
PRUNER_KEYS = ("startup_trials", "warmup_epochs")
DIMENSION_KEYS = ("low", "high", "log", "step", "choices")
VALID_SCORE = f"valid_{SELECTION_METRIC}"


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (``low``..``high``, optionally log-scaled or stepped) or ``choices``."""

    key: str  # dotted config key, e.g. train.lr
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class TuningSpec:
    trials: int
    seed: int
    startup_trials: int
    pruner_startup_trials: int
    warmup_epochs: int
    space: dict  # method -> {key: Dimension}
    output_dir: Path


@dataclass(frozen=True)
class Study:
    """One (dataset, model, method) cell of the grid, searched with its own Optuna study."""

    cell: Cell  # the grid's config of this cell, with the tuning seed
    dimensions: tuple[Dimension, ...]

    @property
    def name(self) -> str:
        return f"{dataset_key(self.cell.dataset)}/{self.cell.model}/{self.cell.method}"


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    if not isinstance(spec, dict) or set(spec) - set(DIMENSION_KEYS):
        raise ValueError(f"{where}: {key} must be a mapping with keys from {', '.join(DIMENSION_KEYS)}, got {spec!r}")
    if tuple(key.split(".")) in AXIS_KEYS:
        raise ValueError(f"{where}: {key} is an axis of the grid ('{AXIS_KEYS[tuple(key.split('.'))]}'), not searched")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices or set(spec) != {"choices"}:
            raise ValueError(f"{where}: {key}: choices must be a non-empty list, and alone")
        dimension = Dimension(key, choices=tuple(choices))
        values = choices
    else:
        if "low" not in spec or "high" not in spec:
            raise ValueError(f"{where}: {key} needs low and high (or choices)")
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise ValueError(f"{where}: {key} needs numbers low < high, got {low!r}, {high!r}")
        if spec.get("log") and low <= 0:
            raise ValueError(f"{where}: {key} is log-scaled: low must be > 0, got {low!r}")
        dimension = Dimension(key, low, high, bool(spec.get("log", False)), spec.get("step"))
        values = [low, high]
    for value in values:  # a typo in the key, or a value the setting refuses, is found before any trial
        try:
            load_config(overrides=nested_overrides({key: value}))
        except ValueError as error:
            raise ValueError(f"{where}: {key}={value!r}: {error}") from None
    return dimension


def _space(spec: Any, where: str) -> dict[str, Dimension]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must map config keys to ranges, got {spec!r}")
    return {str(key): _dimension(str(key), value, where) for key, value in spec.items()}


def tuning_spec(spec: dict, source: str | Path = "experiment") -> TuningSpec:
    """The ``tuning`` section of an experiment mapping, checked (see the module docstring)."""
    tuning = spec.get("tuning")
    if not isinstance(tuning, dict):
        raise ValueError(f"{source}: no 'tuning' section: add one to search settings (dmesr.experiments.tuning)")
    unknown = sorted(set(tuning) - set(TUNING_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown tuning key(s) {', '.join(unknown)}; known: {', '.join(TUNING_KEYS)}")
    pruner = tuning.get("pruner") or {}
    if not isinstance(pruner, dict) or set(pruner) - set(PRUNER_KEYS):
        raise ValueError(f"{source}: tuning.pruner must be a mapping with keys from {', '.join(PRUNER_KEYS)}")
    numbers = {"trials": (tuning.get("trials"), 1), "startup_trials": (tuning.get("startup_trials", 3), 0),
               "pruner.startup_trials": (pruner.get("startup_trials", 2), 0),
               "pruner.warmup_epochs": (pruner.get("warmup_epochs", 10), 0)}
    for key, (value, lowest) in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise ValueError(f"{source}: tuning.{key} must be an integer >= {lowest}, got {value!r}")
    methods = [str(m) for m in spec.get("methods") or {}]
    shared = _space(tuning.get("space"), f"{source}: tuning.space")
    per_method = tuning.get("per_method") or {}
    if not isinstance(per_method, dict):
        raise ValueError(f"{source}: tuning.per_method must map method names to ranges")
    for method in per_method:
        if method not in methods:
            raise ValueError(f"{source}: tuning.per_method names {method!r}, which is not a method ({methods})")
    space = {method: {**shared, **_space(per_method.get(method), f"{source}: tuning.per_method.{method}")}
             for method in methods}
    empty = [method for method, dimensions in space.items() if not dimensions]
    if empty:
        raise ValueError(f"{source}: nothing to search for method(s) {', '.join(empty)}: give tuning.space")
    seeds = spec.get("seeds") or [0]
    output_dir = tuning.get("output_dir") or f"{_grid_output_dir(spec)}-tuning"
    return TuningSpec(numbers["trials"][0], int(tuning.get("seed", seeds[0])), numbers["startup_trials"][0],
                      numbers["pruner.startup_trials"][0], numbers["pruner.warmup_epochs"][0], space,
                      Path(output_dir))


def _grid_output_dir(spec: dict) -> str:
    """Where the grid's own runs go (dmesr.experiments.grid): ``base.output_dir``, else ``runs/<name>``."""
    base = nested_overrides((spec.get("base") or {}), "base")
    return str(base.get("output_dir") or Path("runs") / str(spec.get("name")))


def load_tuning(path: str | Path, cells: list[str] | None = None) -> tuple[dict, TuningSpec, list[Study]]:
    """The experiment mapping, its tuning spec, and one study per (dataset, model, method) of its grid
    (``cells``: globs on ``dataset/model/method``, like ``--cells`` of the grid runner)."""
    spec = read_experiment(path)
    tuning = tuning_spec(spec, path)
    grid = {key: value for key, value in spec.items() if key != "tuning"}
    grid["seeds"] = [tuning.seed]
    studies = [Study(cell, tuple(tuning.space[cell.method].values())) for cell in expand_grid(grid, path)]
    if cells:
        studies = [study for study in studies if any(fnmatch.fnmatchcase(study.name, glob) for glob in cells)]
        if not studies:
            raise ValueError(f"{path}: no (dataset/model/method) matches {', '.join(cells)}")
    return spec, tuning, studies


# ----------------------------------------------------------------------------- one trial
def trial_config(study: Study, params: dict[str, Any], output_dir: Path):
    """The cell's config with the trial's settings on top."""
    overrides = merge_overrides(study.cell.config.to_dict(), nested_overrides(copy.deepcopy(params)))
    overrides["output_dir"] = str(output_dir)
    return load_config(overrides=overrides)


_SPLITS: dict = {}  # a worker's splits, by data config: loaded once for all its trials


def train_trial(config, run_dir: Path, on_epoch) -> Any:
    """Train (or resume) one trial's model in ``run_dir``, calling ``on_epoch(row)`` after each epoch;
    returns the trainer's final state. Validation only: nothing here looks at the test split."""
    from dmesr.data import prepare_split
    from dmesr.models import BASELINES
    from dmesr.training.run import build_run_model, load_run_features
    from dmesr.training.runtime import seed_everything, select_device, set_threads
    from dmesr.training.trainer import Trainer

    set_threads(config.train.num_threads)
    key = json.dumps(config.to_dict()["data"], sort_keys=True)
    split = _SPLITS.get(key) or _SPLITS.setdefault(key, prepare_split(config.data))
    features = load_run_features(config, split) if config.model.name not in BASELINES else None
    if (run_dir / "checkpoint.pt").exists():
        if (run_dir / "config.yaml").read_text() != yaml.safe_dump(config.to_dict(), sort_keys=False):
            raise ValueError(f"{run_dir} holds a trial with other settings; delete it or choose another output_dir")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    seed_everything(config.train.seed, config.train.deterministic)
    model = build_run_model(config, split, features)
    trainer = Trainer(model, split, config, run_dir, select_device(config.train.device), show_progress=False)
    return trainer.fit(on_epoch)


def _run_name(trial) -> str:
    """A trial's folder: its own number, or the number of the interrupted trial it continues."""
    return trial.user_attrs.get("run") or f"trial-{trial.number:04d}"


def _trial_dir(output_dir: Path, study: Study, run: str) -> Path:
    return output_dir / study.name / run


def _counted(trial) -> bool:
    """Whether a finished trial spends the budget: complete, pruned, or failed by an error (not a kill)."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return trial.state in states or (trial.state == optuna.trial.TrialState.FAIL and "error" in trial.user_attrs)


def _requeue_interrupted(optuna_study, study: Study, output_dir: Path) -> None:
    """Running trials whose process is gone (their run folder unlocked) are failed, not counted, and their
    settings queued again, to resume in the same folder."""
    import optuna

    for trial in optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_dir = _trial_dir(output_dir, study, _run_name(trial))
        if is_locked(run_dir / ".lock"):
            continue
        optuna_study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        optuna_study.enqueue_trial(trial.params, user_attrs={"run": _run_name(trial), "continues": trial.number})
        print(f"{study.name}: trial {trial.number} was interrupted; queued again to resume in {run_dir}")


def storage_url(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir / 'study.db').resolve()}"


def open_study(study: Study, tuning: TuningSpec, worker: int = 0):
    """The Optuna study of ``study`` (created on first use), with a sampler seeded by the tuning seed, this
    worker and the trials so far: a rerun does not draw the startup trials it already drew."""
    import optuna

    storage = optuna.storages.RDBStorage(storage_url(tuning.output_dir),
                                         engine_kwargs={"connect_args": {"timeout": 120}})
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tuning.pruner_startup_trials,
                                         n_warmup_steps=tuning.warmup_epochs)
    existing = optuna.create_study(study_name=study.name, storage=storage, direction="maximize",
                                   load_if_exists=True)
    seed = tuning.seed * 1_000_003 + worker * 10_007 + len(existing.trials)
    sampler = optuna.samplers.TPESampler(n_startup_trials=tuning.startup_trials, seed=seed, constant_liar=True)
    return optuna.create_study(study_name=study.name, storage=storage, direction="maximize", sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def tune_study(study: Study, tuning: TuningSpec, worker: int = 0, show_progress: bool = True) -> list[str]:
    """Run trials of one study until its budget is spent (or taken by other workers); returns the errors."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning.output_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(tuning.output_dir / "study.lock", "the tuning studies", wait=True):  # one creates the tables
        optuna_study = open_study(study, tuning, worker)
    errors = []
    while True:
        with contextlib.ExitStack() as held:
            with exclusive(tuning.output_dir / "study.lock", "the tuning studies", wait=True):
                _requeue_interrupted(optuna_study, study, tuning.output_dir)
                trials = optuna_study.get_trials(deepcopy=False)
                taken = sum(_counted(t) or t.state == optuna.trial.TrialState.RUNNING for t in trials)
                if taken >= tuning.trials:
                    return errors
                trial = optuna_study.ask()
                run_dir = _trial_dir(tuning.output_dir, study, _run_name(trial))
                held.enter_context(exclusive(run_dir / ".lock", str(run_dir)))  # before the study lock is let go
            errors += _run_trial(optuna_study, trial, study, tuning, run_dir, show_progress)


def _run_trial(optuna_study, trial, study: Study, tuning: TuningSpec, run_dir: Path, show_progress: bool) -> list[str]:
    import optuna

    started = time.perf_counter()
    last = {"epoch": 0}

    def report(row: dict) -> None:
        last["epoch"] = row["epoch"]
        trial.report(row[VALID_SCORE], row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    try:
        params = {dimension.key: dimension.suggest(trial) for dimension in study.dimensions}
        trial.set_user_attr("run", _run_name(trial))
        state = train_trial(trial_config(study, params, tuning.output_dir), run_dir, report)
    except optuna.TrialPruned:
        trial.set_user_attr("epochs", last["epoch"])
        optuna_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        outcome = f"pruned after epoch {last['epoch']}"
    except Exception as error:  # noqa: BLE001 - a failed trial is recorded and counted; the study goes on
        trial.set_user_attr("error", f"{type(error).__name__}: {error}")
        optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if show_progress:
            print(f"{study.name}: trial {trial.number} failed: {type(error).__name__}: {error}")
        return [f"{study.name} trial {trial.number}: {type(error).__name__}: {error}"]
    else:
        trial.set_user_attr("epochs", state.epoch)
        trial.set_user_attr("best_epoch", state.best_epoch)
        optuna_study.tell(trial, state.best_score)
        outcome = f"valid {SELECTION_METRIC} {state.best_score:.4f} @ epoch {state.best_epoch}/{state.epoch}"
    if show_progress:
        print(f"{study.name}: trial {trial.number} {outcome} ({time.perf_counter() - started:.0f} s) "
              f"{json.dumps(trial.params)}")
    return []


# ----------------------------------------------------------------------------- workers, summary
def tune_worker(path: str, cells: list[str] | None, workers: int, threads: int | None, worker: int,
                output_dir: str | None, show_progress: bool = True) -> list[str]:
    """One worker: every study of the grid in turn, as long as each has budget left. Top-level so that
    spawned worker processes can import it."""
    _, tuning, studies = load_tuning(path, cells)
    if output_dir:
        tuning = replace(tuning, output_dir=Path(output_dir))
    errors = []
    for study in studies:
        study = replace(study, cell=with_thread_share(study.cell, workers, threads))
        errors += tune_study(study, tuning, worker, show_progress)
    return errors


def tune(path: str | Path, workers: int = 1, threads: int | None = None, cells: list[str] | None = None,
         output_dir: str | Path | None = None, show_progress: bool = True) -> dict:
    """Search every study of the grid file ``path`` to its budget with ``workers`` processes; writes and
    returns the summary (errors of failed trials under ``"errors"``)."""
    spec, tuning, studies = load_tuning(path, cells)  # a bad file stops here, before any worker starts
    if output_dir:
        tuning = replace(tuning, output_dir=Path(output_dir))
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    arguments = (str(path), cells, workers, threads)
    if workers == 1:
        errors = tune_worker(*arguments, 0, str(tuning.output_dir), show_progress)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=exit_with_parent) as pool:
            futures = [pool.submit(tune_worker, *arguments, worker, str(tuning.output_dir), show_progress)
                       for worker in range(workers)]
            errors = [error for future in as_completed(futures) for error in future.result()]
    summary = write_summary(spec, tuning, studies, str(path))
    return {**summary, "errors": errors, "markdown": str(tuning.output_dir / "summary.md")}


def study_summary(study: Study, tuning: TuningSpec) -> dict:
    """What one study spent and found; the training seconds are summed over every trial's epoch log."""
    import optuna

    optuna_study = optuna.load_study(study_name=study.name, storage=storage_url(tuning.output_dir))
    trials = optuna_study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    complete = [t for t in trials if t.state == states.COMPLETE]
    runs = {_run_name(t) for t in trials}
    seconds = sum(row.get("epoch_seconds", 0.0) for run in runs
                  for row in read_epoch_log(_trial_dir(tuning.output_dir, study, run) / "epochs.jsonl"))
    best = max(complete, key=lambda t: t.value) if complete else None
    return {"study": study.name, "dataset": study.cell.dataset, "model": study.cell.model,
            "method": study.cell.method, "budget": tuning.trials, "seed": tuning.seed,
            "complete": len(complete), "pruned": sum(t.state == states.PRUNED for t in trials),
            "failed": sum(t.state == states.FAIL and "error" in t.user_attrs for t in trials),
            "interrupted": sum(t.state == states.FAIL and "error" not in t.user_attrs for t in trials),
            "running": sum(t.state == states.RUNNING for t in trials),
            "best_trial": None if best is None else best.number,
            "best_valid_ndcg10": None if best is None else round(best.value, 6),
            "best_epoch": None if best is None else best.user_attrs.get("best_epoch"),
            "best_params": {} if best is None else best.params,
            "train_seconds": round(seconds, 1),
            "space": {d.key: ({"choices": list(d.choices)} if d.choices else
                              {"low": d.low, "high": d.high, "log": d.log}) for d in study.dimensions}}


def write_summary(spec: dict, tuning: TuningSpec, studies: list[Study], source: str) -> dict:
    """``summary.json``, ``summary.md`` and, per (dataset, model), an experiment file that runs each
    method's best settings with every seed of the grid (``best/<dataset>-<model>.yaml``)."""
    rows = [study_summary(study, tuning) for study in studies]
    summary = {"source": source, "budget": tuning.trials, "seed": tuning.seed, "studies": rows}
    write_atomically(tuning.output_dir / "summary.json", json.dumps(summary, indent=2))
    write_atomically(tuning.output_dir / "summary.md", summary_markdown(summary))
    for (dataset, model), group in _by_cell(rows).items():
        write_atomically(tuning.output_dir / "best" / f"{dataset_key(dataset)}-{model}.yaml",
                         yaml.safe_dump(best_experiment(spec, dataset, model, group, source), sort_keys=False))
    return summary


def _by_cell(rows: list[dict]) -> dict:
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"]), []).append(row)
    return groups


def best_experiment(spec: dict, dataset: str, model: str, rows: list[dict], source: str) -> dict:
    """The grid restricted to one dataset and backbone, each tuned method with its best settings on top;
    its runs go to the grid's output folder + ``-tuned`` (an experiment ``<name>-tuned``)."""
    base = dict(spec.get("base") or {})
    base["output_dir"] = f"{_grid_output_dir(spec)}-tuned"
    methods = {row["method"]: merge_overrides(nested_overrides(copy.deepcopy(spec["methods"][row["method"]])),
                                              nested_overrides(copy.deepcopy(row["best_params"])))
               for row in rows if row["best_params"]}
    experiment = {"name": f"{spec['name']}-tuned",
                  "description": f"the best settings of {source}'s tuning (validation NDCG@10), every seed",
                  **({"store": spec["store"]} if "store" in spec else {}), "base": base,
                  "datasets": [dataset], "models": [model], "seeds": spec["seeds"], "methods": methods}
    for key, name in (("per_dataset", dataset), ("per_model", model)):
        if name in (spec.get(key) or {}):
            experiment[key] = {name: spec[key][name]}
    if spec.get("roles"):  # the roles of the methods this file runs
        experiment["roles"] = _roles_among(spec["roles"], list(methods))
    return experiment


def _roles_among(roles: dict, methods: list[str]) -> dict:
    kept = {}
    for role, names in roles.items():
        names = [n for n in names if n in methods] if isinstance(names, list) else names
        if names and (isinstance(names, list) or names in methods):
            kept[role] = names
    return kept


def summary_markdown(summary: dict) -> str:
    lines = [f"Tuning of `{summary['source']}`: {summary['budget']} trials per (dataset, model, method), each trained "
             f"with seed {summary['seed']} and scored by its best validation {SELECTION_METRIC} (the test split is "
             "not evaluated); pruned trials stopped early by the median pruner.", ""]
    rows = []
    for row in summary["studies"]:
        best = "–" if row["best_valid_ndcg10"] is None else f"{row['best_valid_ndcg10']:.4f}"
        settings = ", ".join(f"{key}={short_value(value)}" for key, value in row["best_params"].items()) or "–"
        rows.append([row["dataset"], row["model"], row["method"],
                     f"{row['complete']} / {row['pruned']} / {row['failed']} of {row['budget']}", row["interrupted"],
                     best, settings, f"{row['train_seconds'] / 60:.1f} min"])
    header = ["dataset", "model", "method", "trials (complete / pruned / failed)", "interrupted, resumed",
              f"best valid {SELECTION_METRIC}", "best settings", "training time"]
    return "\n".join([*lines, markdown_table(header, rows)]) + "\n"


