import pytest

from dmesr.cli import main


def test_data_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path))  # no datasets added there
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out.split() == ["ml-100k", "ml-1m", "ml-latest-small"]


def test_unknown_dataset_is_one_clear_line(capsys):
    assert main(["data", "stats", "no-such-data"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown dataset 'no-such-data'" in err and "ml-1m" in err


def test_bad_override_is_reported(capsys):
    assert main(["train", "--set", "train.nonsense=1"]) == 2
    assert "unknown config key 'train.nonsense'" in capsys.readouterr().err


def test_evaluate_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a finished dmesr run directory" in capsys.readouterr().err


def test_reevaluating_a_folder_without_runs_is_one_clear_line(tmp_path, capsys):
    assert main(["experiments", "evaluate", str(tmp_path)]) == 2
    assert f"no finished runs (final.json) under {tmp_path}" in capsys.readouterr().err


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("data", "enrich", "embed", "train", "evaluate", "experiments", "report", "export", "notebooks"):
        assert command in out


def test_enrich_export_writes_a_self_describing_file(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from dmesr.enrich.cache import read_description_header, read_descriptions

    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    fixtures = Path(__file__).resolve().parents[1] / "data" / "fixtures"
    out = tmp_path / "toy.text.jsonl"
    command = ["enrich", "--dataset", str(fixtures / "image-toy"), "--describer", "precomputed",
               "--path", str(fixtures / "image-toy.cascade.jsonl"), "--views", "text", "--export", str(out)]
    assert main(command) == 0
    header = read_description_header(out)
    assert header["command"].split()[1:3] == ["enrich", "--dataset"] and header["records"] == 16
    assert header["describer"] == "precomputed:image-toy.cascade.jsonl" and set(header["prompts"]) == {"text"}
    assert len(read_descriptions(out)) == 16 and f"exported 16 descriptions -> {out}" in capsys.readouterr().out


def test_notebook_parameters_are_parsed_as_yaml_and_bad_ones_named(capsys):
    from dmesr.cli import _parameters

    assert _parameters(["THREADS=1", "SEEDS=[1, 2]", "DATASET=ml-1m"]) == {"THREADS": 1, "SEEDS": [1, 2],
                                                                             "DATASET": "ml-1m"}
    assert main(["notebooks", "run", "00", "-p", "THREADS"]) == 2
    assert "must look like NAME=VALUE, got 'THREADS'" in capsys.readouterr().err
