"""The package's layout: no import circle, the reports read out of the runs and never the other way, and the
shared leaves import no stage (``benchmarks/import_graph.py`` prints the whole structure)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.import_graph import circles, import_edges, missing_modules, module_files, package_of

MODULES = module_files(Path(__file__).resolve().parents[1])
EDGES = import_edges(MODULES)
LEAVES = ("dmesr.viz", "dmesr.markdown", "dmesr.paths", "dmesr.lock", "dmesr.shards")


def test_the_import_graph_is_read_from_every_module():
    assert {"dmesr.cli", "dmesr.experiments.run_store", "dmesr.analysis.results_report"} <= set(MODULES)
    assert ("dmesr.analysis.results_report", "dmesr.experiments.run_store") in EDGES
    assert ("dmesr.data.registry", "dmesr.data.image_checks") in EDGES


def test_every_imported_module_exists(tmp_path):
    assert missing_modules(MODULES) == []
    (tmp_path / "dmesr").mkdir()
    (tmp_path / "dmesr" / "__init__.py").write_text("")
    (tmp_path / "dmesr" / "a.py").write_text("from dmesr.b import x\nimport dmesr.c\nfrom dmesr import a\n")
    assert missing_modules(module_files(tmp_path)) == [f"{tmp_path / 'dmesr' / 'a.py'}: dmesr.b",
                                                       f"{tmp_path / 'dmesr' / 'a.py'}: dmesr.c"]


def test_no_import_circle():
    assert circles(MODULES, EDGES) == []


def test_circles_are_found():
    edges = {("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d")}
    assert circles(dict.fromkeys("abcdef"), edges) == [["a", "b", "c"], ["d", "e"]]


def test_only_the_command_line_imports_the_analysis():
    """The analysis reads the run store; the runs (experiments) and every stage below know nothing of it."""
    importers = {package_of(a) for a, b in EDGES if package_of(b) == "dmesr.analysis"} - {"dmesr.analysis"}
    assert importers == {"dmesr.cli"}


def test_shared_leaves_import_no_other_module():
    assert sorted((a, b) for a, b in EDGES if a in LEAVES) == []
