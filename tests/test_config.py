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


def test_added_fields_keep_stored_runs_readable_and_their_hashes():
    from dmesr.training.run import config_hash

    config = load_config(overrides={"items": {"kind": "dmesr"}})
    assert config.items.fusion_norm == "pre"  # today's default
    before_the_field = config.to_dict()
    del before_the_field["items"]["fusion_norm"]  # a config.yaml saved before the field existed
    # reads as what the code of its time did, not as today's default
    assert config_from_dict(before_the_field).items.fusion_norm == "post"

    # the value older runs used stays out of the hash; another value changes it where it changes
    # what is computed, and only there
    def hashes(**items):
        return {norm: config_hash(load_config(overrides={"items": {**items, "fusion_norm": norm}}))
                for norm in ("post", "pre")}
    assert len(set(hashes(kind="dmesr").values())) == 2
    assert hashes(kind="dmesr")["post"] == config_hash(config_from_dict(before_the_field))
    for inert in (dict(kind="id"), dict(kind="llmesr"), dict(kind="dmesr", fusion="none"),
                  dict(kind="dmesr", use_original_text=False)):
        assert len(set(hashes(**inert).values())) == 1, inert


def test_stored_runs_keep_the_directory_names_of_their_configs():
    from dmesr.config import saved_run_config
    from dmesr.training.run import config_hash

    stored = sorted((Path(__file__).resolve().parents[1] / "reports" / "runs").glob("*/*/*/*-seed*/config.yaml"))
    assert stored, "no stored runs to check"
    for path in stored[::25]:
        run = path.parent
        assert run.name.rsplit("-", 2)[1] == config_hash(saved_run_config(run)), run
