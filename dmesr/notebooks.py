"""Executing the notebooks with papermill, and the small helpers every notebook shares.

The notebooks in ``notebooks/`` are committed without outputs and with their parameters cell set
to the ``tiny`` profile (a few minutes on a laptop CPU: CI runs them as they are). The ``full``
profile injects the settings of a real study. ``run_notebooks`` executes them in reading order
with the kernel ``python3``, each in the ``notebooks/`` folder (so their relative paths work),
and stops at the first failure with the notebook and cell that failed::

    run_notebooks("tiny")                                  # all of them -> reports/tiny/executed/
    run_notebooks("full", names=["03"], timeout=3600)

These runs are headless: a notebook that declares ``INTERACTIVE`` receives ``False`` and shows the
static view of its widgets' starting values instead of live widgets (``interact_or_show``).

Each notebook records its key numbers with ``record_metrics`` to ``reports/metrics/NN_name.json``.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PACKAGE_ROOT / "notebooks"
KERNEL = "python3"

# Values injected per profile; a notebook receives only the ones its parameters cell declares.
# The committed parameters cells hold exactly the ``tiny`` values (tests/test_notebooks.py checks it).
PROFILES: dict[str, dict] = {
    "tiny": {"PROFILE": "tiny", "EPOCHS": 2, "SEEDS": [42], "DATASETS": ["ml-100k"], "DESCRIBE_ITEMS": 2,
             "MAX_NEW_TOKENS": 24, "TSNE_ITEMS": 300, "HEATMAP_ITEMS": 3, "THREADS": 1,
             "REPORTS_DIR": "../reports/tiny", "RUNS_ROOT": "../runs/notebooks"},
    "full": {"PROFILE": "full", "EPOCHS": 200, "SEEDS": [1, 2, 3],
             "DATASETS": ["ml-100k", "ml-latest-small", "ml-1m"], "DESCRIBE_ITEMS": 16, "MAX_NEW_TOKENS": 64,
             "TSNE_ITEMS": 1000, "HEATMAP_ITEMS": 6, "THREADS": 0,
             "REPORTS_DIR": "../reports", "RUNS_ROOT": "../reports/runs/main"},
}  # fmt: skip
# Injected into every run whatever the profile: papermill has no frontend to drive a widget, and
# nbclient (which papermill runs on) can deadlock on ipywidgets.interact's output widget
# (jupyter/nbclient#312; seen here as a CI run that hung in the explorer notebook).
HEADLESS_PARAMETERS = {"INTERACTIVE": False}


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


def notebook_paths(names: list[str] | None = None, folder: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks in reading order; ``names`` picks some by full name, number (``"03"``) or title part."""
    folder = Path(folder)
    available = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not available:
        raise FileNotFoundError(f"no notebooks (NN_name.ipynb) in {folder}")
    if not names:
        return available
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in available if p.stem == stem or p.stem.split("_", 1)[0] == stem
                   or p.stem.split("_", 1)[1] == stem]  # fmt: skip
        if len(matches) != 1:
            raise ValueError(f"unknown notebook {name!r}; known: {', '.join(p.stem for p in available)}")
        chosen.append(matches[0])
    return chosen


def declared_parameters(path: str | Path) -> dict:
    """The defaults of a notebook's ``parameters`` cell (``{name: value}``; they must be Python literals)."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    return {name: ast.literal_eval(spec["default"]) for name, spec in declared.items()}


def _profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown notebook profile {profile!r}; known: {', '.join(PROFILES)}")
    return PROFILES[profile]


def profile_parameters(profile: str, declared: dict) -> dict:
    """The profile's values for the parameters a notebook declares."""
    return {name: value for name, value in _profile(profile).items() if name in declared}


def reports_dir(profile: str) -> Path:
    """Where a profile's figures, metrics and executed copies go: ``reports/`` for ``full``, and
    ``reports/tiny/`` (not committed) for ``tiny``, so test runs never overwrite the real ones."""
    return (NOTEBOOKS_DIR / _profile(profile)["REPORTS_DIR"]).resolve()


