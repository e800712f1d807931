"""One training run from a config: data -> model -> trainer -> test of the best checkpoint.

A run directory is named by what was run and its identity (the hash of the settings in effect,
:func:`dmesr.config.config_hash`),
``<output_dir>/<dataset key>/<model>/<item kind>-<hash>-seed<seed>`` (the key: see
:mod:`dmesr.data.identity`), and holds
``config.yaml`` (resolved config), ``data.json`` (data fingerprint and statistics), the trainer's
files, and after the test ``final.json`` + ``test_per_user.npz`` (per-user metrics for paired
significance tests). Running the same config again resumes or, when finished, returns at once.
One process trains a run directory at a time: it holds ``<run dir>/.lock`` (:mod:`dmesr.lock`)
and a second one is refused with "run in progress (pid N)".
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dmesr.config import RunConfig, config_hash, save_config, saved_run_config
from dmesr.data import prepare_split
from dmesr.data.batches import evaluation_inputs
from dmesr.data.identity import dataset_key
from dmesr.data.images import dataset_image_counts
from dmesr.data.own import registration, restore_registration
from dmesr.data.repeats import has_repeats, repeat_share
from dmesr.data.schema import SequenceSplit
from dmesr.enrich.features import SemanticFeatures
from dmesr.evaluation import breakdown, evaluate, item_popularity
from dmesr.evaluation.protocols import excludes_history
from dmesr.lock import exclusive
from dmesr.models import BASELINES, build_model
from dmesr.models.base import SequentialRecommender
from dmesr.models.controls import apply_control
from dmesr.models.item_encoders import build_item_representation
from dmesr.paths import write_atomically
from dmesr.training.distributed import DistContext, barrier, init_distributed, shutdown
from dmesr.training.runtime import load_checkpoint, seed_everything, select_device, set_threads
from dmesr.training.trainer import Trainer, read_epoch_log


def run_directory(config: RunConfig) -> Path:
    return (Path(config.output_dir) / dataset_key(config.data.dataset) / config.model.name
            / f"{config.items.kind}-{config_hash(config)}-seed{config.train.seed}")


def lock_path(run_dir: Path) -> Path:
    """The lock file of the process that trains ``run_dir``."""
    return Path(run_dir) / ".lock"


def load_run_features(config: RunConfig, split: SequenceSplit) -> SemanticFeatures | None:
    """The cached semantic features a non-ID item encoder needs, aligned to the split's items."""
    if config.items.kind == "id":
        return None
    from dmesr.enrich.pipeline import load_dataset_features  # only semantic runs need the caches

    features = load_dataset_features(config.data.dataset, config.items).aligned_to(split.item_ids)
    return apply_control(features, config.items.control)


def build_run_model(config: RunConfig, split: SequenceSplit, features: SemanticFeatures | None = None
                    ) -> SequentialRecommender:
    if config.model.name in BASELINES:
        if config.items.kind != "id":
            raise ValueError(f"model {config.model.name!r} is a baseline without item vectors; use items.kind=id")
        if config.model.name == "repeat-pop":
            return BASELINES["repeat-pop"](item_popularity(split), config.data.max_len,
                                           whole_history=config.model.repeat_history == "all")
        return BASELINES[config.model.name](item_popularity(split), config.data.max_len)
    features = features if features is not None else load_run_features(config, split)
    items = build_item_representation(config.items, split.num_items, config.model.hidden_size, features)
    return build_model(config.model, items, config.data.max_len)


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def hardware_kind(name: str) -> str:
    """What a run's :func:`hardware` says about its speed: a CPU's thread count is left out."""
    return "CPU" if name.endswith(" threads") else name


def resolved_evaluation(config: RunConfig, split: SequenceSplit) -> RunConfig:
    """``config`` with ``eval.exclude_history`` resolved for ``split`` (``auto``: true only without repeat
    consumption): done once when a run starts; the run then trains, checks, tests and records with this
    plain value."""
    exclude = excludes_history(config.eval, has_repeats(split))
    return replace(config, eval=replace(config.eval, exclude_history=exclude))


def _check_same_run(run_dir: Path, config: RunConfig, split: SequenceSplit,
                    features: SemanticFeatures | None = None) -> None:
    if config_hash(saved_run_config(run_dir)) != config_hash(config):
        raise ValueError(f"{run_dir} holds a run with a different config; choose another output_dir")
    saved_data = json.loads((run_dir / "data.json").read_text())
    check_trained_on(run_dir, saved_data, split)
    chosen = resolved_evaluation(config, split).eval.exclude_history
    if saved_data.get("exclude_history", chosen) != chosen:
        raise ValueError(f"{run_dir} holds a run evaluated with exclude_history={saved_data['exclude_history']}, "
                         f"this config gives {chosen}; choose another output_dir")
    saved_features = saved_data.get("features") or {}
    if features is not None and saved_features.get("source_fingerprint") != features.meta.get("source_fingerprint"):
        raise ValueError(f"{run_dir} was trained with other semantic features (descriptions or item texts changed "
                         "since); choose another output_dir or delete the run")


