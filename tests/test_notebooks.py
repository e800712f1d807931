"""The notebooks: committed clean and in the tiny profile, runnable with injected parameters from any
working directory, every figure shown as a picture, and the papermill runner's selection and failure
messages. ``pytest --nbval-lax notebooks/`` runs them as committed."""

from __future__ import annotations

import json
import os
import re

import nbformat
import pytest

from dmesr.notebooks import (
    PROFILES,
    NotebookError,
    declared_parameters,
    interact_or_show,
    notebook_paths,
    profile_settings,
    record_metrics,
    repo_root,
    run_notebooks,
    show_figure,
    unsupported_claims,
    without_machine_paths,
)

NOTEBOOKS = notebook_paths()
EXPECTED = ["00_quickstart", "01_datasets", "02_mllm_enrichment", "03_alignment_tsne", "04_fusion_ablations",
            "05_results", "06_explorer"]


def test_all_notebooks_are_there_in_reading_order():
    assert [path.stem for path in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_one_tiny_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "outputs are stored"
    assert notebook.metadata.kernelspec.name == "python3"
    title = notebook.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {path.stem[:2]} ·")
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and notebook.cells[tagged[0] - 1] is code[0], "imports first, then the parameters cell"
    declared = declared_parameters(path)
    assignments = re.findall(r"^([A-Z_]+) =", notebook.cells[tagged[0]].source, flags=re.M)
    assert sorted(declared) == sorted(assignments), "papermill could not parse every parameter line"
    assert declared["PROFILE"] == "tiny"
    for name in set(PROFILES["tiny"]) & set(declared):
        assert declared[name] is None, f"committed {name}={declared[name]!r}: profile settings stay None"
        assert f"{name}={name}" in code[2].source, f"{name} is not resolved by profile_settings"
    assert "../" not in "".join(cell.source for cell in code), "a path relative to notebooks/"
    assert f'record_metrics("{path.stem}"' in code[-1].source
    notice = [i for i, cell in enumerate(notebook.cells) if cell.source.startswith("## What to notice")]
    assert len(notice) == 1 and notebook.cells[notice[0] + 1] is code[-1], "What to notice, then the cell computing it"
    assert "show_notes(" in code[-1].source
    assert notebook.cells[-1].cell_type == "markdown" and notebook.cells[-1].source.startswith("### Exercises")


def test_every_full_profile_key_has_a_tiny_value():
    assert set(PROFILES["full"]) == set(PROFILES["tiny"])
    assert PROFILES["full"]["EPOCHS"] > PROFILES["tiny"]["EPOCHS"]


def test_profile_settings_fill_none_from_the_profile_and_keep_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root() / "notebooks")  # where a kernel started by JupyterLab runs
    root = repo_root()
    assert (root / "pyproject.toml").is_file()
    epochs, seeds, reports = profile_settings("full", EPOCHS=None, SEEDS=[7], REPORTS_DIR=None)
    assert (epochs, seeds, reports) == (PROFILES["full"]["EPOCHS"], [7], str(root / "reports"))
    assert profile_settings("tiny", RUNS_DIR=str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="unknown notebook profile 'huge'"):
        profile_settings("huge", EPOCHS=None)
    with pytest.raises(ValueError, match="parameter USER is None"):
        profile_settings("tiny", USER=None)


def test_repo_root_from_the_environment_or_the_working_directory(tmp_path, monkeypatch):
    root = repo_root()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no dmesr checkout"):
        repo_root()
    monkeypatch.setenv("DMESR_ROOT", str(root))
    assert repo_root() == root and notebook_paths()[0].parent == root / "notebooks"
    monkeypatch.setenv("DMESR_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no notebooks/ folder"):
        repo_root()


def figure_cells_without_picture(notebook) -> list[int]:
    """Indices of code cells that call ``show_figure`` but hold no ``image/png`` output."""
    return [index for index, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and "show_figure(" in cell.source
            and not any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))]


def test_show_figure_saves_and_displays_a_png(tmp_path, monkeypatch):
    from dmesr import viz

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objects: shown.extend(objects))
    show_figure(viz.sequence_length_histogram([1, 2, 3, 10]), tmp_path, "lengths")
    png = (tmp_path / "figures" / "lengths.png").read_bytes()
    assert len(shown) == 1 and shown[0].data == png and shown[0].format == "png"

