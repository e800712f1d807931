"""The committed run store says what was trained: complete configs, reproducible identities."""

from pathlib import Path

import pandas as pd
import yaml

from dmesr.config import CONFIG_VERSION, config_hash, load_config
from dmesr.experiments.store import audit_configs, migrate_store, read_table

STORE = Path(__file__).parents[1] / "reports/store"


def test_every_stored_config_is_complete_and_gives_its_identity():
    audit = audit_configs(read_table("runs", STORE))
    incomplete = audit[~audit["complete"]]
    assert incomplete.empty, incomplete[["collection", "run", "missing", "version"]].head().to_string()
    mismatched = audit[~audit["identity_matches"]]
    assert mismatched.empty, mismatched[["collection", "run"]].head().to_string()


def test_post_norm_runs_say_post():
    runs = read_table("runs", STORE)
    post = runs[(runs["collection"] == "post-norm") | (runs["method"] == "dmesr-post-norm")]
    assert len(post) >= 100
    assert {yaml.safe_load(text)["items"]["fusion_norm"] for text in post["config_yaml"]} == {"post"}
    assert (runs["config_version"] == CONFIG_VERSION).all()


def test_migrating_a_store_completes_version_1_configs_once(tmp_path: Path):
    config = load_config(overrides=["items.kind=dmesr"])
    old = config.to_dict()
    old["version"] = 1
    del old["items"]["fusion_norm"], old["items"]["control"], old["train"]["compile"]
    pd.DataFrame({"collection": ["c"], "run": ["r"], "config_yaml": [yaml.safe_dump(old)], "config": ["stale"],
                  "config_version": [1]}).to_parquet(tmp_path / "runs.parquet")
    assert not audit_configs(read_table("runs", tmp_path))["complete"].any()
    assert migrate_store(tmp_path) == 1
    runs = read_table("runs", tmp_path)
    audit = audit_configs(runs)
    assert audit["complete"].all() and audit["identity_matches"].all()
    saved = yaml.safe_load(runs["config_yaml"].iat[0])
    assert saved["items"]["fusion_norm"] == "post" and saved["version"] == CONFIG_VERSION
    config.items.fusion_norm = "post"
    assert runs["config"].iat[0] == config_hash(config)
    assert migrate_store(tmp_path) == 0