def train_run(config: RunConfig, show_progress: bool = True, split: SequenceSplit | None = None) -> Path:
    """Train (or resume) one run and test its best checkpoint once. Returns the run directory."""
    set_threads(config.train.num_threads)
    device = select_device(config.train.device)
    dist_context = init_distributed(device)
    if dist_context.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_context.local_rank)
    try:
        run_dir = _train_run(config, device, dist_context, show_progress, split)
        # The other ranks finish before rank 0 has tested: they wait here, so that no rank tears its
        # connections down while another still holds them (gloo can abort the process then).
        barrier(dist_context)
        return run_dir
    finally:
        shutdown(dist_context)


def _train_run(config: RunConfig, device: torch.device, dist_context: DistContext, show_progress: bool,
               split: SequenceSplit | None) -> Path:
    split = split or prepare_split(config.data)
    run_dir = run_directory(config)
    features = load_run_features(config, split) if config.model.name not in BASELINES else None
    if not dist_context.is_main:  # rank 0 holds the lock for all ranks
        return _train_locked(config, device, dist_context, show_progress, split, run_dir, features)
    created = not run_dir.exists()
    try:
        with exclusive(lock_path(run_dir), str(run_dir)):
            return _train_locked(config, device, dist_context, show_progress, split, run_dir, features)
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # nothing was written: leave no empty run folder behind
        raise