def test_notebook_selection_by_name_number_or_title():
    assert [p.stem for p in notebook_paths(["03", "05_results", "explorer"])] == [
        "03_alignment_tsne", "05_results", "06_explorer"]
    with pytest.raises(ValueError, match="unknown notebook '99'"):
        notebook_paths(["99"])


def test_record_metrics_writes_plain_json(tmp_path):
    import numpy as np

    path = record_metrics("00_x", {"ndcg": np.float32(0.25), "ranks": np.arange(3)}, tmp_path, {"SEEDS": [1]})
    assert path == tmp_path / "metrics" / "00_x.json"
    assert json.loads(path.read_text()) == {"notebook": "00_x", "parameters": {"SEEDS": [1]},
                                            "metrics": {"ndcg": 0.25, "ranks": [0, 1, 2]}}


def _write_notebook(folder, name, sources):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(notebook, folder / f"{name}.ipynb")


@pytest.mark.slow
def test_runner_injects_parameters_and_names_the_failing_notebook_and_cell(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    _write_notebook(source, "00_ok", ["PROFILE = 'tiny'\nEPOCHS = None\nSEEDS = [42]\nINTERACTIVE = True",
                                      "from dmesr.notebooks import profile_settings\n"
                                      "EPOCHS = profile_settings(PROFILE, EPOCHS=EPOCHS)",
                                      "open('out.txt', 'w').write(f'{EPOCHS} {INTERACTIVE}')"])
    _write_notebook(source, "01_bad", ["PROFILE = 'full'", "x = 1", "raise ValueError('broken on purpose')"])
    executed = run_notebooks("full", names=["00"], out_dir=tmp_path / "out", notebooks_dir=source)
    # the profile injected and its epochs taken; headless, so no live widgets; run in notebooks/
    assert (source / "out.txt").read_text() == f"{PROFILES['full']['EPOCHS']} False"
    assert executed["00_ok"]["path"] == str(tmp_path / "out" / "00_ok.ipynb")
    with pytest.raises(NotebookError, match=re.escape("notebook 01_bad failed in cell 3 (ValueError: broken on purpose)")):
        run_notebooks("tiny", out_dir=tmp_path / "out", notebooks_dir=source)


def test_interact_or_show_calls_the_function_with_the_controls_values_when_headless():
    import ipywidgets

    seen = []
    interact_or_show(lambda user, item: seen.append((user, item)), False,
                     user=ipywidgets.BoundedIntText(value=3, min=0, max=9), item=ipywidgets.Dropdown(options=[1, 5], value=5))
    assert seen == [(3, 5)]


@pytest.fixture(scope="module")
def executed_with_seed_7(tmp_path_factory):
    """Every notebook, tiny profile, another seed, runs and reports in a temporary folder."""
    root = tmp_path_factory.mktemp("notebooks")
    parameters = {"SEEDS": [7], "RUNS_DIR": str(root / "runs"), "RUNS_ROOT": str(root / "runs"),
                  "REPORTS_DIR": str(root / "reports")}
    run_notebooks("tiny", out_dir=root / "executed", parameters=parameters)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_with_injected_parameters(executed_with_seed_7, name):
    record = json.loads((executed_with_seed_7 / "reports" / "metrics" / f"{name}.json").read_text())
    assert record["notebook"] == name and record["parameters"]["PROFILE"] == "tiny"
    assert record["parameters"].get("SEEDS", [7]) == [7]
    executed = nbformat.read(executed_with_seed_7 / "executed" / f"{name}.ipynb", as_version=4)
    assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in executed.cells)
    if name == "00_quickstart":
        assert set(record["metrics"]) == {"backbone", "dmesr"}
    if name == "05_results":  # the store the training notebooks filled, with the injected seed
        assert record["metrics"]["runs"] >= 2 and {c["seeds"] for c in record["metrics"]["cells"]} == {1}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_every_figure_cell_shows_a_picture(executed_with_seed_7, name):
    executed = nbformat.read(executed_with_seed_7 / "executed" / f"{name}.ipynb", as_version=4)
    assert figure_cells_without_picture(executed) == []

