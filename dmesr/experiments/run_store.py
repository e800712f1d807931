"""The run store: finished runs as data, the one source of reports, notebooks and significance tests.

A run directory (``final.json`` and its neighbours, written by :mod:`dmesr.training.run`) is the unit
of work on disk. The store holds what is read from finished ones, as three parquet tables in one
folder (default ``reports/store``), each row keyed by ``collection`` (a named set of runs: a grid's
output folder, say) and ``run`` (the run directory's path inside that folder):

* ``runs.parquet``, one row per run: identity (``experiment``, ``dataset``, ``model``, ``method``,
  ``items``, ``config`` hash, ``seed``), the protocol settings (``PROTOCOL_FIELDS``), validation
  metrics of the selected epoch (``valid_*``), test metrics (``test_*``), head/tail, short/long and
  repeat/new metrics (``head_*``, ...), sampled-protocol metrics when evaluated (``sampled_*``), timings
  (``seconds_*``), ``hardware``, ``stopped``, its grid's method ``roles`` (JSON), the complete resolved config
  (``config_yaml``, every setting written out, migrated to ``config_version``: what was trained) and the data
  provenance (``data_provenance``: split fingerprint and statistics, as JSON);
* ``epochs.parquet``, one row per run and epoch: the trainer's per-epoch log;
* ``per_user.parquet``, one row per run and test user (``user_index``, the test order): the
  per-user test metrics that the paired significance tests compare.

The method of a run is the name its experiment grid gave it (``cell.json``, written by
:mod:`dmesr.experiments.runner`); a run trained outside a grid is named by its item-encoder kind,
with ``id`` called ``backbone`` as in the grids. Aggregation is mean +- std over the seeds of one
(dataset, model, method, item encoder, config hash) cell.

    dmesr experiments collect reports/runs/main      # add (or refresh) the finished runs of a folder
    runs = load_runs("main")                          # one collection, per-user vectors attached
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dmesr.config import CONFIG_VERSION, RunConfig, config_from_dict, config_hash, config_yaml, settings
from dmesr.lock import exclusive

DEFAULT_STORE = Path("reports/store")
TABLES = ("runs", "epochs", "per_user")
RUN_KEY = ["collection", "run"]
BREAKDOWN_GROUPS = ("head", "tail", "short", "long")
REPEAT_GROUPS = ("repeat", "new")  # users whose test target is / is not an item they had before
PER_USER_PREFIX = "user_"  # per-user test vectors, attached to a runs table as columns of arrays
# Settings every run of a comparison must share, stored per run as ``<section>_<field>`` columns
# from its ``config.yaml`` so a report can state the protocol and flag a dataset that mixes them
PROTOCOL_FIELDS = (("data", "max_len"), ("model", "hidden_size"), ("model", "num_layers"), ("train", "loss"),
                   ("train", "batch_size"), ("train", "lr"), ("train", "max_epochs"), ("train", "patience"))


def run_method(run_dir: Path, items: str) -> tuple[str, str, str]:
    """``(experiment, method, roles as JSON)`` of a run: from ``cell.json`` when a grid wrote one."""
    cell_path = run_dir / "cell.json"
    if cell_path.exists():
        cell = json.loads(cell_path.read_text())
        return cell["experiment"], cell["method"], json.dumps(cell["roles"]) if cell.get("roles") else ""
    return "", "backbone" if items == "id" else items, ""


def _read_run(run_dir: Path, root: Path, collection: str) -> tuple[dict, pd.DataFrame, dict[str, np.ndarray]]:
    """A finished run directory's row, per-epoch log and per-user test vectors."""
    final = json.loads((run_dir / "final.json").read_text())
    experiment, method, roles = run_method(run_dir, final["items"])
    config = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    run = run_dir.relative_to(root).as_posix()
    row = {
        "collection": collection, "run": run, "experiment": experiment, "dataset": final["dataset"],
        "model": final["model"], "method": method, "items": final["items"],
        "seed": final["seed"], "run_dir": str(run_dir), "best_epoch": final["best_epoch"], "epochs": final["epochs"],
        "stopped": final["stopped"], "hardware": final["hardware"], "torch": final.get("torch", ""),
        "parameters": final.get("parameters", 0),
        **{k: v for k, v in final["valid"].items() if k.startswith("valid_")},
        **{f"test_{k}": v for k, v in final["test"].items()},
        **{f"seconds_{k}": v for k, v in final["seconds"].items()},
    }
    row.update({f"{section}_{field}": getattr(getattr(config, section), field) for section, field in PROTOCOL_FIELDS})
    for group in (*BREAKDOWN_GROUPS, *REPEAT_GROUPS):
        row.update({f"{group}_{k}": v for k, v in final.get("test_breakdown", {}).get(group, {}).items()})
    sampled_path = run_dir / "evaluation-sampled.json"
    if sampled_path.exists():
        row.update({f"sampled_{k}": v for k, v in json.loads(sampled_path.read_text())["test"].items()})
    row["roles"] = roles
    row.update(config_columns(config))
    row["data_provenance"] = (run_dir / "data.json").read_text()
    epochs = _epochs(run_dir)
    epochs.insert(0, "run", run)
    epochs.insert(0, "collection", collection)
    per_user_path = run_dir / "test_per_user.npz"
    per_user = {}
    if per_user_path.exists():
        with np.load(per_user_path) as arrays:
            per_user = {name: arrays[name] for name in arrays.files}
    return row, epochs, per_user