def _train_locked(config: RunConfig, device: torch.device, dist_context: DistContext, show_progress: bool,
                  split: SequenceSplit, run_dir: Path, features: SemanticFeatures | None) -> Path:
    resolved = resolved_evaluation(config, split)
    exclude = resolved.eval.exclude_history
    if (run_dir / "config.yaml").exists():
        _check_same_run(run_dir, config, split, features)
        if (run_dir / "final.json").exists():
            if dist_context.is_main and show_progress:
                print(f"finished run found, nothing to do: {run_dir}")
            return run_dir
    if not (run_dir / "config.yaml").exists() and dist_context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        provenance = {"fingerprint": split.fingerprint, "stats": split.stats,
                      "features": None if features is None else features.meta,
                      "source": registration(config.data.dataset),  # how to rebuild the split later
                      "exclude_history": exclude}
        images = dataset_image_counts(config.data.dataset, split.items)
        if images is not None:  # how many items have a picture, and why the others have none
            provenance["images"] = images
        (run_dir / "data.json").write_text(json.dumps(provenance, indent=2, default=str))

    seed_everything(config.train.seed, config.train.deterministic)
    model = build_run_model(config, split, features)
    trainer = Trainer(model, split, resolved, run_dir, device, dist_context, show_progress)
    if show_progress and dist_context.is_main:
        print(describe_training(config, split, trainer.train_windows, exclude))
    state = trainer.fit()
    if not dist_context.is_main:
        return run_dir
    trainer.load_best()
    started = time.perf_counter()
    result, groups = test_model(model, split, resolved, device)
    eval_seconds = time.perf_counter() - started
    # the best epoch's row and the epoch times come from the checkpoint's state; the log is read only
    # for a run whose checkpoint predates them
    complete = bool(state.best_valid) and len(state.epoch_train_seconds) == state.epoch
    epochs = [] if complete else read_epoch_log(run_dir / "epochs.jsonl")
    best_valid = state.best_valid or next((row for row in epochs if row["epoch"] == state.best_epoch), None)
    if best_valid is None:
        raise ValueError(f"{run_dir / 'epochs.jsonl'} lacks the row of best epoch {state.best_epoch} and the "
                         "checkpoint predates keeping it; delete the run folder to train it again")
    epoch_seconds = state.epoch_train_seconds if complete else [row["train_seconds"] for row in epochs]
    final = {
        "dataset": split.name, "model": config.model.name, "items": config.items.kind, "seed": config.train.seed,
        "best_epoch": state.best_epoch, "epochs": state.epoch, "stopped": state.stopped,
        "valid": best_valid,
        "test": result.metrics, "test_breakdown": groups,
        "seconds": {"train_total": round(state.train_seconds, 2), "to_best": round(state.seconds_to_best, 2),
                    "train_epoch_median": float(np.median(epoch_seconds)),
                    "test_evaluation": round(eval_seconds, 3)},
        "trained_share": trained_share(config, trainer.train_windows),
        "exclude_history": exclude,
        "hardware": hardware(), "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    np.savez_compressed(run_dir / "test_per_user.npz", **result.per_user)  # kept with every run: compressed
    write_atomically(run_dir / "final.json", json.dumps(final, indent=2))
    if show_progress:
        print("test  " + "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.endswith("@10")))
        print(f"wrote {run_dir}")
    return run_dir


def trained_share(config: RunConfig, windows) -> float:
    """The share of training interactions the model learns from: all of them for a baseline (its
    popularity counts every one), else those its training windows hold."""
    if config.model.name in BASELINES:
        return 1.0
    return round(windows.covered_interactions / max(windows.train_interactions, 1), 4)


def describe_training(config: RunConfig, split: SequenceSplit, windows, exclude: bool) -> str:
    """One line on what training sees: windows, the share of training interactions they hold, and
    the evaluation choice ``exclude`` that ``eval.exclude_history`` made for this data."""
    share = windows.covered_interactions / max(windows.train_interactions, 1)
    stride = config.train.window_stride
    mode = f"windows every {stride} items, each training its last {stride} targets" if stride else \
        "windows over whole histories" if config.train.all_windows else \
        f"one window per user, at most its last max_len + 1 = {config.data.max_len + 1} items"
    hint = "" if config.train.all_windows or share >= 1 else "; train.all_windows=true trains on all of them"
    why = f"{repeat_share(split):.1%} of interactions are repeats" if exclude is False else "no repeat consumption"
    seen = (f"nothing to train: {config.model.name} counts all {windows.train_interactions:,} training interactions"
            if config.model.name in BASELINES else
            f"training on {len(windows)} windows ({mode}): {windows.covered_interactions:,} of "
            f"{windows.train_interactions:,} training interactions ({share:.1%}){hint}")
    return f"{seen}\nevaluation: exclude_history={config.eval.exclude_history} -> {str(exclude).lower()} ({why})"


def test_model(model: SequentialRecommender, split: SequenceSplit, config: RunConfig, device: torch.device):
    """The single test-split evaluation of a selected model: metrics and head/tail, short/long groups."""
    inputs = evaluation_inputs(split, "test", config.data.max_len)
    result = evaluate(model, inputs, config.eval, device)
    return result, breakdown(result, inputs, split, config.eval)


def load_finished_run(run_dir: str | Path, split: SequenceSplit | None = None
                      ) -> tuple[RunConfig, SequenceSplit, SequentialRecommender]:
    """A finished run's config, data (default: rebuilt from its config) and best checkpoint, after
    checking that the data and the semantic features are the ones it was trained with."""
    run_dir = Path(run_dir)
    if not (run_dir / "best.pt").exists():
        raise FileNotFoundError(f"{run_dir} has no best.pt: not a finished dmesr run directory")
    config = saved_run_config(run_dir)
    split = split or load_run_split(run_dir)
    features = load_run_features(config, split) if config.model.name not in BASELINES else None
    _check_same_run(run_dir, config, split, features)
    model = build_run_model(config, split, features)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    return config, split, model


def check_trained_on(run_dir: Path, saved_data: dict, split: SequenceSplit) -> None:
    """Refuse ``split`` unless it is the one the run recorded in its data.json (same fingerprint)."""
    if saved_data["fingerprint"] == split.fingerprint:
        return
    why = ""
    source, current = saved_data.get("source"), registration(split.name)
    if source and current and source.get("content") != current.get("content"):
        why = (f"; this data home's registration of {split.name} has other files or columns than the run's "
               f"(content {str(current.get('content'))[:8]}, the run's {str(source.get('content'))[:8]})")
    raise ValueError(f"{run_dir} was trained on other data (fingerprint {saved_data['fingerprint'][:12]}, now "
                     f"{split.fingerprint[:12]}){why}")


def load_run_split(run_dir: str | Path) -> SequenceSplit:
    """The split a run was trained on, rebuilt from its config (and, for a dataset added with
    ``dmesr data add`` that this data home does not know, the registration saved in data.json),
    checked against the fingerprint the run recorded: other data is refused, never used in its name."""
    run_dir = Path(run_dir)
    data_file = run_dir / "data.json"
    saved_data = json.loads(data_file.read_text()) if data_file.exists() else {}
    if saved_data.get("source"):
        restore_registration(saved_data["source"])
    split = prepare_split(saved_run_config(run_dir).data)
    if saved_data:
        check_trained_on(run_dir, saved_data, split)
    return split


def evaluate_run(run_dir: str | Path, protocol: str | None = None, device: str = "auto",
                 split: SequenceSplit | None = None) -> Path:
    """Re-evaluate a finished run's best checkpoint on the test split, e.g. with the sampled protocol
    (``split``: the run's data, already loaded, when re-evaluating many runs of one dataset)."""
    run_dir = Path(run_dir)
    config, split, model = load_finished_run(run_dir, split)
    if protocol:
        config.eval.protocol = protocol
    config = resolved_evaluation(config, split)
    exclude = config.eval.exclude_history
    result, groups = test_model(model.to(select_device(device)), split, config, select_device(device))
    out = run_dir / f"evaluation-{config.eval.protocol}.json"
    out.write_text(json.dumps({"protocol": config.eval.protocol, "test": result.metrics, "test_breakdown": groups,
                               "exclude_history": exclude}, indent=2))
    excluded = "seen items excluded" if exclude else "every item ranked"
    print("  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.endswith("@10")) + f"  ({excluded})")
    print(f"wrote {out}")
    return out
