"""Run an experiment grid: finished cells are skipped, interrupted ones resume, failures are listed.

    dmesr experiments run configs/experiments/main.yaml --dry-run     # each cell: done/partial/todo + time
    dmesr experiments run configs/experiments/main.yaml --workers 2   # two processes, CPU threads split
    dmesr experiments run configs/experiments/main.yaml --threads 1   # one thread: leave a core to another job
    dmesr experiments run configs/experiments/main.yaml --cells 'ml-100k/*/dmesr/*'   # some cells first

A cell is *done* when its run directory holds ``final.json`` (skipped without loading any data),
*partial* when training started (``train_run`` resumes it from ``checkpoint.pt``), else *todo*.
A failing cell is logged (traceback in ``<run dir>/error.log``) and the grid goes on; the summary
at the end lists every failure. Ctrl-C stops the whole grid, workers included; each stopped cell
resumes from its last finished epoch on the next run. With ``workers > 1`` each cell runs in its own spawned process
and ``train.num_threads`` is set to ``max(1, cores // workers)`` (unless the config sets it), so
two workers on two cores do not fight over the same cores.

Each finished cell is also scored with the sampled protocol (``evaluation-sampled.json``, see
:mod:`dmesr.experiments.reevaluate`) when its split has sampled negatives; a done cell that lacks it
(the grid was stopped between training and that evaluation) gets it on the next run.

``--shard i/n`` (0 <= i < n) runs cells ``i, i + n, i + 2n, ...`` of the grid. Grid order is fixed
by the YAML, so the n shards partition the grid exactly; interleaving spreads each dataset's
cells over every shard. A Slurm array, one GPU per shard::

    #!/bin/bash
    #SBATCH --array=0-7 --gres=gpu:1 --cpus-per-task=8 --time=24:00:00
    dmesr experiments run configs/experiments/main.yaml --shard ${SLURM_ARRAY_TASK_ID}/8

Several GPUs on one machine, one shard per GPU, then the report once all are done::

    for gpu in 0 1 2 3; do
        CUDA_VISIBLE_DEVICES=$gpu dmesr experiments run configs/experiments/main.yaml --shard $gpu/4 &
    done; wait
    dmesr report main --out reports/results.md   # each finished cell was added to the grid's store

Time estimates (dry run) use the grid's finished runs: median seconds per epoch times median
epochs of finished runs of the same dataset, minus the epochs a partial run already has. The
closest runs are used: same model and method, else same model ("measured"), else the same method
with the other backbones, else any run of the dataset ("other backbones": backbones of one width
cost within about 1.5x of each other). Only runs that finished on this kind of hardware count (any
CPU for a CPU, the same GPU model for a GPU: an ml-1m epoch takes 2 s on an H200 and 20-70 s on one
CPU thread), and of a run resumed on other hardware only the epochs that ran where it finished. A
dataset without such runs gets ``DEFAULT_SECONDS_PER_EPOCH`` times ``train.max_epochs``, marked as a guess.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import statistics
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import active_children, get_context, parent_process
from pathlib import Path

from tqdm.auto import tqdm

from dmesr.experiments.grid import Cell, load_grid
from dmesr.experiments.reevaluate import evaluate_missing
from dmesr.experiments.store import add_to_store
from dmesr.shards import parse_shard
from dmesr.training.run import hardware, hardware_kind, train_run

DEFAULT_SECONDS_PER_EPOCH = 30.0  # a guess (ml-100k-sized data on a laptop CPU), used only before any run finished
SAME_SPEED_FACTOR = 3.0  # an epoch over 3x slower or faster than its run's last one ran on other hardware
STATUSES = ("done", "partial", "todo")


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # dry run: done | partial | todo; run: skipped | finished | failed
    seconds: float = 0.0  # dry run: estimated seconds; run: wall time of this cell
    error: str = ""  # "<ExceptionType>: <message>" of a failed cell (traceback in <run dir>/error.log)
    estimate_source: str = ""  # dry run: "measured", "other backbones" or "guess"


def cell_status(cell: Cell) -> str:
    run_dir = cell.run_dir
    if (run_dir / "final.json").exists():
        return "done"
    return "partial" if (run_dir / "config.yaml").exists() else "todo"


def shard_cells(cells: list[Cell], shard: str) -> list[Cell]:
    index, count = parse_shard(shard)
    return cells[index::count]


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def with_thread_share(cell: Cell, workers: int, threads: int | None = None) -> Cell:
    """The cell with ``train.num_threads`` = ``threads`` if given (e.g. to leave cores to another job),
    else its config's setting, else ``max(1, cores // workers)``."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if threads is None and cell.config.train.num_threads:
        return cell
    share = threads or max(1, available_cores() // workers)
    return replace(cell, config=replace(cell.config, train=replace(cell.config.train, num_threads=share)))


def _finished_epochs(run_dir: Path) -> int:
    log = run_dir / "epochs.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _seconds_per_epoch_where_finished(run_dir: Path, final: dict) -> float:
    """Median training seconds per epoch of a finished run, on the hardware its ``final.json`` names.

    A run resumed on other hardware (started on a GPU, finished on a CPU) has epochs of two speeds
    that ``final.json``'s median mixes; its last epoch ran on the named hardware. So only the epochs
    within a factor :data:`SAME_SPEED_FACTOR` of the last one count. A run that never moved keeps (nearly)
    all its epochs: load on one machine changes an epoch's time far less than that."""
    log = run_dir / "epochs.jsonl"
    seconds = [json.loads(line)["train_seconds"] for line in log.read_text().splitlines()] if log.exists() else []
    if not seconds:
        return final["seconds"]["train_epoch_median"]
    last = seconds[-1]
    return statistics.median(s for s in seconds if last / SAME_SPEED_FACTOR <= s <= last * SAME_SPEED_FACTOR)


def _estimate_keys(cell: Cell) -> list[tuple[tuple, str]]:
    """Groups of finished runs that predict ``cell``'s cost, closest first, with their label."""
    return [((cell.dataset, cell.model, cell.method), "measured"), ((cell.dataset, cell.model), "measured"),
            ((cell.dataset, "*", cell.method), "other backbones"), ((cell.dataset,), "other backbones")]


def estimate_seconds(cells: list[Cell], statuses: list[str], measured_from: list[Cell] = ()
                     ) -> list[tuple[float, str]]:
    """``(seconds, source)`` still needed by each cell (0 for done cells); source says what it rests on.

    Besides the finished ``cells``, the finished cells of ``measured_from`` (e.g. the rest of the grid
    when only some cells are run) are measured too."""
    finished: dict[tuple, list[tuple[float, int]]] = {}
    # each run once: ``measured_from`` may repeat cells (the whole grid and a selection of it)
    by_run = {cell.run_dir: cell for cell in measured_from}
    for cell in cells:
        by_run.pop(cell.run_dir, None)
    others = [cell for cell in by_run.values() if cell_status(cell) == "done"]
    here = hardware_kind(hardware())
    for cell, status in [*zip(cells, statuses), *((cell, "done") for cell in others)]:
        if status != "done":
            continue
        final = json.loads((cell.run_dir / "final.json").read_text())
        per_epoch, epochs = _seconds_per_epoch_where_finished(cell.run_dir, final), final["epochs"]
        if hardware_kind(final.get("hardware", here)) != here:
            continue
        for key, _ in _estimate_keys(cell):
            finished.setdefault(key, []).append((per_epoch, epochs))
    estimates = []
    for cell, status in zip(cells, statuses):
        if status == "done":
            estimates.append((0.0, "measured"))
            continue
        measured, source = next(((finished[key], source) for key, source in _estimate_keys(cell) if key in finished),
                                (None, "guess"))
        if measured:
            per_epoch = statistics.median(seconds for seconds, _ in measured)
            epochs = statistics.median(count for _, count in measured)
        else:
            per_epoch, epochs = DEFAULT_SECONDS_PER_EPOCH, cell.config.train.max_epochs
        seconds = per_epoch * max(0.0, epochs - _finished_epochs(cell.run_dir))
        if cell.config.train.max_minutes > 0:
            seconds = min(seconds, 60.0 * cell.config.train.max_minutes)
        estimates.append((seconds, source))
    return estimates


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def dry_run_outcomes(cells: list[Cell], workers: int = 1, measured_from: list[Cell] = ()) -> list[CellOutcome]:
    """Status and remaining-time estimate of every cell, printed as a table; nothing runs."""
    statuses = [cell_status(cell) for cell in cells]
    estimates = estimate_seconds(cells, statuses, measured_from)
    outcomes = [CellOutcome(cell, status, seconds, estimate_source=source)
                for cell, status, (seconds, source) in zip(cells, statuses, estimates)]
    width = max(len(cell.label) for cell in cells)
    for outcome in outcomes:
        estimate = "" if outcome.status == "done" else f"{_duration(outcome.seconds)} ({outcome.estimate_source})"
        print(f"{outcome.status:9s} {outcome.cell.label:{width}s} {estimate:24s} {outcome.cell.run_dir}")
    counts = {status: statuses.count(status) for status in STATUSES}
    remaining = sum(outcome.seconds for outcome in outcomes)
    print(f"{len(cells)} cells: {counts['done']} done, {counts['partial']} partial, {counts['todo']} todo; "
          f"about {_duration(remaining / workers)} left with {workers} worker(s)"
          + (" (includes guesses: no finished run to measure)" if any(o.estimate_source == "guess" for o in outcomes) else ""))
    return outcomes


def run_cell(cell: Cell) -> tuple[float, str]:
    """Train one cell (resuming if needed) -> ``(seconds, error)``; the error is "" on success.

    Top-level so that spawned worker processes can import it. The traceback of a failure goes to
    ``<run dir>/error.log``; a later successful run removes it.
    """
    started = time.perf_counter()
    error_log = cell.run_dir / "error.log"
    try:
        _record_cell(cell)
        train_run(cell.config, show_progress=False)
        evaluate_missing(cell.run_dir, "sampled")  # the second protocol of the results report
    except Exception as error:  # noqa: BLE001 - one cell's failure must not stop the grid
        with contextlib.suppress(OSError):
            error_log.write_text(traceback.format_exc())
        return time.perf_counter() - started, f"{type(error).__name__}: {error}"
    error_log.unlink(missing_ok=True)
    return time.perf_counter() - started, ""


def _evaluate_done_cell(cell: Cell, splits: dict) -> CellOutcome:
    """A done cell, skipped; first given its sampled evaluation if the grid was stopped between the
    run's ``final.json`` and that evaluation (a no-op, without loading data, when the file is there)."""
    try:
        _record_cell(cell)
        if evaluate_missing(cell.run_dir, "sampled", splits=splits) == "evaluated":
            print(f"{cell.label}: done, its missing sampled evaluation added")
    except Exception as error:  # noqa: BLE001 - like a failed training, listed and the grid goes on
        return CellOutcome(cell, "failed", error=f"sampled evaluation: {type(error).__name__}: {error}")
    return CellOutcome(cell, "skipped")


def exit_with_parent() -> None:
    """Pool-worker initializer: end this worker when the grid process dies without stopping it (kill -9,
    the out-of-memory killer). An orphaned worker would train on, and a rerun of the grid would then
    train the same run directory in a second process."""
    parent = parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's end of the sentinel pipe closes, i.e. when it dies
        os._exit(1)  # no cleanup: the run's checkpoint is written atomically at each epoch's end

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _record_cell(cell: Cell) -> None:
    """Write ``cell.json`` (which experiment and method a run directory belongs to, and the method roles
    the grid declares now)."""
    run_dir = cell.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "cell.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if (recorded["experiment"], recorded["method"]) != (cell.experiment, cell.method):
            raise ValueError(f"{run_dir} already belongs to method {recorded['method']!r} of experiment "
                             f"{recorded['experiment']!r}; give this experiment another output_dir")
        if recorded == cell.identity():
            return
    path.write_text(json.dumps(cell.identity(), indent=2))


def run_grid(cells: list[Cell], workers: int = 1, shard: str | None = None, dry_run: bool = False,
             show_progress: bool = True, threads: int | None = None, measured_from: list[Cell] = ()
             ) -> list[CellOutcome]:
    """Run every cell that is not done (see the module docstring); returns one outcome per cell.

    ``measured_from``: more cells whose finished runs the dry run's time estimates may use."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    whole = list(cells)
    cells = shard_cells(cells, shard) if shard else whole
    if not cells:
        print(f"shard {shard} holds no cells of this grid")
        return []
    if dry_run:
        return dry_run_outcomes(cells, workers, [*measured_from, *whole])

    splits = {}  # the split of each data config, loaded at most once for the done cells' evaluations
    outcomes: list[CellOutcome | None] = [
        _evaluate_done_cell(cell, splits) if cell_status(cell) == "done" else None for cell in cells]
    pending = {index: with_thread_share(cell, workers, threads)
               for index, cell in enumerate(cells) if outcomes[index] is None}
    progress = tqdm(total=len(pending), desc="cells", unit="cell", disable=not show_progress)

    def record(index: int, seconds: float, error: str) -> None:
        cell = pending[index]
        if not error and cell.store:
            try:
                add_to_store(cell.config.output_dir, cell.store, run_dirs=[cell.run_dir])
            except Exception as store_error:  # noqa: BLE001 - the run is finished; collect it again later
                error = f"adding to the store {cell.store}: {type(store_error).__name__}: {store_error}"
        outcomes[index] = CellOutcome(cell, "failed" if error else "finished", seconds, error)
        if error:
            progress.write(f"FAILED {cell.label}: {error} (traceback: {cell.run_dir / 'error.log'})")
        progress.update()

    if workers == 1:
        for index, cell in pending.items():
            progress.set_postfix_str(cell.label)
            record(index, *run_cell(cell))
    elif pending:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=exit_with_parent)
        try:
            futures = {pool.submit(run_cell, cell): index for index, cell in pending.items()}
            for future in as_completed(futures):
                try:
                    record(futures[future], *future.result())
                except Exception as error:  # noqa: BLE001 - e.g. a worker killed for memory
                    record(futures[future], 0.0, f"{type(error).__name__}: {error}")
        except KeyboardInterrupt:
            # A pool worker survives a KeyboardInterrupt (it reports it as the cell's result and
            # takes the next cell), and shutting down waits for queued cells: stop them here.
            progress.write("interrupted: queued cells cancelled, running cells stopped "
                           "(they resume from their last finished epoch)")
            pool.shutdown(wait=False, cancel_futures=True)
            for child in active_children():
                child.terminate()
            raise
        pool.shutdown()
    progress.close()
    _print_summary(outcomes)
    return outcomes


def _print_summary(outcomes: list[CellOutcome]) -> None:
    counts = {status: sum(o.status == status for o in outcomes) for status in ("skipped", "finished", "failed")}
    print(f"{len(outcomes)} cells: {counts['skipped']} already done, {counts['finished']} finished, "
          f"{counts['failed']} failed ({_duration(sum(o.seconds for o in outcomes))} of wall time in cells)")
    for outcome in outcomes:
        if outcome.status == "failed":
            print(f"  failed: {outcome.cell.label}: {outcome.error}")


def select_cells(cells: list[Cell], patterns: list[str]) -> list[Cell]:
    """The cells (grid order kept) whose label ``dataset/model/method/seedN`` matches one of the globs."""
    selected = [cell for cell in cells if any(fnmatch.fnmatchcase(cell.label, pattern) for pattern in patterns)]
    if not selected:
        raise ValueError(f"no cell matches {', '.join(map(repr, patterns))}; labels look like {cells[0].label!r}")
    return selected


def experiments_run(yaml_path: str | Path, workers: int = 1, shard: str | None = None, dry_run: bool = False,
                    limit: int | None = None, threads: int | None = None,
                    patterns: list[str] | None = None) -> list[CellOutcome]:
    """CLI entry: expand the grid, keep the cells matching ``patterns``, then ``shard``, then the first
    ``limit``; run (each finished cell is added to the grid's ``store``)."""
    cells = whole = load_grid(yaml_path)
    if patterns:
        cells = select_cells(cells, patterns)
    if shard:
        cells = shard_cells(cells, shard)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        cells = cells[:limit]
    return run_grid(cells, workers=workers, dry_run=dry_run, threads=threads, measured_from=whole)
