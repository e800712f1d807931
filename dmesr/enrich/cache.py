"""Append-only, crash-safe cache of generated descriptions.

Describing a catalogue takes hours, so every finished batch is appended to a JSONL file and
flushed + fsynced before the next starts. A record is keyed by (dataset, item, view, describer
id, prompt hash); a restarted run reads all records in the cache folder and skips those keys.
Each writer (one per ``--shard``) appends to its own file, so processes on one machine never
interleave lines and folders from several machines can simply be copied together, and each file
has one writing process at a time (``<file>.lock``, :mod:`dmesr.lock`). A crash can leave a torn
last line: readers ignore it and the next writer cuts it off before appending. A last record that
is whole but lacks its newline is read, and kept by the next writer (which adds the newline).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

RECORD_FIELDS = ("dataset", "item", "view", "describer", "prompt_hash", "description")
HEADER_KEY = "header"  # the first line of an exported file: {"header": {dataset, describer, prompts, command, ...}}


def record_key(record: dict) -> tuple[str, ...]:
    return tuple(str(record[name]) for name in RECORD_FIELDS[:5])


def safe_name(text: str) -> str:
    """``text`` as a file name: anything but letters, digits, dot, dash and underscore becomes _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def read_jsonl_records(path: Path) -> list[dict]:
    """Records of one JSONL file; a torn last line (crash mid-write) is ignored, others are logged.

    A header line (``{"header": {...}}``, written by :func:`export_descriptions`) is not a record
    and is left out; :func:`read_description_header` returns it.
    """
    lines = Path(path).read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn_tail = number == len(lines)  # no newline after it: the write never finished
            (log.info if torn_tail else log.warning)("%s:%d: skipping an unreadable record", path, number)
            continue
        if HEADER_KEY not in record:
            records.append(record)
    return records


def read_description_header(path: str | Path) -> dict | None:
    """The header of an exported description file (what wrote it and how), or None if it has none."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        return json.loads(first).get(HEADER_KEY)
    except (json.JSONDecodeError, AttributeError):
        return None


class DescriptionCache:
    """The descriptions of one dataset in ``folder`` (one or more ``*.jsonl`` files)."""

    def __init__(self, folder: str | Path, dataset: str):
        self.folder = Path(folder)
        self.dataset = dataset

    def records(self) -> list[dict]:
        """Every record of this dataset, first copy of each key only (files in name order)."""
        seen, unique = set(), []
        for path in sorted(self.folder.glob("*.jsonl")):
            for record in read_jsonl_records(path):
                if record.get("dataset") != self.dataset or not all(name in record for name in RECORD_FIELDS):
                    continue
                key = record_key(record)
                if key not in seen:
                    seen.add(key)
                    unique.append(record)
        return unique

    def done_keys(self) -> set[tuple[str, ...]]:
        return {record_key(record) for record in self.records()}

    def writer_path(self, describer: str, shard_tag: str = "all") -> Path:
        """The file one describer (and shard) appends to; its lock file is this path + ``.lock``."""
        return self.folder / f"{safe_name(describer)}.{shard_tag}.jsonl"

    def writer(self, describer: str, shard_tag: str = "all") -> "CacheWriter":
        return CacheWriter(self.writer_path(describer, shard_tag))


class CacheWriter:
    """Appends batches of records to one file; each batch is on disk when ``append`` returns.

    Made (it first ends the file on a whole record) and used while holding the file's lock."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        """End the file on a whole record: a torn last line is cut, as readers skip it; a whole
        record that lacks only its newline gets one, as readers count it."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            whole = True
        except json.JSONDecodeError:
            whole = False
        with open(self.path, "r+b") as handle:
            if whole:
                handle.seek(0, os.SEEK_END)
                handle.write(b"\n")
            else:
                log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted write", self.path,
                            len(data) - start)
                handle.truncate(start)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        payload = "".join(json.dumps({name: record[name] for name in RECORD_FIELDS}, ensure_ascii=False) + "\n"
                          for record in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())


def read_descriptions(source: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """Descriptions from a cache folder, a JSONL file or a parquet file, as a table.

    Columns: item, view, description, plus describer and prompt_hash where the source has them.
    Rows of another dataset are dropped when the source records datasets and ``dataset`` is given.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        if dataset is None:
            raise ValueError(f"reading the cache folder {source} needs the dataset name")
        table = pd.DataFrame(DescriptionCache(source, dataset).records(), columns=list(RECORD_FIELDS))
    elif source.suffix == ".parquet" and source.is_file():
        table = pd.read_parquet(source)
    elif source.is_file():
        table = pd.DataFrame(read_jsonl_records(source))
    else:
        raise FileNotFoundError(f"description source not found: {source}")
    missing = {"item", "view", "description"} - set(table.columns)
    if missing:
        raise ValueError(f"description source {source} lacks column(s) {sorted(missing)}")
    if dataset is not None and "dataset" in table.columns:
        table = table[table["dataset"] == dataset]
    table = table.astype({"item": str, "view": str, "description": str})
    return table.reset_index(drop=True)


def export_descriptions(cache_folder: str | Path, dataset: str, out_path: str | Path,
                        describer: str | None = None, views: tuple[str, ...] | None = None,
                        header: dict | None = None) -> int:
    """Write a cache's records (sorted by item, view) to one JSONL file, atomically; returns the count.

    ``header`` (what wrote the descriptions: model, prompts, command) becomes the file's first
    line, with the record count added, so the file documents itself wherever it is copied.
    """
    table = read_descriptions(cache_folder, dataset)
    if describer is not None:
        table = table[table["describer"] == describer]
    if views is not None:
        table = table[table["view"].isin(views)]
    order = pd.to_numeric(table["item"], errors="coerce")
    table = table.assign(_order=order).sort_values(["_order", "item", "view"]).drop(columns="_order")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(out_path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        if header is not None:
            handle.write(json.dumps({HEADER_KEY: {**header, "records": len(table)}}, ensure_ascii=False) + "\n")
        for record in table.to_dict("records"):
            handle.write(json.dumps({name: record[name] for name in RECORD_FIELDS}, ensure_ascii=False) + "\n")
    os.replace(temporary, out_path)
    return len(table)