@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_what_to_notice_quotes_only_numbers_the_outputs_show(executed_with_seed_7, name):
    executed = nbformat.read(executed_with_seed_7 / "executed" / f"{name}.ipynb", as_version=4)
    assert unsupported_claims(executed) == []


def _executed(notice: str, computed: str, shown: str):
    """A notebook whose one code cell printed ``shown``, then "What to notice" and its computed sentences."""
    notebook = nbformat.v4.new_notebook()
    printed = nbformat.v4.new_code_cell("...", outputs=[nbformat.v4.new_output("stream", name="stdout", text=shown)])
    notes = nbformat.v4.new_code_cell("show_notes(...)", outputs=[
        nbformat.v4.new_output("display_data", data={"text/markdown": computed, "text/plain": "<Markdown>"})])
    notebook.cells = [printed, nbformat.v4.new_markdown_cell(f"## What to notice\n{notice}"), notes]
    return notebook


def test_unsupported_claims_finds_numbers_and_quotes_the_outputs_do_not_show():
    shown = "EPOCHS=2; HR@10: backbone 0.047712, DMESR 0.099682; head share 0.6312; 943 users; GoldenEye: gaming console"
    good = _executed("Read the `tiny` profile's 2 epochs on ml-100k with care.",
                     "- HR@10 0.0477 against 0.0997; the head holds 63% of 943 users; it says \"gaming console\".", shown)
    assert unsupported_claims(good) == []
    bad = _executed('GoldenEye becomes "an 18th-century Japanese art piece" (one run: 0.073 against 0.45).',
                    "- HR@10 0.0478; 942 users; +5.9%.", shown)
    assert unsupported_claims(bad) == ["0.073", "0.45", "0.0478", "942", "+5.9%", '"an 18th-century Japanese art piece"']


def test_executed_copies_name_no_folder_of_the_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = repo_root()
    notebook = _executed("", "", f"profile full: REPORTS_DIR='{root}/reports'; cache {tmp_path}/home/.cache/dmesr")
    notebook.metadata["papermill"] = {"input_path": f"{root}/notebooks/05_results.ipynb", "cwd": str(root)}
    nbformat.write(notebook, tmp_path / "05.ipynb")
    without_machine_paths(tmp_path / "05.ipynb")
    cleaned = nbformat.read(tmp_path / "05.ipynb", as_version=4)
    assert cleaned.cells[0].outputs[0].text == "profile full: REPORTS_DIR='reports'; cache ~/.cache/dmesr"
    assert cleaned.metadata.papermill == {"input_path": "notebooks/05_results.ipynb", "cwd": "."}


def test_methods_with_several_configs_are_labelled_by_the_settings_that_differ():
    from dmesr.analysis.comparisons import _labels

    def run(config, integration, seed):
        return {"dataset": "d", "model": "sasrec", "method": "dmesr" if config != "b0" else "backbone",
                "config": config, "seed": seed, "test_NDCG@10": 0.1 + seed / 100, "roles": "",
                "config_yaml": f"items:\n  kind: dmesr\n  integration: {integration}\nmodel:\n  name: sasrec\n"}

    import pandas as pd

    runs = pd.DataFrame([run(c, i, s) for c, i in [("b0", "sum"), ("c1", "sum"), ("c2", "gate"), ("c3", "sum"),
                                                   ("c4", "dual")] for s in (1, 2)])
    labels = dict(zip(runs["config"], _labels(runs)))
    assert labels == {"b0": "backbone", "c1": "dmesr (c1)", "c2": "dmesr (integration=gate)", "c3": "dmesr (c3)",
                      "c4": "dmesr (integration=dual)"}  # c1, c3: the same settings, told apart by their hash
    two = runs[runs["config"].isin(["b0", "c1", "c4"])]
    assert sorted(set(_labels(two))) == ["backbone", "dmesr (integration=dual)", "dmesr (integration=sum)"]


