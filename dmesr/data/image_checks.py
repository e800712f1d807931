"""The pictures an item table names, checked without the network: the URLs of each item (``image_urls``) and
the local files of an image column (present, decodable, inside the table's folder). Downloading the URLs is
:mod:`dmesr.data.images`.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from dmesr.data.loaders import is_url

SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def item_urls(value) -> list[str]:
    """The URLs in an ``image_urls`` cell (a list, an array, or one string)."""
    if isinstance(value, str):
        value = [value]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [str(url).strip() for url in value if is_url(url)]


def wanted_urls(items: pd.DataFrame, per_item: int = 1) -> list[tuple[str, str]]:
    """``(item, url)`` for each item's first ``per_item`` picture URLs, each URL once."""
    if "image_urls" not in items.columns:
        return []
    pairs, seen = [], set()
    for item, value in zip(items["item"].astype(str), items["image_urls"]):
        for url in item_urls(value)[:per_item]:
            if url not in seen:
                seen.add(url)
                pairs.append((item, url))
    return pairs


def check_image(path: Path, decode: bool = True) -> tuple[str | None, str | None]:
    """``(suffix, None)`` when the file is a picture, else ``(None, reason)``. ``decode`` reads every pixel (a
    truncated file fails); without it only the header and structure are checked (cheap, for many local files)."""
    try:
        with Image.open(path) as image:
            image.load() if decode else image.verify()
            return SUFFIXES.get(image.format, f".{str(image.format).lower()}"), None
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError:
        return None, "too many pixels"
    except (OSError, ValueError, SyntaxError):
        return None, "truncated or corrupt image"


def check_image_files(paths: list[str | None], base: Path, allow_outside: bool = False) -> dict:
    """Count the files an image column names: present, decodable, inside ``base`` (the folder the item table
    is in). A file outside ``base`` (``/etc/passwd``, ``../../x.jpg``) is refused unless ``allow_outside``."""
    base = Path(base).resolve()
    counts = Counter()
    for path in paths:
        if not isinstance(path, str) or not path.strip():
            continue
        counts["named"] += 1
        resolved = Path(path).expanduser().resolve()
        if not allow_outside and not resolved.is_relative_to(base):
            raise ValueError(f"image {path!r} lies outside the item table's folder {base}; move the pictures "
                             "there or pass --allow-images-outside if you mean it")
        if not resolved.is_file():
            counts["missing"] += 1
        elif check_image(resolved, decode=False)[1]:
            counts["unreadable"] += 1
        else:
            counts["readable"] += 1
    return {key: counts[key] for key in ("named", "readable", "missing", "unreadable")}