def run_notebooks(profile: str = "tiny", names: list[str] | None = None, out_dir: str | Path | None = None,
                  timeout: float | None = 1800, parameters: dict | None = None,
                  notebooks_dir: str | Path = NOTEBOOKS_DIR, progress: bool = False) -> dict[str, dict]:
    """Execute notebooks with papermill into ``out_dir`` (default: the profile's ``reports_dir() / "executed"``);
    returns ``{name: {"path", "seconds"}}``.

    ``timeout``: seconds any one cell may run (None: no limit). ``parameters`` are injected on top
    of the profile's and ``HEADLESS_PARAMETERS`` (e.g. ``{"SEEDS": [7]}``), again only where a notebook
    declares them.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    paths = notebook_paths(names, notebooks_dir)
    out_dir = Path(out_dir).resolve() if out_dir is not None else reports_dir(profile) / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = {}
    for path in paths:
        declared = declared_parameters(path)
        wanted = {**profile_parameters(profile, declared), **HEADLESS_PARAMETERS, **(parameters or {})}
        injected = {name: value for name, value in wanted.items() if name in declared}
        output = out_dir / path.name
        started = time.perf_counter()
        try:
            papermill.execute_notebook(str(path), str(output), parameters=injected, kernel_name=KERNEL,
                                       cwd=str(path.parent), progress_bar=progress, execution_timeout=timeout)  # fmt: skip
        except PapermillExecutionError as error:
            cause = f"{error.ename}: {error.evalue.strip()[:300]}"
            raise NotebookError(f"notebook {path.stem} failed in cell {error.cell_index} ({cause}); "
                                f"executed copy: {output}") from None
        except Exception as error:  # a kernel death or a cell timeout surfaces as another exception type
            raise NotebookError(f"notebook {path.stem} did not finish ({type(error).__name__}: "
                                f"{str(error).strip()[:300]}); executed copy: {output}") from None  # fmt: skip
        executed[path.stem] = {"path": str(output), "seconds": round(time.perf_counter() - started, 1)}
    return executed


def notebooks_command(profile: str = "tiny", names: list[str] | None = None, out_dir: str | Path | None = None,
                      parameters: dict | None = None, timeout: float | None = 1800) -> dict[str, dict]:
    """CLI entry (``dmesr notebooks run``): run the notebooks and print where each executed copy went."""
    executed = run_notebooks(profile, names, out_dir, timeout=timeout, parameters=parameters)
    for name, result in executed.items():
        print(f"{name}: {result['seconds']:.0f} s -> {result['path']}")
    print(f"total {sum(r['seconds'] for r in executed.values()):.0f} s; figures and metrics in {reports_dir(profile)}")
    return executed


def record_metrics(name: str, metrics: dict, reports_dir: str | Path, parameters: dict | None = None) -> Path:
    """Write a notebook's key numbers (and the parameters it ran with) to ``<reports_dir>/metrics/<name>.json``."""
    path = Path(reports_dir) / "metrics" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"notebook": name, "parameters": parameters or {}, "metrics": metrics}
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=_plain))
    return path


def show_figure(figure, reports_dir: str | Path, name: str):
    """Save ``figure`` to ``<reports_dir>/figures/<name>.png`` and display it in the notebook."""
    from IPython.display import display

    from dmesr.viz import save_figure

    save_figure(figure, Path(reports_dir) / "figures", name)
    display(figure)


def interact_or_show(function, interactive: bool, **controls):
    """``ipywidgets.interact(function, **controls)`` in a live notebook; headless (``interactive``
    false), ``function`` called once with the controls' current values, so an executed copy shows
    that view (see ``HEADLESS_PARAMETERS``)."""
    if interactive:
        import ipywidgets

        ipywidgets.interact(function, **controls)
    else:
        function(**{name: control.value for name, control in controls.items()})


def _plain(value):
    """numpy scalars and arrays, paths: as JSON can hold them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
