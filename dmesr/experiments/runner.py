"""Run an experiment grid: finished cells are skipped, interrupted ones resume, failures are listed.

    dmesr experiments run configs/experiments/main.yaml --dry-run     # each cell: done/partial/todo + time
    dmesr experiments run configs/experiments/main.yaml --workers 2   # two processes, CPU threads split
    dmesr experiments run configs/experiments/main.yaml --threads 1   # one thread: leave a core to another job
    dmesr experiments run configs/experiments/main.yaml --cells 'ml-100k/*/dmesr/*'   # some cells first

A cell is *done* when its run directory holds ``final.json`` (skipped without loading any data),
*partial* when training started (``train_run`` resumes it from ``checkpoint.pt``), else *todo*.
Before anything runs, every cell is checked (its config, model and dataset): a grid with a bad
cell names it and stops; the dry run marks it ``invalid``. A failing cell is logged (traceback in
``<run dir>/error.log``) and the grid goes on; the summary at the end lists every failure, and the
command then exits non-zero. A cell that another process is training (its run directory locked)
is *running*: skipped, not trained twice. Ctrl-C stops the whole grid, workers included; each stopped cell
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

Cell statuses and the dry run's time estimates live in :mod:`dmesr.experiments.status`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import active_children, get_context, parent_process
from pathlib import Path

from tqdm.auto import tqdm

from dmesr.data.identity import dataset_problem
from dmesr.experiments.grid import Cell, load_grid
from dmesr.experiments.reevaluate import evaluate_missing
from dmesr.experiments.run_store import add_to_store
from dmesr.experiments.status import DEFAULT_SECONDS_PER_EPOCH, STATUSES, cell_status, estimate_seconds  # noqa: F401 - re-exported
from dmesr.lock import InProgressError
from dmesr.shards import parse_shard
from dmesr.training.run import train_run


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # dry run: one of STATUSES or invalid; run: skipped | running | finished | failed
    seconds: float = 0.0  # dry run: estimated seconds; run: wall time of this cell
    error: str = ""  # "<ExceptionType>: <message>" of a failed cell (traceback in <run dir>/error.log)
    estimate_source: str = ""  # dry run: "measured", "other backbones" or "guess"


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


def cell_problem(cell: Cell) -> str:
    """Why ``cell`` cannot run (its dataset is neither known nor a folder of data), or ""."""
    return dataset_problem(cell.dataset)


def check_cells(cells: list[Cell]) -> None:
    """Refuse a grid with a cell that cannot run, naming every such cell, before anything runs."""
    problems = [f"{cell.label}: {problem}" for cell in cells if (problem := cell_problem(cell))]
    if problems:
        raise ValueError(f"{len(problems)} cell(s) cannot run, nothing was started:\n  " + "\n  ".join(problems))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def dry_run_outcomes(cells: list[Cell], workers: int = 1, measured_from: list[Cell] = ()) -> list[CellOutcome]:
    """Status and remaining-time estimate of every cell, printed as a table; nothing runs. A cell that
    cannot run is ``invalid``, with the reason in its ``error``."""
    problems = [cell_problem(cell) for cell in cells]
    valid = [cell for cell, problem in zip(cells, problems) if not problem]
    statuses = [cell_status(cell) for cell in valid]
    measurable = [cell for cell in measured_from if not cell_problem(cell)]
    estimates = iter(zip(statuses, estimate_seconds(valid, statuses, measurable)))
    outcomes = []
    for cell, problem in zip(cells, problems):
        if problem:
            outcomes.append(CellOutcome(cell, "invalid", error=problem))
        else:
            status, (seconds, source) = next(estimates)
            outcomes.append(CellOutcome(cell, status, seconds, estimate_source=source))
    width = max(len(cell.label) for cell in cells)
    for outcome in outcomes:
        estimate = "" if outcome.status in ("done", "invalid") else \
            f"{_duration(outcome.seconds)} ({outcome.estimate_source})"
        where = outcome.error if outcome.status == "invalid" else outcome.cell.run_dir
        print(f"{outcome.status:9s} {outcome.cell.label:{width}s} {estimate:24s} {where}")
    counts = {status: sum(o.status == status for o in outcomes) for status in (*STATUSES, "invalid")}
    remaining = sum(outcome.seconds for outcome in outcomes)
    print(f"{len(cells)} cells: {counts['done']} done, {counts['partial']} partial, {counts['todo']} todo"
          + (f", {counts['running']} running elsewhere" if counts["running"] else "")
          + (f", {counts['invalid']} INVALID" if counts["invalid"] else "") + "; "
          f"about {_duration(remaining / workers)} left with {workers} worker(s)"
          + (" (includes guesses: no finished run to measure)" if any(o.estimate_source == "guess" for o in outcomes) else ""))
    return outcomes


def run_cell(cell: Cell) -> tuple[float, str, str]:
    """Train one cell (resuming if needed) -> ``(seconds, status, error)``: status ``finished`` (error
    ""), ``running`` (another process trains it: left alone) or ``failed``.

    Top-level so that spawned worker processes can import it. The traceback of a failure goes to
    ``<run dir>/error.log``; a later successful run removes it.
    """
    started = time.perf_counter()
    error_log = cell.run_dir / "error.log"
    try:
        _record_cell(cell)
        train_run(cell.config, show_progress=False)
        evaluate_missing(cell.run_dir, "sampled")  # the second protocol of the results report
    except InProgressError as error:
        return time.perf_counter() - started, "running", str(error)
    except Exception as error:  # noqa: BLE001 - one cell's failure must not stop the grid
        with contextlib.suppress(OSError):
            error_log.write_text(traceback.format_exc())
        return time.perf_counter() - started, "failed", f"{type(error).__name__}: {error}"
    error_log.unlink(missing_ok=True)
    return time.perf_counter() - started, "finished", ""


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
    check_cells(cells)

    splits = {}  # the split of each data config, loaded at most once for the done cells' evaluations
    statuses = [cell_status(cell) for cell in cells]
    outcomes: list[CellOutcome | None] = [
        _evaluate_done_cell(cell, splits) if status == "done" else
        CellOutcome(cell, "running", error="another process trains it") if status == "running" else None
        for cell, status in zip(cells, statuses)]
    pending = {index: with_thread_share(cell, workers, threads)
               for index, cell in enumerate(cells) if outcomes[index] is None}
    progress = tqdm(total=len(pending), desc="cells", unit="cell", disable=not show_progress)

    def record(index: int, seconds: float, status: str, error: str) -> None:
        cell = pending[index]
        if status == "finished" and cell.store:
            try:
                add_to_store(cell.config.output_dir, cell.store, run_dirs=[cell.run_dir])
            except Exception as store_error:  # noqa: BLE001 - the run is finished; collect it again later
                status, error = "failed", f"adding to the store {cell.store}: {type(store_error).__name__}: {store_error}"
        outcomes[index] = CellOutcome(cell, status, seconds, error)
        if status == "failed":
            progress.write(f"FAILED {cell.label}: {error} (traceback: {cell.run_dir / 'error.log'})")
        elif status == "running":
            progress.write(f"skipped {cell.label}: {error}")
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
                    record(futures[future], 0.0, "failed", f"{type(error).__name__}: {error}")
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
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("skipped", "running", "finished", "failed")}
    print(f"{len(outcomes)} cells: {counts['skipped']} already done, {counts['running']} skipped (another process "
          f"trains them), {counts['finished']} finished, {counts['failed']} failed "
          f"({_duration(sum(o.seconds for o in outcomes))} of wall time in cells)")
    for outcome in outcomes:
        if outcome.status in ("failed", "running"):
            print(f"  {outcome.status}: {outcome.cell.label}: {outcome.error}")


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
