"""Your own data under a name: ``dmesr data add`` records where a log lives and how to read it.

    dmesr data add retail --interactions orders.csv --items products.csv \\
        --user user_id --item product_id --time order_number,add_to_cart_order --text product_name

writes ``$DMESR_HOME/datasets/retail.json`` (:func:`dmesr.data.registry.add_dataset` loads the files
first): the format, the files (absolute paths) with their sha256, and the column choices. From then
on ``retail`` is a dataset name like ``ml-100k`` for every command and every Python entry point (they
resolve names through ``dmesr.data.registry``).
The files are read where they are, not copied; the split fingerprint hashes them, so a changed
file builds a new split and an old run refuses it rather than mixing data.

Formats: ``table`` (CSV, TSV, parquet, JSON lines; see :func:`dmesr.data.tables.load_table`),
``amazon`` (Amazon Reviews 2018 / 2023 JSON lines, :func:`dmesr.data.amazon.load_amazon`) and
``recbole`` (a folder of RecBole atomic files). A run saves its dataset's registration in its
``data.json``, so ``dmesr evaluate`` / ``dmesr export`` can rebuild the split in another data home.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dmesr.data.loaders import load_recbole_atomic, recbole_atomic_files
from dmesr.data.schema import RawDataset
from dmesr.data.tables import load_table
from dmesr.paths import dmesr_home, write_atomically

FORMATS = ("table", "amazon", "recbole")
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
    if entry["format"] == "recbole":
        inter, item = recbole_atomic_files(entry["interactions"])
        return [inter] + ([item] if item else [])
    return [Path(entry["interactions"])] + ([Path(entry["items"])] if entry.get("items") else [])


def load_entry(entry: dict) -> RawDataset:
    """Read a registered dataset with the columns it was registered with."""
    name = entry["name"]
    if entry["format"] == "recbole":
        raw = load_recbole_atomic(entry["interactions"])
        raw.name = name
        return raw
    if entry["format"] == "amazon":
        from dmesr.data.amazon import load_amazon

        return load_amazon(entry["interactions"], entry.get("items"), entry.get("image_folder"), name=name)
    return load_table(entry["interactions"], entry["user"], entry["item"], entry["time"], entry.get("items"),
                      entry.get("text") or None, entry.get("image_folder"), name=name,
                      image_column=entry.get("image"))


def restore_registration(entry: dict, home: Path | str | None = None) -> None:
    """Register a dataset from the entry a run saved, when this data home does not know the name."""
    if registration(entry["name"], home) is None:
        save_registration(entry, home)


def save_registration(entry: dict, home: Path | str | None = None) -> None:
    """Write ``entry`` as ``<data home>/datasets/<name>.json`` (replacing any registration of that name)."""
    write_atomically(registrations_folder(home) / f"{entry['name']}.json", json.dumps(entry, indent=2))
