import dataclasses
from pathlib import Path

import pytest
import yaml

from dmesr.config import (
    ADDED_SETTINGS,
    CONFIG_VERSION,
    ModelConfig,
    RunConfig,
    config_from_dict,
    config_hash,
    load_config,
    migrate_config,
    save_config,
    settings,
)


def test_precedence_cli_over_yaml_over_defaults(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("train: {lr: 0.005, batch_size: 64}\nmodel: {name: gru4rec}\n")
    config = load_config(path, ["train.lr=0.0001"])
    assert config.train.lr == 0.0001  # command line wins
    assert config.train.batch_size == 64  # YAML beats the default
    assert config.model.name == "gru4rec"
    assert config.train.patience == 10  # untouched default


def test_round_trip_keeps_types(tmp_path: Path):
    config = load_config(overrides=["eval.ks=[1,3]", "items.views=[text]", "train.deterministic=true"])
    save_config(config, tmp_path / "c.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text()))
    assert again == config
    assert again.eval.ks == (1, 3) and again.items.views == ("text",) and again.train.deterministic is True


@pytest.mark.parametrize("override, message", [
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["train.lr=fast"], "expects a number"),
    (["train.deterministic=maybe"], "expects true/false"),
    (["nonsense"], "section.key=value"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=override)


def test_missing_yaml_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_incompatible_version_is_refused():
    data = load_config().to_dict()
    data["version"] = CONFIG_VERSION + 1
    with pytest.raises(ValueError, match="config version"):
        config_from_dict(data)


def _version_1(**missing_keys) -> dict:
    """A saved version-1 config: today's settings less those added since (``ADDED_SETTINGS``)."""
    data = load_config(overrides={"items": {"kind": "dmesr"}}).to_dict()
    data["version"] = 1
    for key in ADDED_SETTINGS:
        section, name = key.split(".")
        del data[section][name]
    return data


def test_a_version_1_config_reads_as_what_it_trained():
    config = config_from_dict(_version_1())
    # before each setting existed: post-norm fusion, the full-width token adapter, no control, eager steps
    assert config.items.fusion_norm == "post" and config.items.token_pca_dim == 0
    assert config.items.control == "none" and config.train.compile is False
    assert config.version == CONFIG_VERSION
    complete = migrate_config(_version_1())
    assert set(settings(config_from_dict(complete))) == set(settings(RunConfig()))
    assert migrate_config(complete) == complete  # migrating twice changes nothing


def test_a_saved_config_lacking_a_setting_no_migration_supplies_is_refused():
    data = _version_1()
    del data["train"]["lr"]
    with pytest.raises(ValueError, match="lacks 'train.lr'"):
        config_from_dict(data)


def test_the_run_hash_covers_every_setting_but_where_and_how_fast():
    base = load_config(overrides={"items": {"kind": "dmesr"}})
    elsewhere = load_config(overrides={"items": {"kind": "dmesr"}, "output_dir": "x",
                                       "train": {"seed": 7, "device": "cpu", "num_threads": 3, "compile": True}})
    assert config_hash(base) == config_hash(elsewhere)  # the seed is in the run directory's name instead
    for changed in ({"items": {"fusion_norm": "post"}}, {"train": {"lr": 5e-4}}, {"data": {"max_len": 20}}):
        other = load_config(overrides={"items": {"kind": "dmesr"}})
        for section, values in changed.items():
            for key, value in values.items():
                setattr(getattr(other, section), key, value)
        assert config_hash(other) != config_hash(base), changed


@pytest.mark.parametrize("model, kind, inert, in_effect", [
    ("sasrec", "id", ["items.fusion_norm=post", "items.align_weight=0.5", "items.describer=x", "model.mask_prob=0.5"],
     ["model.num_heads=4", "train.lr=0.01"]),
    ("gru4rec", "text", ["items.fusion_norm=post", "items.integration=gate", "model.num_heads=4"],
     ["items.describer=x", "model.dropout=0.3"]),
    ("sasrec", "dmesr", ["model.mask_prob=0.5"], ["items.fusion_norm=post", "items.token_pca_dim=0"]),
    ("bert4rec", "dmesr", ["items.fusion_norm=post", "items.token_pca_dim=0"],  # no fusion without the text
     ["items.integration=gate", "model.mask_prob=0.5"]),
    ("pop", "id", ["model.hidden_size=8", "train.lr=0.5", "train.loss=bce"], ["data.max_len=20", "eval.ks=[3]"]),
])
def test_a_run_identity_hashes_only_the_settings_in_effect(model, kind, inert, in_effect):
    base = [f"model.name={model}", f"items.kind={kind}"] + (["items.use_original_text=false"] if model == "bert4rec"
                                                            else [])
    identity = config_hash(load_config(overrides=base))
    for pair in inert:
        assert config_hash(load_config(overrides=base + [pair])) == identity, pair
    for pair in in_effect:
        assert config_hash(load_config(overrides=base + [pair])) != identity, pair


def test_adding_a_setting_at_its_former_behaviour_changes_no_identity(monkeypatch):
    """What adding a setting does (the comment above ADDED_SETTINGS): listed with the value that gives the
    behaviour from before, it leaves every identity as it was; set to anything else, it is hashed."""
    config = load_config(overrides=["items.kind=dmesr"])
    identity = config_hash(config)
    wider = dataclasses.make_dataclass("Model", [("repeat_aware", bool, False)], bases=(ModelConfig,))
    config.model = wider(**dataclasses.asdict(config.model))
    assert config_hash(config) != identity  # not listed: every identity would change
    monkeypatch.setitem(ADDED_SETTINGS, "model.repeat_aware", False)
    assert config_hash(config) == identity
    config.model.repeat_aware = True
    assert config_hash(config) != identity


# Identities of stored runs (reports/store), pinned: a change to the settings or to how they are hashed must not
# rename a run that exists (add a setting as the comment above config.ADDED_SETTINGS says).
PINNED = {("main", "ml-100k/sasrec/id-07f97036-seed1"): "5efde0c1",
          ("main", "ml-100k/sasrec/dmesr-7bce7f35-seed1"): "40005505",
          ("main", "ml-100k/sasrec/dmesr-02e1333a-seed1"): "ecfec49b",  # post-norm
          ("post-norm", "ml-100k/sasrec/dmesr-f4afa304-seed1"): "b3f4f728",
          ("main", "ml-100k/pop/id-84549d7a-seed1"): "a212bfde"}


def test_pinned_identities_of_stored_runs():
    from dmesr.experiments.run_store import read_table

    runs = read_table("runs", Path(__file__).parents[1] / "reports/store").set_index(["collection", "run"])
    for key, identity in PINNED.items():
        assert config_hash(config_from_dict(yaml.safe_load(runs.loc[key, "config_yaml"]))) == identity, key


def test_the_names_a_config_accepts_are_the_ones_implemented():
    from dmesr import config
    from dmesr.models import BASELINES, SequentialRecommender, backbone_class

    assert all(issubclass(backbone_class(name), SequentialRecommender) for name in config.BACKBONES)
    assert tuple(BASELINES) == config.TRIVIAL_BASELINES
    for name in (*config.BACKBONES, *config.TRIVIAL_BASELINES):
        load_config(overrides=[f"model.name={name}"])
    with pytest.raises(ValueError, match="unknown model.name 'nope'"):
        load_config(overrides=["model.name=nope"])
