"""Your own data under a name: ``dmesr data add`` records where a log lives and how to read it.

    dmesr data add retail --interactions orders.csv --items products.csv \\
        --user user_id --item product_id --time order_number,add_to_cart_order --text product_name

writes ``$DMESR_HOME/datasets/retail.json`` (:func:`dmesr.data.registry.add_dataset` loads the files
first): the format, the files (absolute paths) with their sha256, size and modification time, the
column choices, and the content identity they make (``content``). From then on ``retail`` is a
dataset name like ``ml-100k`` for every command and every Python entry point (they resolve names
through ``dmesr.data.registry``).

The files are read where they are, not copied, and checked on every use (:func:`verified_files`: a
file whose size or time changed is hashed again): a file changed since ``data add`` is refused,
naming it. Everything made from a registered dataset (splits, descriptions, features, runs) is kept
under its name plus its content identity (:func:`dmesr.data.identity.dataset_key`), so registering
the name again with other files or other columns never reuses what was made from the old content.

Formats (the registry :data:`FORMATS`, which ``data add --format`` lists): ``table`` (CSV, TSV, parquet,
JSON lines; see :func:`dmesr.data.tables.load_table`), ``amazon`` (Amazon Reviews 2018 / 2023 JSON lines,
:func:`dmesr.data.amazon.load_amazon`) and ``recbole`` (a folder of RecBole atomic files). A run saves its
dataset's registration in its ``data.json``, so ``dmesr evaluate`` / ``dmesr export`` can rebuild the split in
another data home.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dmesr.data.loaders import cached_sha256, load_recbole_atomic, recbole_atomic_files
from dmesr.data.schema import RawDataset
from dmesr.data.tables import load_table
from dmesr.paths import dmesr_home, write_atomically

# How files are read into ids and times (exact strings, exact times): part of the content identity, so a
# dataset read under other rules never shares what was made from it.
READ_RULES = 2
READ_SETTINGS = ("format", "user", "item", "time", "text", "image", "image_folder")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def registrations_folder(home: Path | str | None = None) -> Path:
    return dmesr_home(home) / "datasets"


def registration(name: str, home: Path | str | None = None) -> dict | None:
    """The saved registration of ``name``, or None when no dataset of that name was added."""
    if not NAME_PATTERN.fullmatch(name):
        return None
    path = registrations_folder(home) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def registered_names(home: Path | str | None = None) -> list[str]:
    folder = registrations_folder(home)
    return sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []


def entry_files(entry: dict) -> list[Path]:
    """The files a registered dataset is built from, in a fixed order."""
    return dataset_format(entry["format"]).files(entry)


def record_files(entry: dict) -> None:
    """Record each file's sha256, size and modification time, and the content identity they make."""
    files = entry_files(entry)
    entry["sha256"] = {str(path): cached_sha256(path) for path in files}
    entry["stat"] = {str(path): [path.stat().st_size, path.stat().st_mtime_ns] for path in files}
    entry["content"] = content_identity(entry)


def content_identity(entry: dict) -> str:
    """sha256 over the files' hashes (in order), the settings that read them and ``READ_RULES``."""
    payload = {"files": list(entry["sha256"].values()), "read": {key: entry.get(key) for key in READ_SETTINGS},
               "rules": READ_RULES}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def verified_files(entry: dict) -> list[Path]:
    """The registered files, each checked against the sha256 recorded by ``data add`` (hashed again only
    when its size or modification time changed); a missing or changed file is one error naming it."""
    name = entry["name"]
    files = entry_files(entry) if Path(entry["interactions"]).exists() else [Path(entry["interactions"])]
    recorded_stats = entry.get("stat", {})
    changed = []
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"{path}: registered for dataset {name} but not found; put it back, or register "
                                    f"the new location with `dmesr data add {name} ...`")
        recorded = entry.get("sha256", {}).get(str(path))
        if recorded is None:
            raise ValueError(f"{path}: no sha256 recorded for it in the registration of {name}; register it again "
                             f"with `dmesr data add {name} ...`")
        if recorded_stats.get(str(path)) == [path.stat().st_size, path.stat().st_mtime_ns]:
            continue
        if cached_sha256(path) != recorded:
            changed.append(str(path))
    if changed:
        raise ValueError(f"{', '.join(changed)}: changed since `dmesr data add {name}` (the sha256 it recorded "
                         "differs); nothing made from the old content is used: run `dmesr data add "
                         f"{name} ...` again to use the new {'files' if len(changed) > 1 else 'file'}")
    return files


def load_entry(entry: dict) -> RawDataset:
    """Read a registered dataset with the columns it was registered with."""
    return dataset_format(entry["format"]).load(entry)


def _load_table(entry: dict) -> RawDataset:
    return load_table(entry["interactions"], entry["user"], entry["item"], entry["time"], entry.get("items"),
                      entry.get("text") or None, entry.get("image_folder"), name=entry["name"],
                      image_column=entry.get("image"))


def _load_amazon(entry: dict) -> RawDataset:
    from dmesr.data.amazon import load_amazon

    return load_amazon(entry["interactions"], entry.get("items"), entry.get("image_folder"), name=entry["name"])


def _load_recbole(entry: dict) -> RawDataset:
    raw = load_recbole_atomic(entry["interactions"])
    raw.name = entry["name"]
    return raw


def _given_files(entry: dict) -> list[Path]:
    """The interactions file, then the item table if one was given."""
    return [Path(entry["interactions"])] + ([Path(entry["items"])] if entry.get("items") else [])


def _recbole_files(entry: dict) -> list[Path]:
    inter, item = recbole_atomic_files(entry["interactions"])
    return [inter] + ([item] if item else [])


@dataclass(frozen=True)
class DatasetFormat:
    """A layout of files ``dmesr data add`` reads: ``load`` turns a registration into the raw log (a bad file is
    one ``ValueError`` naming the file and the column), ``files`` lists the files it reads, in a fixed order."""

    about: str  # one line for `dmesr data add --help`
    load: Callable[[dict], RawDataset]
    files: Callable[[dict], list[Path]] = _given_files
    needs_columns: bool = False  # needs --user, --item and --time


# The formats `dmesr data add --format` accepts. To add one: its loader and one line here (and, if it can be told
# from its files, a rule in dmesr.data.registry._guess_format); the CLI and the format tests read this registry.
FORMATS = {
    "table": DatasetFormat("CSV, TSV, parquet or JSON-lines tables, columns named by --user, --item and --time",
                           _load_table, needs_columns=True),
    "amazon": DatasetFormat("Amazon Reviews 2018 / 2023 JSON lines, with the metadata file as --items", _load_amazon),
    "recbole": DatasetFormat("a folder of RecBole atomic files (.inter, optionally .item)", _load_recbole,
                             _recbole_files),
}


def dataset_format(name: str) -> DatasetFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def restore_registration(entry: dict, home: Path | str | None = None) -> None:
    """Register a dataset from the entry a run saved, when this data home does not know the name."""
    if registration(entry["name"], home) is None:
        save_registration(entry, home)


def save_registration(entry: dict, home: Path | str | None = None) -> None:
    """Write ``entry`` as ``<data home>/datasets/<name>.json`` (replacing any registration of that name)."""
    write_atomically(registrations_folder(home) / f"{entry['name']}.json", json.dumps(entry, indent=2))
