"""Experiment grids: expansion, override order, per-dataset restrictions, clear errors, shards."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from dmesr.config import nested_overrides
from dmesr.experiments.grid import expand_grid, load_grid
from dmesr.experiments.runner import shard_cells
from dmesr.shards import parse_shard

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "experiments"


def spec(**changes):
    base = {
        "name": "demo",
        "base": {"data": {"max_len": 20}, "train.max_epochs": 3},
        "datasets": ["ml-100k", "ml-1m"],
        "models": ["sasrec", "gru4rec"],
        "seeds": [1, 2],
        "methods": {"backbone": {"items.kind": "id"},
                    "dmesr": {"items": {"kind": "dmesr", "align_weight": 0.5}},
                    "dmesr-no-align": {"items.kind": "dmesr", "items.align_weight": 0}},
    }
    return {**base, **changes}


def test_expansion_counts_order_and_overrides():
    cells = expand_grid(spec())
    assert len(cells) == 2 * 2 * 3 * 2
    assert [c.label for c in cells[:3]] == ["ml-100k/sasrec/backbone/seed1", "ml-100k/sasrec/backbone/seed2",
                                            "ml-100k/sasrec/dmesr/seed1"]
    by_label = {c.label: c for c in cells}
    cell = by_label["ml-1m/gru4rec/dmesr-no-align/seed2"]
    assert (cell.config.data.dataset, cell.config.model.name, cell.config.train.seed) == ("ml-1m", "gru4rec", 2)
    assert cell.config.items.kind == "dmesr" and cell.config.items.align_weight == 0.0
    assert by_label["ml-1m/gru4rec/dmesr/seed2"].config.items.align_weight == 0.5
    assert cell.config.data.max_len == 20 and cell.config.train.max_epochs == 3  # base applies everywhere
    assert cell.config.output_dir == str(Path("runs") / "demo")
    assert cell.run_dir.parts[:4] == ("runs", "demo", "ml-1m", "gru4rec")
    # the seed is not part of the config hash: seeds of one method differ only in the seed suffix
    assert by_label["ml-1m/gru4rec/dmesr/seed1"].run_dir.name.rsplit("-seed", 1)[0] == \
        by_label["ml-1m/gru4rec/dmesr/seed2"].run_dir.name.rsplit("-seed", 1)[0]
    assert len({c.run_dir for c in cells}) == len(cells)


def test_order_puts_seeds_outermost_and_keeps_the_only_lists_order():
    default = expand_grid(spec())
    cells = expand_grid(spec(order=["dataset", "seed", "method", "model"],
                             only={"ml-1m": {"methods": ["dmesr", "backbone"]}}))
    ml1m = [c.label for c in cells if c.dataset == "ml-1m"]
    assert ml1m == [f"ml-1m/{model}/{method}/seed{seed}" for seed in (1, 2) for method in ("dmesr", "backbone")
                    for model in ("sasrec", "gru4rec")]
    assert [c.dataset for c in cells] == sorted(c.dataset for c in cells)  # datasets stay outermost
    ml100k = {c.label: c.run_dir for c in cells if c.dataset == "ml-100k"}
    assert ml100k == {c.label: c.run_dir for c in default if c.dataset == "ml-100k"}  # same runs, other order
    assert list(ml100k) != [c.label for c in default if c.dataset == "ml-100k"]


def test_per_dataset_overrides_and_only_restrictions():
    cells = expand_grid(spec(per_dataset={"ml-1m": {"data.max_len": 200}},
                             only={"ml-1m": {"methods": ["backbone", "dmesr"], "models": ["sasrec"]}}))
    counts = Counter((c.dataset, c.model, c.method) for c in cells)
    assert sum(1 for c in cells if c.dataset == "ml-100k") == 2 * 3 * 2
    assert {key for key in counts if key[0] == "ml-1m"} == {("ml-1m", "sasrec", "backbone"), ("ml-1m", "sasrec", "dmesr")}
    assert all(count == 2 for count in counts.values())
    assert {c.config.data.max_len for c in cells if c.dataset == "ml-1m"} == {200}
    assert {c.config.data.max_len for c in cells if c.dataset == "ml-100k"} == {20}


def test_per_model_overrides_sit_between_per_dataset_and_methods():
    cells = expand_grid(spec(per_dataset={"ml-1m": {"train.patience": 5, "train.lr": 0.5}},
                             per_model={"gru4rec": {"model.num_layers": 1, "train.patience": 20}},
                             methods={"backbone": {}, "slow": {"train.lr": 0.01, "train.patience": 7}}))
    settings = {(c.dataset, c.model, c.method): (c.config.model.num_layers, c.config.train.patience, c.config.train.lr)
                for c in cells}
    assert settings[("ml-1m", "gru4rec", "backbone")] == (1, 20, 0.5)  # per_model over per_dataset
    assert settings[("ml-1m", "sasrec", "backbone")] == (2, 5, 0.5)
    assert settings[("ml-1m", "gru4rec", "slow")] == (1, 7, 0.01)  # the method over both
    assert settings[("ml-100k", "gru4rec", "backbone")][:2] == (1, 20)


def test_method_overrides_beat_base_and_output_dir_is_configurable():
    cells = expand_grid(spec(base={"train.lr": 0.01, "output_dir": "/tmp/x"},
                             methods={"backbone": {}, "fast": {"train.lr": 0.1}}))
    assert {c.method: c.config.train.lr for c in cells} == {"backbone": 0.01, "fast": 0.1}
    assert {c.config.output_dir for c in cells} == {"/tmp/x"}


def test_nested_overrides_merge_dotted_and_nested_keys():
    assert nested_overrides({"items.kind": "id", "items": {"fusion": "none"}, "train": {"lr": 1}}, "x") == \
        {"items": {"kind": "id", "fusion": "none"}, "train": {"lr": 1}}


@pytest.mark.parametrize("changes, message", [
    ({"method": {}}, "unknown experiment key(s) 'method'"),
    ({"methods": {"backbone": {"items.knd": "id"}}}, "method 'backbone': unknown config key 'items.knd'"),
    ({"methods": {"m": {"model.name": "gru4rec"}}}, "sets model.name, which the grid's 'models' list controls"),
    ({"only": {"ml-1m": {"methods": ["dmesr-typo"]}}}, "unknown method 'dmesr-typo'"),
    ({"only": {"ml-20m": {"methods": ["backbone"]}}}, "only names 'ml-20m'"),
    ({"per_dataset": {"ml-20m": {"data.max_len": 9}}}, "per_dataset names 'ml-20m'"),
    ({"per_model": {"caser": {"model.num_layers": 1}}}, "per_model names 'caser'"),
    ({"roles": {"proposed": "dmesr-typo"}}, "roles name unknown method(s) 'dmesr-typo'"),
    ({"roles": {"proposed": "dmesr", "variants": ["dmesr"]}}, "roles give a method two roles"),
    ({"roles": {"winner": "dmesr"}}, "'roles' must be a mapping with keys from"),
    ({"datasets": []}, "'datasets' must be a non-empty list"),
    ({"methods": {}}, "'methods' must be a non-empty mapping"),
    ({"seeds": [1, 1]}, "lists a name twice"),
    ({"order": ["dataset", "seed", "model"]}, "'order' must list each of dataset, model, method, seed once"),
    ({"order": ["dataset", "seed", "model", "methods"]}, "'order' must list each of"),
    ({"seeds": ["a"]}, "'seeds' must be integers"),
    ({"methods": {"a": {"train.lr": 0.1}, "b": {"train.lr": 0.1}}}, "methods 'a' and 'b' give the same run config"),
    ({"base": {"train.max_epochs": "many"}}, "base: config key 'train.max_epochs' expects an integer"),
])
def test_bad_experiments_fail_with_a_clear_error(changes, message):
    with pytest.raises(ValueError) as error:
        expand_grid(spec(**changes))
    assert message in str(error.value)


def test_missing_key_and_missing_file(tmp_path):
    incomplete = spec()
    del incomplete["seeds"]
    with pytest.raises(ValueError, match="missing experiment key.*'seeds'"):
        expand_grid(incomplete)
    with pytest.raises(FileNotFoundError, match="experiment file not found"):
        load_grid(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_grid(tmp_path / "list.yaml")


def test_a_file_extends_another_key_by_key(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump(spec(only={"ml-1m": {"methods": ["backbone"]}})))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(
        {"extends": "parent.yaml", "datasets": ["ml-1m"], "only": {"ml-1m": {"methods": ["dmesr-no-align"]}}}))
    parent, child = load_grid(tmp_path / "parent.yaml"), load_grid(tmp_path / "child.yaml")
    assert {c.method for c in child} == {"dmesr-no-align"} and {c.dataset for c in child} == {"ml-1m"}
    assert len(child) == 2 * 2 and {c.experiment for c in child} == {"demo"}  # models, seeds and name inherited
    assert {c.config.data.max_len for c in child} == {20} and child[0].config.items.align_weight == 0
    assert not {c.run_dir for c in child} & {c.run_dir for c in parent}


def test_a_broken_extends_chain_is_named(tmp_path):
    (tmp_path / "orphan.yaml").write_text("extends: gone.yaml\n")
    with pytest.raises(FileNotFoundError, match="gone.yaml \\(extended by .*orphan.yaml\\)"):
        load_grid(tmp_path / "orphan.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="'extends' makes a cycle"):
        load_grid(tmp_path / "a.yaml")


@pytest.mark.parametrize("count", [1, 3, 7, 30])
def test_shards_partition_the_grid_exactly_once(count):
    cells = expand_grid(spec())
    shards = [shard_cells(cells, f"{index}/{count}") for index in range(count)]
    labels = [cell.label for shard in shards for cell in shard]
    assert sorted(labels) == sorted(cell.label for cell in cells)  # every cell, none twice
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert [c.label for c in shard_cells(cells, f"0/{count}")] == [c.label for c in shards[0]]  # deterministic


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "1-4", "a/b"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_image_fixture_grid_covers_both_views_and_each_view_alone():
    cells = load_grid(CONFIGS / "image-toy.yaml")
    assert len(cells) == 3 * 5 * 3
    views = {c.method: c.config.items.views for c in cells if c.config.items.kind == "dmesr"}
    assert tuple(views["dmesr-no-image-view"]) == ("text",) and tuple(views["dmesr-no-text-view"]) == ("image",)
    assert set(views["dmesr"]) == {"image", "text"}


def test_shipped_experiment_files_expand():
    smoke = load_grid(CONFIGS / "smoke.yaml")
    assert len(smoke) == 4 and {c.config.train.max_epochs for c in smoke} == {2}
    assert {(c.model, c.method) for c in smoke} == {(m, k) for m in ("sasrec", "gru4rec") for k in ("backbone", "text")}
    main = load_grid(CONFIGS / "main.yaml")
    methods = yaml.safe_load((CONFIGS / "main.yaml").read_text())["methods"]
    assert len(methods) == 17
    ablations = load_grid(CONFIGS / "ml-1m-ablations.yaml")
    assert len(ablations) == 3 * 5 * 3 and {c.dataset for c in ablations} == {"ml-1m"}
    assert not {c.run_dir for c in ablations} & {c.run_dir for c in main}  # a second stage, no cell twice
    counts = Counter(c.dataset for c in main)
    # the three other integration modes of DMESR and the alignment-weight sweep run on ml-100k only
    assert counts["ml-100k"] == 3 * 17 * 3 and counts["ml-latest-small"] == 3 * 11 * 3
    assert {c.config.items.integration for c in main if c.method.startswith("dmesr-") and c.dataset == "ml-100k"} == {
        "sum", "concat", "gate", "dual"}
    assert {c.config.items.align_weight for c in main if c.config.items.kind == "dmesr"} == {0, 0.03, 0.1, 0.3, 1.0}
    assert {c.config.train.patience for c in main} == {20}
    ml1m = {(c.model, c.method) for c in main if c.dataset == "ml-1m"}
    assert {"backbone", "dmesr"} <= {method for _, method in ml1m}
    assert {model for model, _ in ml1m} == {"sasrec", "bert4rec", "gru4rec"}
    assert {c.config.data.max_len for c in main} == {50}
    # ml-1m runs seeds outermost: one seed of every cell comes before any second seed
    first_ml1m_seed2 = next(i for i, c in enumerate(main) if c.dataset == "ml-1m" and c.seed == 2)
    assert all(c.seed == 1 for c in main[first_ml1m_seed2 - 12:first_ml1m_seed2])
    by_method = {c.method: c.config.items for c in main if c.dataset == "ml-100k" and c.model == "sasrec"}
    assert {c.config.output_dir for c in main} == {"reports/runs/main"}
    assert by_method["dmesr-no-fusion"].fusion == "none" and by_method["dmesr-no-text"].use_original_text is False
    assert by_method["dmesr-frozen-adapters"].freeze_adapters is True


def test_roles_are_recorded_with_every_cell_in_the_grid_order():
    cells = expand_grid(spec(roles={"baselines": ["dmesr-no-align"], "proposed": "dmesr"}))
    roles = {c.roles for c in cells}
    assert len(roles) == 1
    recorded = cells[0].identity()["roles"]
    assert recorded == {"backbone": "backbone", "baselines": ["dmesr-no-align"], "proposed": "dmesr", "variants": []}
    assert expand_grid(spec())[0].identity()["roles"]["proposed"] == ""  # no roles declared: only the backbone
