"""Retrain a stored run from what the run store kept of it, and set its metrics beside the stored ones.

A row of the store holds the complete config it was trained with (``config_yaml``) and the fingerprint of
its split (``data_provenance``), so the run can be trained again without its folder::

    dmesr reproduce main ml-100k/sasrec/dmesr-7bce7f35-seed2 --out runs/reproduce

The split rebuilt here must have the stored fingerprint, and the semantic features the stored source
fingerprint (the same descriptions and item texts); otherwise nothing is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from dmesr.config import TRIVIAL_BASELINES, config_from_dict
from dmesr.experiments.run_store import DEFAULT_STORE, load_runs
from dmesr.markdown import markdown_table

# what is compared: the selected epoch, its validation score and the test metrics at 10
COMPARED = ("best_epoch", "epochs", "valid_NDCG@10", "test_HR@10", "test_NDCG@10", "test_MRR@10")


def stored_run(collection: str, run: str, store: str | Path = DEFAULT_STORE) -> pd.Series:
    """The store's row of ``run`` in ``collection``; an unknown run is one line naming close ones."""
    runs = load_runs(collection, store, per_user=False)
    match = runs[runs["run"] == run]
    if match.empty:
        close = [name for name in runs["run"] if name.split("/")[:2] == run.split("/")[:2]][:5]
        raise ValueError(f"collection {collection!r} has no run {run!r}"
                         + (f"; runs of that dataset and model: {', '.join(close)}" if close else ""))
    return match.iloc[0]


def reproduce(collection: str, run: str, store: str | Path = DEFAULT_STORE, output_dir: str = "runs/reproduce",
              device: str | None = None, show_progress: bool = True) -> pd.DataFrame:
    """Train ``run`` of ``collection`` again from its stored config and data; returns the stored and the new
    values of ``COMPARED`` (one row each)."""
    from dmesr.data import prepare_split
    from dmesr.data.own import restore_registration
    from dmesr.training.run import load_run_features, train_run

    row = stored_run(collection, run, store)
    config = config_from_dict(yaml.safe_load(row["config_yaml"]))
    config.output_dir = output_dir
    if device:
        config.train.device = device
    provenance = json.loads(row["data_provenance"])
    if provenance.get("source"):
        restore_registration(provenance["source"])
    split = prepare_split(config.data)
    if split.fingerprint != provenance["fingerprint"]:
        raise ValueError(f"{collection}/{run} was trained on data with fingerprint {provenance['fingerprint'][:12]}; "
                         f"{config.data.dataset} gives {split.fingerprint[:12]} here")
    stored_features = (provenance.get("features") or {}).get("source_fingerprint")
    if stored_features and config.model.name not in TRIVIAL_BASELINES:
        features = load_run_features(config, split)
        if features.meta.get("source_fingerprint") != stored_features:
            raise ValueError(f"{collection}/{run} was trained with other semantic features (source fingerprint "
                             f"{stored_features[:12]}); embed the descriptions it used first")
    run_dir = train_run(config, show_progress=show_progress, split=split)
    final = json.loads((run_dir / "final.json").read_text())
    new = {"best_epoch": final["best_epoch"], "epochs": final["epochs"], **final["valid"],
           **{f"test_{key}": value for key, value in final["test"].items()}}
    return pd.DataFrame([{key: row[key] for key in COMPARED}, {key: new[key] for key in COMPARED}],
                        index=pd.Index(["stored", "new"], name=f"{collection}/{run}"))


def comparison_table(compared: pd.DataFrame) -> str:
    """Stored and new values side by side, with their difference."""
    stored, new = compared.loc["stored"], compared.loc["new"]
    rows = [[key, _value(stored[key]), _value(new[key]), _value(new[key] - stored[key])] for key in COMPARED]
    return markdown_table(["", "stored", "new", "new - stored"], rows)


def _value(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else str(int(value))
