"""Amazon Reviews (2018 and 2023 releases): reviews JSON lines + item metadata JSON lines, optionally .gz.

2018 reviews: ``reviewerID``, ``asin``, ``unixReviewTime`` (seconds); metadata ``asin``, ``title``,
``category``, ``brand``, ``description``, ``imageURL`` / ``imageURLHighRes``.
2023 reviews: ``user_id``, ``parent_asin``, ``timestamp`` (milliseconds, kept as is: only the order
matters downstream); metadata ``parent_asin``, ``title``, ``categories``, ``features``,
``description``, ``store``, ``images``.

Images come either from a local folder of files named by item id (``<asin>.jpg``), which sets
``image_path``, or stay as the URL list in ``image_urls`` for the user to download.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from dmesr.data.loaders import attach_images, interactions_frame, item_text, one_row_per_item
from dmesr.data.schema import RawDataset

# release -> (user, item, timestamp) fields of a review; item field of a metadata record
REVIEW_FIELDS = {2018: ("reviewerID", "asin", "unixReviewTime"), 2023: ("user_id", "parent_asin", "timestamp")}
META_ITEM_FIELD = {2018: "asin", 2023: "parent_asin"}
HTML_TAG = re.compile(r"<[^>]+>")


def read_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for each non-empty line of a JSON-lines file (``.gz`` allowed)."""
    if not path.is_file():
        raise FileNotFoundError(f"Amazon file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def _field(record: dict, name: str, path: Path, number: int):
    if record.get(name) in (None, ""):
        raise ValueError(f"{path}:{number}: missing required field {name!r}")
    return record[name]


def detect_release(path: Path) -> int:
    """2018 or 2023, from the field names of the first review."""
    for _, record in read_json_lines(path):
        for release, (user_field, _, _) in REVIEW_FIELDS.items():
            if user_field in record:
                return release
        break
    raise ValueError(f"{path}: cannot tell the Amazon release (no 'reviewerID' or 'user_id' in the first review)")


def _as_list(value) -> list[str]:
    """A list field as a list of strings (some dumps store a single string instead of a list)."""
    if value is None or value == "":
        return []
    return [str(part) for part in value] if isinstance(value, list) else [str(value)]


def _plain(parts: list[str]) -> str:
    """Description text without HTML tags (descriptions are often scraped HTML), whitespace collapsed."""
    return " ".join(HTML_TAG.sub(" ", " ".join(parts)).split())


def _meta_row_2018(record: dict) -> dict:
    categories = [c for c in _as_list(record.get("category")) if not HTML_TAG.search(c)]
    description = _plain(_as_list(record.get("description")))
    return {
        "title": record.get("title") or None,
        "brand": record.get("brand") or None,
        "categories": ", ".join(categories) or None,
        "description": description or None,
        "image_urls": _as_list(record.get("imageURLHighRes") or record.get("imageURL")),
        "text": item_text(
            [("Title", record.get("title")), ("Brand", record.get("brand")), ("Categories", categories),
             ("Description", description)]
        ),
    }


def _meta_row_2023(record: dict) -> dict:
    images = record.get("images") or []
    urls = [image.get("hi_res") or image.get("large") for image in images if isinstance(image, dict)]
    categories = _as_list(record.get("categories"))
    features = "; ".join(_as_list(record.get("features")))
    description = _plain(_as_list(record.get("description")))
    return {
        "title": record.get("title") or None,
        "store": record.get("store") or None,
        "categories": ", ".join(categories) or None,
        "features": features or None,
        "description": description or None,
        "image_urls": [url for url in urls if url],
        "text": item_text(
            [("Title", record.get("title")), ("Store", record.get("store")),
             ("Categories", categories), ("Features", features), ("Description", description)]
        ),
    }


def load_amazon(
    reviews_path: Path | str,
    meta_path: Path | str | None = None,
    image_folder: Path | str | None = None,
    release: int | None = None,
    name: str | None = None,
) -> RawDataset:
    """Interactions from the reviews file; item table from the metadata file (items never reviewed are skipped).

    ``release`` (2018 | 2023) is detected from the first review when not given. Reviewed items
    absent from the metadata keep an empty text.
    """
    reviews_path = Path(reviews_path)
    release = release or detect_release(reviews_path)
    if release not in REVIEW_FIELDS:
        raise ValueError(f"unknown Amazon release {release!r}; known: {', '.join(map(str, REVIEW_FIELDS))}")
    user_field, item_field, time_field = REVIEW_FIELDS[release]
    users, items, times = [], [], []
    for number, record in read_json_lines(reviews_path):
        users.append(_field(record, user_field, reviews_path, number))
        items.append(_field(record, item_field, reviews_path, number))
        time = _field(record, time_field, reviews_path, number)
        if not isinstance(time, (int, float)) or isinstance(time, bool):
            raise ValueError(f"{reviews_path}:{number}: {time_field} must be a number, got {time!r}")
        times.append(int(time))
    if not users:
        raise ValueError(f"{reviews_path}: no reviews")
    interactions = interactions_frame(users, items, times, reviews_path)

    reviewed = set(interactions["item"])
    rows = []
    files = [reviews_path]
    if meta_path is not None:
        meta_path = Path(meta_path)
        files.append(meta_path)
        meta_item_field = META_ITEM_FIELD[release]
        to_row = _meta_row_2018 if release == 2018 else _meta_row_2023
        for number, record in read_json_lines(meta_path):
            item = str(_field(record, meta_item_field, meta_path, number))
            if item in reviewed:
                rows.append({"item": item, **to_row(record)})
    described = {row["item"] for row in rows}
    rows += [{"item": item, "text": ""} for item in pd.unique(interactions["item"]) if item not in described]
    table = pd.DataFrame(rows)
    table = table[["item", "text"] + [c for c in table.columns if c not in ("item", "text")]]
    table = attach_images(one_row_per_item(table, meta_path or reviews_path), image_folder)
    return RawDataset(
        name=name or reviews_path.name.split(".")[0], interactions=interactions, items=table, source_files=files
    )