@pytest.mark.slow
def test_results_notebook_explains_an_empty_store(tmp_path):
    executed = run_notebooks("tiny", names=["05"], out_dir=tmp_path / "out",
                             parameters={"RUNS_ROOT": str(tmp_path / "empty"), "REPORTS_DIR": str(tmp_path)})
    notebook = nbformat.read(executed["05_results"]["path"], as_version=4)
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert f"no runs under {tmp_path / 'empty'} and no collection" in printed and "nothing to show yet" in printed
    assert json.loads((tmp_path / "metrics" / "05_results.json").read_text())["metrics"] == {"runs": 0}


@pytest.mark.slow
def test_a_notebook_runs_from_the_repository_root_with_papermill_as_the_readme_says(tmp_path):
    """The README's command shape, from the root rather than notebooks/: paths resolve from the root,
    ``-y`` gives a list, and the profile's settings apply."""
    import subprocess
    import sys

    out = tmp_path / "01.ipynb"
    command = [sys.executable, "-m", "papermill", "-k", "python3", "notebooks/01_datasets.ipynb", str(out),
               "-p", "REPORTS_DIR", str(tmp_path), "-y", "DATASETS: [ml-100k]"]
    subprocess.run(command, cwd=repo_root(), check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(repo_root())})
    record = json.loads((tmp_path / "metrics" / "01_datasets.json").read_text())
    assert record["parameters"]["DATASETS"] == ["ml-100k"] and figure_cells_without_picture(nbformat.read(out, 4)) == []


def test_results_come_from_a_runs_folder_or_a_store_collection(tmp_path, monkeypatch):
    from pathlib import Path

    from dmesr.experiments.run_store import load_runs
    from dmesr.notebooks import results_from

    monkeypatch.setenv("DMESR_ROOT", str(Path(__file__).resolve().parents[1]))
    runs = results_from("main")  # no folder of that name at the root: the committed store's collection
    assert len(runs) == len(load_runs("main", per_user=False)) and {"sasrec", "pop"} <= set(runs["model"])
    assert "user_NDCG@10" in runs.columns  # per-user vectors for the paired tests
    with pytest.raises(FileNotFoundError, match="no collection 'nowhere'"):
        results_from("nowhere")


def _make(*args: str) -> str:
    """``make -s args`` in the checkout: what it prints."""
    import subprocess

    return subprocess.run(["make", "-s", *args], cwd=repo_root(), check=True, capture_output=True,
                          text=True).stdout


def _makefile_filter(python: str) -> str:
    """The nbstripout command ``make install`` configures as the git clean filter, with ``python`` as the venv's."""
    return _make(f"PY={python}", "--eval", "show-filter: ; $(info $(NBSTRIPOUT))", "show-filter").strip()


def _makefile_contents_manager(venv, root, monkeypatch):
    """JupyterLab's contents manager for ``root``, as a server run from ``venv`` makes it: configured by the
    file ``make install`` writes into the venv (an installed one: its stamp is there)."""
    import sys

    from jupyter_core.paths import ENV_CONFIG_PATH
    from jupyter_server.serverapp import ServerApp

    (venv / ".dmesr-installed").parent.mkdir(parents=True)
    (venv / ".dmesr-installed").touch()
    config = venv / "etc/jupyter/jupyter_server_config.json"
    _make(f"VENV={venv}", str(config))
    # a server run from a venv reads <venv>/etc/jupyter; this one is not the running venv, so name it
    assert os.path.join(sys.prefix, "etc", "jupyter") in ENV_CONFIG_PATH
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(config.parent))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(venv / "no-user-config"))
    server = ServerApp()
    server.load_config_file()
    assert str(config) in server.loaded_config_files
    return server.contents_manager_class(config=server.config, root_dir=str(root))


