"""Executing the notebooks with papermill, and the small helpers every notebook shares.

The notebooks in ``notebooks/`` are committed without outputs. Their parameters cell says
``PROFILE = "tiny"`` (a few minutes on a laptop CPU: CI runs them as they are) and leaves every
profile-dependent setting at ``None``; the cell after it calls ``profile_settings``, which fills each
``None`` from the profile (``PROFILES``) and keeps any value a caller set. So ``-p PROFILE full``
alone gives the study's epochs, seeds and output folders, and ``-p EPOCHS 5`` overrides one of them.
Relative paths in parameters are read from the repository root (``repo_root``), whatever the
working directory. ``run_notebooks`` executes them in reading order with the kernel ``python3``
and stops at the first failure with the notebook and cell that failed::

    run_notebooks("tiny")                                  # all of them -> reports/tiny/executed/
    run_notebooks("full", names=["03"], timeout=3600)

These runs are headless: a notebook that declares ``INTERACTIVE`` receives ``False`` and shows the
static view of its widgets' starting values instead of live widgets (``interact_or_show``).

Each notebook records its key numbers with ``record_metrics`` to ``reports/metrics/NN_name.json``.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import time
from pathlib import Path

KERNEL = "python3"
ROOT_VARIABLE = "DMESR_ROOT"

# Each profile's settings; a notebook uses the ones its parameters cell declares (as ``None``).
# Paths are relative to the repository root. Runs the notebooks train go to runs/ (not committed),
# apart from the study's run store that 05 reads (RUNS_ROOT).
PROFILES: dict[str, dict] = {
    "tiny": {"EPOCHS": 2, "SEEDS": [42], "DATASETS": ["ml-100k"], "DESCRIBE_ITEMS": 2,
             "MAX_NEW_TOKENS": 24, "TSNE_ITEMS": 300, "HEATMAP_ITEMS": 3, "THREADS": 1,
             "REPORTS_DIR": "reports/tiny", "RUNS_DIR": "runs/notebooks", "RUNS_ROOT": "runs/notebooks"},
    "full": {"EPOCHS": 200, "SEEDS": [1, 2, 3],
             "DATASETS": ["ml-100k", "ml-latest-small", "ml-1m"], "DESCRIBE_ITEMS": 16, "MAX_NEW_TOKENS": 64,
             "TSNE_ITEMS": 1000, "HEATMAP_ITEMS": 6, "THREADS": 0,
             "REPORTS_DIR": "reports", "RUNS_DIR": "runs/notebooks-full", "RUNS_ROOT": "main"},
}
# Parameters holding a path (resolved against the repository root when relative).
PATH_PARAMETERS = {"REPORTS_DIR", "RUNS_DIR", "DESCRIPTIONS"}
# Injected into every run whatever the profile: papermill has no frontend to drive a widget, and
# nbclient (which papermill runs on) can deadlock on ipywidgets.interact's output widget
# (jupyter/nbclient#312; seen here as a CI run that hung in the explorer notebook).
HEADLESS_PARAMETERS = {"INTERACTIVE": False}


class NotebookError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


def repo_root() -> Path:
    """The checkout whose ``notebooks/``, ``data/`` and ``reports/`` the notebooks use: ``$DMESR_ROOT``
    if set, else the nearest folder at or above the working directory that holds ``pyproject.toml``
    and ``notebooks/`` (a kernel started in ``notebooks/`` or at the root finds it either way).

    It is not derived from this module's location: an installed (not editable) package lives in
    site-packages, nowhere near a checkout.
    """
    if os.environ.get(ROOT_VARIABLE):
        root = Path(os.environ[ROOT_VARIABLE]).expanduser().resolve()
        if not (root / "notebooks").is_dir():
            raise FileNotFoundError(f"${ROOT_VARIABLE}={root} has no notebooks/ folder")
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    raise FileNotFoundError(f"no dmesr checkout (pyproject.toml + notebooks/) at or above {here}; "
                            f"run from inside one or set ${ROOT_VARIABLE}")


def profile_settings(profile: str, **given):
    """The notebooks' settings: each ``given`` value that is ``None`` becomes the profile's, the others
    stay as the caller set them; relative paths (``PATH_PARAMETERS``) are made absolute from
    ``repo_root()``. Returns the values in the order given, for unpacking in the notebook::

        EPOCHS, REPORTS_DIR = profile_settings(PROFILE, EPOCHS=EPOCHS, REPORTS_DIR=REPORTS_DIR)
    """
    defaults = _profile(profile)
    values = []
    for name, value in given.items():
        if value is None:
            if name not in defaults:
                raise ValueError(f"parameter {name} is None and profile {profile!r} has no value for it")
            value = defaults[name]
        if name in PATH_PARAMETERS:
            value = str(repo_root() / Path(value).expanduser())  # an absolute value stays as it is
        values.append(value)
    shown = [shown_path(value) if name in PATH_PARAMETERS else value for name, value in zip(given, values)]
    print(f"profile {profile}: " + ", ".join(f"{name}={value!r}" for name, value in zip(given, shown)))
    return values[0] if len(values) == 1 else tuple(values)


def results_from(source: str | Path):
    """The finished runs of ``source``: a folder of run directories (relative to ``repo_root()``) if one
    is there, else a collection of the committed run store (``reports/store``). A missing folder that is
    no collection either is a ``FileNotFoundError`` naming both places looked at."""
    from dmesr.experiments.run_store import DEFAULT_STORE, runs_from

    folder = repo_root() / Path(source).expanduser()
    try:
        return runs_from(folder if folder.is_dir() else source, repo_root() / DEFAULT_STORE)
    except ValueError:
        raise FileNotFoundError(f"no runs under {folder} and no collection {str(source)!r} in the run store "
                                f"{repo_root() / DEFAULT_STORE}") from None


def notebook_paths(names: list[str] | None = None, folder: str | Path | None = None) -> list[Path]:
    """The notebooks in reading order (default folder: ``repo_root()/notebooks``); ``names`` picks some
    by full name, number (``"03"``) or title part."""
    folder = Path(folder) if folder is not None else repo_root() / "notebooks"
    available = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not available:
        raise FileNotFoundError(f"no notebooks (NN_name.ipynb) in {folder}")
    if not names:
        return available
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in available if p.stem == stem or p.stem.split("_", 1)[0] == stem
                   or p.stem.split("_", 1)[1] == stem]
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


def reports_dir(profile: str) -> Path:
    """Where a profile's figures, metrics and executed copies go: ``reports/`` for ``full``, and
    ``reports/tiny/`` (not committed) for ``tiny``, so test runs never overwrite the real ones."""
    return repo_root() / _profile(profile)["REPORTS_DIR"]


def run_notebooks(profile: str = "tiny", names: list[str] | None = None, out_dir: str | Path | None = None,
                  timeout: float | None = 1800, parameters: dict | None = None,
                  notebooks_dir: str | Path | None = None, progress: bool = False) -> dict[str, dict]:
    """Execute notebooks with papermill into ``out_dir`` (default: the profile's ``reports_dir() / "executed"``);
    returns ``{name: {"path", "seconds"}}``.

    ``timeout``: seconds any one cell may run (None: no limit). Each notebook receives ``PROFILE``,
    ``HEADLESS_PARAMETERS`` and ``parameters`` (e.g. ``{"SEEDS": [7]}``), only where it declares them;
    it takes its other settings from the profile itself (``profile_settings``).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    paths = notebook_paths(names, notebooks_dir)
    out_dir = Path(out_dir).resolve() if out_dir is not None else reports_dir(profile) / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = {}
    for path in paths:
        declared = declared_parameters(path)
        _profile(profile)
        wanted = {"PROFILE": profile, **HEADLESS_PARAMETERS, **(parameters or {})}
        injected = {name: value for name, value in wanted.items() if name in declared}
        output = out_dir / path.name
        started = time.perf_counter()
        try:
            papermill.execute_notebook(str(path), str(output), parameters=injected, kernel_name=KERNEL,
                                       cwd=str(path.parent), progress_bar=progress, execution_timeout=timeout)
        except PapermillExecutionError as error:
            cause = f"{error.ename}: {error.evalue.strip()[:300]}"
            raise NotebookError(f"notebook {path.stem} failed in cell {error.cell_index} ({cause}); "
                                f"executed copy: {output}") from None
        except Exception as error:  # a kernel death or a cell timeout surfaces as another exception type
            raise NotebookError(f"notebook {path.stem} did not finish ({type(error).__name__}: "
                                f"{str(error).strip()[:300]}); executed copy: {output}") from None
        without_machine_paths(output)
        executed[path.stem] = {"path": str(output), "seconds": round(time.perf_counter() - started, 1)}
    return executed


def shown_path(path: str | Path) -> str:
    """``path`` as a notebook should print it: relative to the repository root when inside it (an executed
    copy then names no folder of the machine that ran it)."""
    path = Path(path).resolve()
    return path.relative_to(repo_root()).as_posix() if path.is_relative_to(repo_root()) else str(path)


def without_machine_paths(path: str | Path, root: str | Path | None = None) -> None:
    """Rewrite an executed notebook so it names no folder of the machine that ran it: the checkout's
    path (``root``, default ``repo_root()``) is dropped, so paths read from the repository root, and the
    home folder becomes ``~``, in every printed output and in papermill's record of where it ran."""
    import nbformat

    root = str(root or repo_root())
    home = str(Path.home()) + os.sep

    def plain(text):
        return text.replace(root + os.sep, "").replace(root, ".").replace(home, "~" + os.sep)

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = plain(output["text"])
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in output.get("data", {}):
                    output["data"][kind] = plain(output["data"][kind])
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path", "cwd"):
        if isinstance(record.get(key), str):
            record[key] = plain(record[key])
    for key, value in record.get("parameters", {}).items():
        if isinstance(value, str):
            record["parameters"][key] = plain(value)
    nbformat.write(notebook, path)


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
    """Save ``figure`` to ``<reports_dir>/figures/<name>.png`` and display that PNG in the notebook.

    The figures are built without pyplot (``dmesr.viz``), so no inline backend turns them into
    pictures: ``display(figure)`` would print ``<Figure size ...>``. Displaying the saved bytes gives
    an ``image/png`` output in a live kernel, in papermill's executed copy and in any notebook viewer.
    """
    from IPython.display import Image, display

    from dmesr.viz import save_figure

    path = save_figure(figure, Path(reports_dir) / "figures", name)
    display(Image(data=path.read_bytes(), format="png"))


def show_notes(sentences: list[str]):
    """Display sentences computed from a notebook's own results as a bullet list (its "What to notice")."""
    from IPython.display import Markdown, display

    display(Markdown("\n".join(f"- {sentence}" for sentence in sentences)))


NOTICE_HEADING = "## What to notice"
# A number as a sentence quotes it: not part of a name (ml-100k, NDCG@10, 18th, MiniLM-L6), with its sign and %
_QUOTED_NUMBER = re.compile(r"(?<![\w@.\-/#])[+\-−]?(\d[\d,]*(?:\.\d+)?)(%?)(?![\w@])")
_SHOWN_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_QUOTED_PHRASE = re.compile(r'"([^"]{3,200})"|“([^”]{3,200})”')


def _output_text(cell) -> str:
    """What a code cell shows: its printed text, plain/markdown/HTML results (tags dropped, entities read)."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        data = output.get("data", {})
        for kind in ("text/plain", "text/markdown"):
            parts.append("".join(data.get(kind, "")))
        parts.append(html.unescape(re.sub(r"<[^>]+>", " ", "".join(data.get("text/html", "")))))
    return " ".join(" ".join(parts).split())


def unsupported_claims(notebook) -> list[str]:
    """The numbers and quoted phrases of an executed notebook's "What to notice" (its text and the sentences
    computed under it) that no output above it shows.

    A number quoted with ``k`` decimals is shown when some output number rounds to it at ``k`` decimals,
    directly or as a percentage (0.934 shows 93%); a whole number needs an equal one. Code spans name
    settings, not results, and are skipped. A quoted phrase must appear in the outputs word for word."""
    cells = notebook.cells
    notice = [i for i, cell in enumerate(cells) if cell.cell_type == "markdown"
              and cell.source.startswith(NOTICE_HEADING)]
    if len(notice) != 1:
        return [f"{len(notice)} cells start with {NOTICE_HEADING!r}"]
    start = notice[0]
    shown = " ".join(_output_text(cell) for cell in cells[:start] if cell.cell_type == "code")
    said = cells[start].source[len(NOTICE_HEADING):] + " " + (_output_text(cells[start + 1])
                                                               if start + 1 < len(cells) else "")
    said = re.sub(r"`[^`]*`", " ", said)
    values = [float(number) for number in _SHOWN_NUMBER.findall(shown.replace(",", ""))]
    missing = []
    for match in _QUOTED_NUMBER.finditer(said):
        digits, percent = match.group(1).replace(",", ""), bool(match.group(2))
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        quoted, tolerance = float(digits), 0.5 * 10.0 ** -decimals + 1e-9
        if decimals == 0 and not percent:
            found = quoted in values
        else:
            found = any(abs(value - quoted) <= tolerance or (percent and abs(100 * value - quoted) <= tolerance)
                        for value in values)
        if not found:
            missing.append(match.group(0))
    lowered = shown.lower()
    for match in _QUOTED_PHRASE.finditer(said):
        phrase = " ".join((match.group(1) or match.group(2)).split())
        if phrase.lower() not in lowered:
            missing.append(f'"{phrase}"')
    return missing


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
