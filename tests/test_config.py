from pathlib import Path

import pytest
import yaml

from dmesr.config import CONFIG_VERSION, config_from_dict, load_config, save_config


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


def test_the_run_hash_covers_every_setting_but_where_and_how_fast():
    from dmesr.training.run import config_hash

    base = load_config(overrides={"items": {"kind": "dmesr"}})
    elsewhere = load_config(overrides={"items": {"kind": "dmesr"}, "output_dir": "x",
                                       "train": {"seed": 7, "device": "cpu", "num_threads": 3}})
    assert config_hash(base) == config_hash(elsewhere)  # the seed is in the run directory's name instead
    for changed in ({"items": {"fusion_norm": "post"}}, {"train": {"lr": 5e-4}}, {"data": {"max_len": 20}}):
        other = load_config(overrides={"items": {"kind": "dmesr"}})
        for section, values in changed.items():
            for key, value in values.items():
                setattr(getattr(other, section), key, value)
        assert config_hash(other) != config_hash(base), changed


def test_the_names_a_config_accepts_are_the_ones_implemented():
    from dmesr import config
    from dmesr.models import BASELINES, MODELS

    assert tuple(MODELS) == config.BACKBONES and tuple(BASELINES) == config.TRIVIAL_BASELINES
    for name in (*config.BACKBONES, *config.TRIVIAL_BASELINES):
        load_config(overrides=[f"model.name={name}"])
    with pytest.raises(ValueError, match="unknown model.name 'nope'"):
        load_config(overrides=["model.name=nope"])
