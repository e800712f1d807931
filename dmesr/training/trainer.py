"""The training loop: epochs over training windows, validation after each epoch, early stopping
on validation NDCG@10, the best checkpoint kept, resumable after any interruption.

Files in the run directory (all written atomically by rank 0):

* ``checkpoint.pt``  model + optimizer + RNG + trainer state after the last finished epoch
* ``best.pt``        model weights of the best validation epoch
* ``epochs.jsonl`` / ``epochs.csv``  one row per epoch: loss, validation metrics, seconds (appended;
  a torn last line left by a kill is skipped, and a rewrite goes through a temporary file)

Resuming: a new ``Trainer`` on the same run directory continues after the last finished epoch.
The epoch's shuffling depends only on (seed, epoch) and the RNG state is restored, so an
interrupted and resumed run trains exactly as an uninterrupted one. The test split is never
looked at here: :func:`dmesr.training.run.train_run` evaluates it once, for the best checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from dmesr.config import RunConfig, TrainConfig
from dmesr.data.batches import TrainWindows, evaluation_inputs
from dmesr.data.schema import SequenceSplit
from dmesr.evaluation import evaluate
from dmesr.models.base import SequentialRecommender
from dmesr.models.losses import loss_terms, total_loss
from dmesr.paths import write_atomically
from dmesr.training.distributed import DistContext, barrier
from dmesr.training.runtime import atomic_save, load_checkpoint

SELECTION_METRIC = "NDCG@10"

log = logging.getLogger(__name__)


def read_epoch_log(path: Path) -> list[dict]:
    """The rows of an ``epochs.jsonl``; a torn or unreadable line (a kill mid-write) is skipped with a
    warning naming the file, so a resume never stops on it."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a torn or unreadable line", path, number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class LossModule(nn.Module):
    """Wraps a model so that ``forward`` returns the training loss terms: what DDP needs to sync gradients."""

    def __init__(self, model: SequentialRecommender, train_config: TrainConfig):
        super().__init__()
        self.model = model
        self.train_config = train_config

    def forward(self, windows: torch.Tensor, trained: torch.Tensor | None = None,
                earlier: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return loss_terms(self.model, windows, self.train_config, trained, earlier)


def compile_loss(loss_module: nn.Module, mode: str = "default") -> nn.Module:
    """``train.compile``: the same values, fewer and fused kernels once compiled (the first steps compile).
    ``mode``: torch.compile's (the overhead benchmark also tries ``reduce-overhead``, CUDA graphs)."""
    return torch.compile(loss_module, mode=mode)


def parameter_groups(model: SequentialRecommender, trainable: list[nn.Parameter], config: TrainConfig) -> list[dict]:
    """The optimiser's parameter groups: the repeat head's own at ``train.repeat_head_lr`` when set."""
    head = model.repeat_head.parameters() if model.repeat_head is not None and config.repeat_head_lr else ()
    head = {id(parameter) for parameter in head}
    groups = [{"params": [parameter for parameter in trainable if id(parameter) not in head]}]
    if head:
        groups.append({"params": [parameter for parameter in trainable if id(parameter) in head],
                       "lr": config.repeat_head_lr})
    return groups


@dataclass
class TrainState:
    epoch: int = 0  # last finished epoch
    best_epoch: int = 0
    best_score: float = -1.0
    epochs_without_improvement: int = 0
    train_seconds: float = 0.0  # training + validation wall time so far
    seconds_to_best: float = 0.0
    stopped: str = ""  # why training ended: "patience", "max_epochs", "time budget"
    best_valid: dict = field(default_factory=dict)  # the best epoch's log row: final.json needs no log
    epoch_train_seconds: list = field(default_factory=list)  # training seconds of each finished epoch


class Trainer:
    def __init__(
        self,
        model: SequentialRecommender,
        split: SequenceSplit,
        config: RunConfig,
        run_dir: Path,
        device: torch.device,
        dist_context: DistContext | None = None,
        show_progress: bool = True,
    ):
        self.model = model.to(device)
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.dist = dist_context or DistContext()
        self.show_progress = show_progress and self.dist.is_main
        self.train_windows = TrainWindows(split, config.data.max_len, config.train.all_windows,
                                          config.train.window_stride)
        if len(self.train_windows) == 0:
            raise ValueError(f"dataset {split.name!r} has no user with at least 2 training interactions")
        self.valid_inputs = evaluation_inputs(split, "valid", config.data.max_len)
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        # a baseline (pop, repeat-pop) has nothing to train: one validation, no optimizer steps
        self.optimizer = torch.optim.Adam(parameter_groups(model, trainable, config.train), lr=config.train.lr,
                                          weight_decay=config.train.weight_decay) if trainable else None
        loss_module = LossModule(self.model, config.train)
        if self.dist.enabled and trainable:
            device_ids = [self.dist.local_rank] if device.type == "cuda" else None
            loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=device_ids)
        self.loss_module = compile_loss(loss_module) if config.train.compile else loss_module
        if config.train.compile and device.type == "cpu":
            log.warning("train.compile on a CPU makes a training step slower, several times with DMESR "
                        "(reports/dmesr.md); it is meant for GPUs")
        self.state = TrainState()

    # ----------------------------------------------------------------------------- files
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def _save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "state": asdict(self.state),
                "torch_rng": torch.get_rng_state(),
            },
            self.checkpoint_path,
        )

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            if self.dist.is_main:  # a run copied without its checkpoint starts over: no stale rows
                self._drop_logged_epochs_after(0)
            return
        saved = load_checkpoint(self.checkpoint_path)
        self.model.load_state_dict(saved["model"])
        if self.optimizer:
            self.optimizer.load_state_dict(saved["optimizer"])
        self.state = TrainState(**saved["state"])
        torch.set_rng_state(saved["torch_rng"])
        if self.dist.is_main:
            self._drop_logged_epochs_after(self.state.epoch)
            print(f"resuming {self.run_dir} after epoch {self.state.epoch}")

    def _drop_logged_epochs_after(self, epoch: int) -> None:
        """An interruption between logging and checkpointing must not leave a duplicate row on resume.

        Both logs are rewritten whole into temporary files that replace them, so a kill here leaves
        either the old or the new log, never a shortened one."""
        path = self.run_dir / "epochs.jsonl"
        if not path.exists():
            return
        rows = [row for row in read_epoch_log(path) if row["epoch"] <= epoch]
        table = io.StringIO()
        if rows:
            writer = csv.DictWriter(table, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_atomically(self.run_dir / "epochs.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        write_atomically(self.run_dir / "epochs.csv", table.getvalue())

    def _log_epoch(self, row: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.run_dir / "epochs.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        csv_path = self.run_dir / "epochs.csv"
        new_file = not csv_path.exists() or csv_path.stat().st_size == 0
        with open(csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    # ----------------------------------------------------------------------------- loop
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.train.seed * 100_003 + epoch)
        return torch.randperm(len(self.train_windows), generator=generator)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training windows: the mean ``loss`` and the mean of each of its terms."""
        self.model.train()
        batches = self._epoch_order(epoch).split(self.config.train.batch_size)
        total, count, term_sums = 0.0, 0, {}
        progress = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not self.show_progress)
        for rows in progress:
            if len(rows) < self.dist.world_size:
                continue  # every rank needs at least one row to join the gradient all-reduce
            rows = self.dist.shard(rows)
            windows = self.train_windows.windows[rows].to(self.device, non_blocking=True)
            extra = {}
            if self.config.train.window_stride:  # each window's targets that enter the loss
                extra["trained"] = self.train_windows.trained[rows].to(self.device)
            if self.model.reads_full_history:  # the repeat head over the whole history: the items before
                extra["earlier"] = self.train_windows.earlier(rows).to(self.device)
            terms = self.loss_module(windows, **extra)
            loss = total_loss(self.model, terms)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; lower train.lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            count += 1
            for name, value in terms.items():  # summed on the device: no extra wait per step
                term_sums[name] = term_sums.get(name, 0.0) + value.detach()
            progress.set_postfix(loss=f"{total / count:.4f}")
        means = {"loss": torch.tensor(total / max(count, 1), device=self.device),
                 **{f"loss_{name}": value / max(count, 1) for name, value in term_sums.items()}}
        if self.dist.enabled:  # log the loss of the whole batch, not of this rank's half
            for value in means.values():
                torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.AVG)
        return {name: value.item() for name, value in means.items()}

    def validate(self) -> dict[str, float]:
        return evaluate(self.model, self.valid_inputs, self.config.eval, self.device).metrics

    def fit(self, on_epoch: Callable[[dict], None] | None = None) -> TrainState:
        """Train until patience, ``max_epochs`` or the time budget runs out; returns the final state.

        ``on_epoch(row)``: called with each finished epoch's log row once it is checkpointed (a resumed run's
        earlier epochs first, so a caller sees the whole validation curve); what it raises stops training."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        if on_epoch is not None:
            for row in read_epoch_log(self.run_dir / "epochs.jsonl"):
                on_epoch(row)
        train = self.config.train
        budget = train.max_minutes * 60 if train.max_minutes > 0 else float("inf")
        while not self.state.stopped:
            epoch = self.state.epoch + 1
            started = time.perf_counter()
            losses = self.train_epoch(epoch) if self.optimizer else {"loss": 0.0}
            train_seconds = time.perf_counter() - started
            valid = self.validate()
            epoch_seconds = time.perf_counter() - started
            self.state.epoch = epoch
            self.state.train_seconds += epoch_seconds
            score = valid[SELECTION_METRIC]
            if score > self.state.best_score:
                self.state.best_score, self.state.best_epoch = score, epoch
                self.state.epochs_without_improvement = 0
                self.state.seconds_to_best = self.state.train_seconds
                if self.dist.is_main:
                    atomic_save({"model": self.model.state_dict()}, self.best_path)
            else:
                self.state.epochs_without_improvement += 1
            if self.optimizer is None:
                self.state.stopped = "nothing to train"
            elif self.state.epochs_without_improvement >= train.patience:
                self.state.stopped = "patience"
            elif epoch >= train.max_epochs:
                self.state.stopped = "max_epochs"
            elif self.state.train_seconds >= budget:
                self.state.stopped = "time budget"
            row = {"epoch": epoch, **{name: round(value, 6) for name, value in losses.items()},
                   "train_seconds": round(train_seconds, 3), "epoch_seconds": round(epoch_seconds, 3),
                   **{f"valid_{k}": round(v, 6) for k, v in valid.items()}}
            if self.state.best_epoch == epoch:
                self.state.best_valid = row
            self.state.epoch_train_seconds.append(row["train_seconds"])
            self._log_epoch(row)
            self._save_checkpoint()
            barrier(self.dist)
            if on_epoch is not None:
                on_epoch(row)
            if self.show_progress:
                terms = "".join(f" ({name.removeprefix('loss_')} {value:.4f})" for name, value in losses.items()
                                if name != "loss")
                print(f"epoch {epoch:3d}  loss {losses['loss']:.4f}{terms}  valid {SELECTION_METRIC} {score:.4f}  "
                      f"best {self.state.best_score:.4f} @ {self.state.best_epoch}  ({epoch_seconds:.1f}s)")
        return self.state

    def load_best(self) -> None:
        self.model.load_state_dict(load_checkpoint(self.best_path)["model"])