def config_columns(config) -> dict:
    """A run's config as the store keeps it: complete YAML, its version and the identity it gives."""
    return {"config_yaml": config_yaml(config), "config_version": config.version, "config": config_hash(config)}


def audit_configs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per stored run: whether its saved config is complete (every setting of this code written out, at
    ``CONFIG_VERSION``) and whether this code gives it the identity the store holds."""
    every_setting = set(settings(RunConfig()))
    rows = []
    for collection, run, text, identity in zip(runs["collection"], runs["run"], runs["config_yaml"], runs["config"]):
        saved = yaml.safe_load(text)
        written = {f"{section}.{key}" for section, values in saved.items() if isinstance(values, dict)
                   for key in values} | {key for key, value in saved.items() if not isinstance(value, dict)}
        rows.append({"collection": collection, "run": run, "missing": sorted(every_setting - written),
                     "version": saved.get("version"), "identity_matches": config_hash(config_from_dict(saved)) == identity})
    audit = pd.DataFrame(rows)
    audit["complete"] = (audit["missing"].str.len() == 0) & (audit["version"] == CONFIG_VERSION)
    return audit


def migrate_store(store: str | Path = DEFAULT_STORE) -> int:
    """Rewrite every stored run's config as complete and current (``dmesr.config.migrate_config``: settings
    added since it was saved take their value from before they existed) with this code's identity for it;
    returns how many rows changed. Running it again changes nothing."""
    store = Path(store)
    with exclusive(store / ".lock", str(store), wait=True):
        runs = read_table("runs", store)
        before = runs[["config_yaml", "config"]].copy()
        columns = pd.DataFrame([config_columns(config_from_dict(yaml.safe_load(text))) for text in runs["config_yaml"]])
        for name in columns:
            runs[name] = columns[name].to_numpy()
        changed = int(((runs["config_yaml"] != before["config_yaml"]) | (runs["config"] != before["config"])).sum())
        path = store / "runs.parquet"
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        runs.to_parquet(partial, index=False)
        os.replace(partial, path)
    return changed


def _epochs(run_dir: Path) -> pd.DataFrame:
    """The trainer's per-epoch log (``epochs.jsonl``; its ``epochs.csv`` copy where that is all there is)."""
    from dmesr.training.trainer import read_epoch_log  # here: reading a store needs no training code

    log = run_dir / "epochs.jsonl"
    if log.exists():
        return pd.DataFrame(read_epoch_log(log))
    return pd.read_csv(run_dir / "epochs.csv") if (run_dir / "epochs.csv").exists() else pd.DataFrame()


def collect_tables(root: str | Path, collection: str | None = None, run_dirs: list[Path] | None = None
                   ) -> dict[str, pd.DataFrame]:
    """The store's three tables (``TABLES``) for every finished run under ``root`` (or only ``run_dirs``,
    folders inside it); ``collection`` defaults to the folder's name. The runs table keeps ``run_dir``
    (where each run lies on disk)."""
    root = Path(root)
    collection = collection or root.resolve().name
    rows, epochs, per_user = [], [], []
    finals = sorted(root.glob("**/final.json")) if run_dirs is None else [Path(d) / "final.json" for d in run_dirs]
    for final_path in finals:
        row, run_epochs, vectors = _read_run(final_path.parent, root, collection)
        rows.append(row)
        epochs.append(run_epochs)
        if vectors:
            users = pd.DataFrame(vectors)
            users.insert(0, "user_index", np.arange(len(users), dtype=np.int32))
            users.insert(0, "run", row["run"])
            users.insert(0, "collection", collection)
            per_user.append(users)
    if not rows:
        raise FileNotFoundError(f"no finished runs (final.json) under {root}")
    return {"runs": pd.DataFrame(rows), "epochs": pd.concat(epochs, ignore_index=True),
            "per_user": pd.concat(per_user, ignore_index=True) if per_user else pd.DataFrame(columns=RUN_KEY)}


