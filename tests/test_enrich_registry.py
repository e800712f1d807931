"""One describer registry: every registered describer imports, is matched by its exact name, and is
given only the options it declares."""

import pandas as pd
import pytest

from dmesr.cli import build_parser, describer_options_given
from dmesr.enrich.describers import Describer
from dmesr.enrich.pipeline import of_describer
from dmesr.enrich.registry import DESCRIBERS, describer_class, describer_options, make_describer

# the enrich flags that carry describer options (dmesr.cli.describer_options_given)
CLI_OPTIONS = {"model", "path", "device", "max_new_tokens", "no_repeat_ngram_size", "trust_remote_code"}


@pytest.mark.parametrize("name", sorted(DESCRIBERS))
def test_every_registered_describer_imports_and_declares_its_options(name):
    assert issubclass(describer_class(name), Describer)
    options = describer_options(name)
    required = {key for key, parameter in options.items() if parameter.default is parameter.empty}
    assert required <= CLI_OPTIONS, f"{name} needs an option the CLI cannot give: {required - CLI_OPTIONS}"


@pytest.mark.parametrize("name", sorted(DESCRIBERS))
def test_the_cli_passes_a_describer_only_the_options_it_declares(name):
    args = build_parser().parse_args(["enrich", "--dataset", "d", "--describer", name, "--path", "f.jsonl",
                                      "--model", "m", "--device", "cpu", "--trust-remote-code"])
    given = describer_options_given(args)
    assert set(given) <= set(describer_options(name))
    if name == "precomputed":
        assert given == {"path": "f.jsonl"}  # no generation settings: it generates nothing


def test_an_undeclared_or_missing_option_is_one_line():
    with pytest.raises(ValueError, match="takes no option no_repeat_ngram_size"):
        make_describer("precomputed", path="x.jsonl", no_repeat_ngram_size=3)
    with pytest.raises(ValueError, match="needs path="):
        make_describer("precomputed")
    with pytest.raises(ValueError, match="unknown describer 'gemma'"):
        make_describer("gemma")


def test_a_describer_name_selects_its_descriptions_exactly():
    table = pd.DataFrame({"item": ["1", "1", "1"], "view": ["text"] * 3, "description": ["a", "b", "c"],
                          "describer": ["gemma3:270m:plain:mnt64", "gemma:2b:mnt64", "cascade:x:k5:mnt64"]})
    assert list(of_describer(table, "gemma")["description"]) == ["b"]
    assert list(of_describer(table, "gemma3")["description"]) == ["a"]
    assert list(of_describer(table, "cascade:x:k5:mnt64")["description"]) == ["c"]
    assert of_describer(table, "cas").empty