def _as_jupyterlab_saves(notebook: dict, count: int) -> dict:
    """``notebook`` after a run in JupyterLab: outputs, execution counts, the kernel's metadata, trust and
    collapse marks."""
    notebook["metadata"]["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                          "name": "python3"}
    notebook["metadata"]["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
        "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3", "version": "3.11.2"}
    for number, cell in enumerate(c for c in notebook["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = number + count
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["ran\n"]}]
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-12-07T04:00:00.000Z"}
        cell["metadata"]["trusted"] = True
    notebook["cells"][0]["metadata"]["jp-MarkdownHeadingCollapsed"] = True
    return notebook


def test_a_jupyterlab_save_leaves_git_status_clean(tmp_path, monkeypatch):
    """Clone the committed notebooks, configure git and Jupyter as ``make install`` does, then save each through
    the server's contents manager as JupyterLab does after running it: ``git status`` lists nothing, the
    outputs stay in the working copy, and a real edit is listed as modified and left unstaged."""
    import asyncio
    import subprocess
    import sys

    from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

    from dmesr.jupyter_git import refresh_git_index

    clone = tmp_path / "clone"

    def git(*args):
        return subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True, text=True).stdout

    subprocess.run(["git", "clone", "-q", str(repo_root()), str(clone)], check=True)
    git("config", "filter.nbstripout.clean", _makefile_filter(sys.executable))
    git("config", "filter.nbstripout.smudge", "cat")
    server = _makefile_contents_manager(tmp_path / "venv", clone, monkeypatch)
    assert server.post_save_hook is refresh_git_index

    def save(manager, name, edit=lambda notebook: notebook):
        path = f"notebooks/{name}.ipynb"
        notebook = edit(_as_jupyterlab_saves(json.loads((clone / path).read_text()), count=1))
        asyncio.run(manager.save({"type": "notebook", "format": "json", "content": notebook}, path))
        return path

    # without the hook git lists a saved notebook for its new size, though the filter maps it to the index's blob
    listed = save(AsyncFileContentsManager(root_dir=str(clone)), EXPECTED[1])
    assert git("status", "--porcelain") == f" M {listed}\n" and git("diff", "--stat") == ""
    for name in EXPECTED:
        save(server, name)
    assert git("status", "--porcelain") == ""
    assert all(json.loads((clone / f"notebooks/{name}.ipynb").read_text())["metadata"]["language_info"]
               for name in EXPECTED)  # the working copies keep what the kernel wrote

    def edit_first_code_cell(notebook):
        next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"] += "\nprint('edited')"
        return notebook

    edited = save(server, EXPECTED[0], edit_first_code_cell)
    assert git("status", "--porcelain") == f" M {edited}\n"  # modified in the working tree, nothing staged
    assert git("diff", "--cached", "--name-only") == "" and "print('edited')" in git("diff")


def test_the_save_hook_leaves_entries_it_must_not_rewrite(tmp_path):
    """Untracked, intent-to-add and assume-unchanged files, and files outside a checkout: the hook does nothing."""
    import subprocess

    from dmesr.jupyter_git import refresh_git_index

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    (tmp_path / "outside.ipynb").write_text("{}")
    assert not refresh_git_index(os_path=str(tmp_path / "outside.ipynb"))
    git("init", "-q")
    for name in ("untracked", "intent", "assumed", "tracked"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    git("add", "assumed.ipynb", "tracked.ipynb")
    git("add", "--intent-to-add", "intent.ipynb")
    git("update-index", "--assume-unchanged", "assumed.ipynb")
    before = git("ls-files", "--stage", "-v")
    assert [refresh_git_index(os_path=str(tmp_path / f"{name}.ipynb"))
            for name in ("untracked", "intent", "assumed", "tracked")] == [False, False, False, True]
    assert git("ls-files", "--stage", "-v") == before  # the same entries, flags and blobs


def test_notes_say_what_the_numbers_say():
    import numpy as np

    from dmesr import notes

    curves = {"rising": np.array([0.1, 0.2]), "peaked": np.array([0.2, 0.1]), "stopped early": np.array([0.3])}
    assert notes.capped_runs(curves, max_epochs=2) == ["rising"]
    assert notes.capped_runs(curves, max_epochs=5) == []  # below the cap: stopped by early stopping
    equal = notes.explorer(0.448, {"backbone": 0.1898, "DMESR": 0.1898}, 5.94)[0]
    assert equal.startswith("Backbone and DMESR hit the held-out item equally often (HR@10 0.1898)")
    unequal = notes.explorer(0.089, {"backbone": 0.0477, "DMESR": 0.0997}, 1.5)[0]
    assert unequal.startswith("DMESR hits the held-out item more often than backbone (HR@10 0.0997 against 0.0477)")
