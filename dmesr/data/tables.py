"""Interaction logs as plain tables (CSV, TSV, parquet, JSON lines) into a ``RawDataset``.

``load_table`` reads a log with one row per interaction, and optionally an item table whose columns
make each item's text. Several columns may order a user's rows (order number, then position in the
basket): ``ordering_keys`` ranks their tuples, compared left to right.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from dmesr.data.loaders import (
    attach_images,
    interactions_frame,
    is_url,
    item_text,
    items_without_metadata,
    normalise_ids,
    one_row_per_item,
    parse_timestamps,
    require_columns,
    warn_items_without_text,
    with_text,
)
from dmesr.data.schema import RawDataset


def read_table(path: Path | str, exact: Iterable[str] = ()) -> pd.DataFrame:
    """CSV / TSV (optionally compressed), JSON lines or parquet, chosen by file suffix.

    The ``exact`` columns (ids, times) of a text file are read as the strings written, never through
    a number (``007`` stays ``007``; a 64-bit id is not rounded); JSON numbers are kept as written too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes:
        table = pd.read_parquet(path)
    elif {".jsonl", ".json"} & set(suffixes):
        table = _read_json_lines(path)
    else:
        try:
            table = pd.read_csv(path, sep="\t" if ".tsv" in suffixes else ",", keep_default_na=False, na_values=[""],
                                dtype={column: str for column in exact})
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: the file is empty") from None
        except (ValueError, pd.errors.ParserError) as error:
            raise ValueError(f"{path}: cannot be read as a table ({str(error).strip().splitlines()[0]})") from None
    if table.empty:
        raise ValueError(f"{path}: no rows")
    return table


def _read_json_lines(path: Path) -> pd.DataFrame:
    """One record per line; numbers stay the text they are written as (a table of them would turn a column
    holding one fraction into floats, rounding every 64-bit id in it)."""
    records = []
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line, parse_int=str, parse_float=str))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not JSON lines ({error.msg})") from None
    if records and not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{path}: not JSON lines of records (objects with named fields)")
    return pd.DataFrame(records, dtype=object)


def ordering_keys(table: pd.DataFrame, columns: list[str], path: Path | str) -> np.ndarray:
    """One int64 per row that orders rows like the ``columns`` do, compared left to right.

    One column gives its timestamps (numbers or ISO dates); several, e.g. order number then
    position in the basket, give each row the dense rank of its tuple of parsed values.
    """
    keys = [parse_timestamps(table[column], path) for column in columns]
    if len(keys) == 1:
        return keys[0]
    order = np.lexsort(keys[::-1])  # lexsort's last key is the primary one
    stacked = np.stack(keys, axis=1)[order]
    new_tuple = np.concatenate([[True], (stacked[1:] != stacked[:-1]).any(axis=1)])
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.cumsum(new_tuple) - 1
    return ranks


def load_table(
    path: Path | str,
    user: str,
    item: str,
    timestamp: str | list[str],
    items_path: Path | str | None = None,
    text_columns: list[str] | None = None,
    image_folder: Path | str | None = None,
    name: str | None = None,
    image_column: str | None = None,
) -> RawDataset:
    """Interactions from a CSV/TSV/parquet/JSON-lines table with the given column names; item
    metadata from ``items_path``.

    ``timestamp`` is one column or several that order a user's rows left to right (e.g.
    ``["order_number", "add_to_cart_order"]``). The item table must use the same item column
    name; ``text_columns`` (default: all its other columns) are assembled, in order, into the item
    text with the column names as labels. ``image_column`` names its column of image file paths
    (relative ones are read from the item table's folder) or URLs (kept in ``image_urls`` for
    ``dmesr data images``).
    """
    path = Path(path)
    time_columns = [timestamp] if isinstance(timestamp, str) else list(timestamp)
    table = read_table(path, exact=(user, item, *time_columns))
    require_columns(table, (user, item, *time_columns), path)
    interactions = interactions_frame(table[user], table[item], ordering_keys(table, time_columns, path), path)
    if items_path is None:
        items = items_without_metadata(interactions)
    else:
        meta = read_table(items_path, exact=(item,))
        require_columns(meta, [item] + list(text_columns or []) + ([image_column] if image_column else []),
                        items_path)
        if image_column:  # file paths (relative ones from the item table's folder) or URLs to download
            meta = meta.rename(columns={image_column: "image_path"})
            if any(is_url(p) for p in meta["image_path"]):
                meta["image_urls"] = [[p.strip()] if is_url(p) else [] for p in meta["image_path"]]
            meta["image_path"] = [str(Path(items_path).parent / p) if isinstance(p, str) and p and not is_url(p)
                                  else None for p in meta["image_path"]]
        columns = list(text_columns) if text_columns else [c for c in meta.columns
                                                           if c not in (item, "image_path", "image_urls")]
        items = meta.rename(columns={item: "item"})
        items["item"] = normalise_ids(items["item"], "item", items_path).to_numpy()
        texts = [
            item_text((column.replace("_", " ").capitalize(), row[column]) for column in columns)
            for row in meta[columns].to_dict("records")
        ]
        items = attach_images(one_row_per_item(with_text(items, texts), items_path), image_folder)
        warn_items_without_text(interactions, items, items_path)
    files = [path] + ([Path(items_path)] if items_path else [])
    return RawDataset(name=name or path.stem.split(".")[0], interactions=interactions, items=items, source_files=files)