def attach_per_user(runs: pd.DataFrame, per_user: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one ``user_<metric>`` column per per-user metric, each cell the run's test vector
    (users in test order), or NaN for a run without one."""
    runs = runs.copy()
    metrics = [c for c in per_user.columns if c not in (*RUN_KEY, "user_index")]
    vectors = {key: part.sort_values("user_index") for key, part in per_user.groupby(RUN_KEY, sort=False)}
    keys = list(zip(runs["collection"], runs["run"]))
    for metric in metrics:
        runs[f"{PER_USER_PREFIX}{metric}"] = [vectors[key][metric].to_numpy() if key in vectors else np.nan
                                              for key in keys]
    return runs


def collect_runs(root: str | Path, collection: str | None = None) -> pd.DataFrame:
    """One row per finished run under ``root`` (the store's runs table) with its per-user vectors:
    a folder of runs read as the store would hold it."""
    tables = collect_tables(root, collection)
    return attach_per_user(tables["runs"], tables["per_user"])


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by collection, then run path part by part (the order ``collect_tables`` reads them in)."""
    if table.empty:
        return table
    # rank each distinct run once (the per-user table has a row per user), then a stable sort by rank
    keys = sorted(set(zip(table["collection"], table["run"])), key=lambda key: (key[0], tuple(key[1].split("/"))))
    rank = {key: position for position, key in enumerate(keys)}
    order = np.argsort([rank[key] for key in zip(table["collection"], table["run"])], kind="stable")
    return table.iloc[order].reset_index(drop=True)


def read_table(name: str, store: str | Path = DEFAULT_STORE) -> pd.DataFrame:
    path = Path(store) / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no run store table {path}: add runs with `dmesr experiments collect RUNS_DIR`")
    return pd.read_parquet(path)


def add_to_store(root: str | Path, store: str | Path = DEFAULT_STORE, collection: str | None = None,
                 run_dirs: list[Path] | None = None) -> Path:
    """Add the finished runs under ``root`` (or only ``run_dirs``) to the store, a run already there
    replaced; returns the store folder. ``collection`` defaults to the name of ``root``."""
    store = Path(store)
    new = collect_tables(root, collection, run_dirs)
    new["runs"] = new["runs"].drop(columns="run_dir")
    with exclusive(store / ".lock", str(store), wait=True):  # grid shards finishing together queue here
        # the runs table last: a reader (who takes no lock) never meets a run whose epochs and per-user
        # vectors are not written yet
        for name in sorted(TABLES, key=lambda name: name == "runs"):
            table = new[name]
            path = store / f"{name}.parquet"
            if path.exists():
                old = pd.read_parquet(path)
                replaced = old.set_index(RUN_KEY).index.isin(new["runs"].set_index(RUN_KEY).index)
                table = pd.concat([old[~replaced], table], ignore_index=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            _sorted(table).to_parquet(partial, index=False)
            os.replace(partial, path)
    print(f"added {len(new['runs'])} runs of {new['runs']['collection'].iat[0]} to {store}")
    return store


def load_runs(collection: str | None = None, store: str | Path = DEFAULT_STORE, per_user: bool = True) -> pd.DataFrame:
    """The store's runs (of one ``collection``, or all), with their per-user vectors when ``per_user``."""
    runs = read_table("runs", store)
    if collection is not None:
        if collection not in set(runs["collection"]):
            raise ValueError(f"the run store {store} has no collection {collection!r}; it has "
                             f"{', '.join(sorted(runs['collection'].unique()))}")
        runs = runs[runs["collection"] == collection].reset_index(drop=True)
    if not per_user:
        return runs
    users = pd.read_parquet(Path(store) / "per_user.parquet", filters=[("collection", "in", list(runs["collection"].unique()))])
    return attach_per_user(runs, users)


def load_epochs(collection: str | None = None, store: str | Path = DEFAULT_STORE) -> pd.DataFrame:
    """The per-epoch logs of the store's runs (of one ``collection``, or all)."""
    epochs = read_table("epochs", store)
    return epochs if collection is None else epochs[epochs["collection"] == collection].reset_index(drop=True)


def runs_from(source: str | Path, store: str | Path = DEFAULT_STORE) -> pd.DataFrame:
    """A folder of run directories, read as it is, or else a collection of the store."""
    return collect_runs(source) if Path(source).is_dir() else load_runs(str(source), store)
