"""Loading item images for the image view: local paths, RGB, bounded size, never a crash.

A catalogue scraped from the web always has a few missing, unreadable or truncated images. Those
items simply get no image view (the DMESR item encoder masks a missing view), so loading returns
the reason instead of raising, and the caller logs and counts it.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_SIDE = 448  # larger pictures are shrunk (aspect kept); MLLM processors resize again anyway


def has_image_path(value) -> bool:
    """True when a table cell names an image (not None / NaN / empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(str(value).strip())


def load_image(path, max_side: int = MAX_IMAGE_SIDE) -> tuple[Image.Image | None, str | None]:
    """``(RGB image, None)``, or ``(None, reason)`` for a missing, unreadable or truncated file."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        return None, "missing image file"
    try:
        with Image.open(path) as opened:
            opened.load()  # decodes every byte: a truncated file raises here, not later in a batch
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        return None, f"unreadable image ({type(error).__name__})"
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image, None
