"""The committed run store says what was trained: complete configs, reproducible identities."""

from pathlib import Path

import pandas as pd
import yaml

from dmesr.config import CONFIG_VERSION, config_hash, load_config
from dmesr.experiments.run_store import audit_configs, migrate_store, read_table

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


def test_reproduce_trains_a_stored_run_again_from_the_store_alone(tmp_path: Path, capsys):
    """A pop run on ml-100k (nothing to train: its metrics must come back exactly), stored, its folder
    deleted, then reproduced from the store; data of another fingerprint is refused."""
    import json
    import shutil

    from dmesr.cli import main
    from dmesr.experiments.run_store import add_to_store
    from dmesr.training.run import train_run

    run_dir = train_run(load_config(overrides=["model.name=pop", f"output_dir={tmp_path / 'runs'}"]),
                        show_progress=False)
    add_to_store(tmp_path / "runs", tmp_path / "store", "c")
    run = run_dir.relative_to(tmp_path / "runs").as_posix()
    shutil.rmtree(tmp_path / "runs")
    assert main(["reproduce", "c", run, "--store", str(tmp_path / "store"), "--output-dir", str(tmp_path / "again"),
                 "--out", str(tmp_path / "note.md")]) == 0
    table = (tmp_path / "note.md").read_text()
    assert f"dmesr reproduce c {run}" in table
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in table.splitlines() if line.startswith("| ")}
    assert rows["test_NDCG@10"][0] == rows["test_NDCG@10"][1] and rows["test_NDCG@10"][2].strip() == "0"

    runs = read_table("runs", tmp_path / "store")
    provenance = json.loads(runs["data_provenance"].iat[0])
    provenance["fingerprint"] = "0" * 16
    runs["data_provenance"] = json.dumps(provenance)
    runs.to_parquet(tmp_path / "store" / "runs.parquet")
    capsys.readouterr()
    assert main(["reproduce", "c", run, "--store", str(tmp_path / "store"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "was trained on data with fingerprint 000000000000" in capsys.readouterr().err
