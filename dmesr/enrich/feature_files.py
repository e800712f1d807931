"""Saving and loading ``SemanticFeatures``: one .npy per array (memory-mappable) + meta.json.

A features folder is written into a temporary sibling and renamed into place, so a reader never
sees half a folder and a crash never leaves one behind. ``load_features`` checks the format and
the shapes, and, when asked, that the features come from the expected encoder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from dmesr.enrich.features import SemanticFeatures

FORMAT_VERSION = 1
ARRAYS = ("item_ids", "text_pooled", "text_tokens", "text_mask")


def save_features(features: SemanticFeatures, folder: str | Path) -> Path:
    folder = Path(folder).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        np.save(staging / "item_ids.npy", np.asarray(features.item_ids).astype(str))
        np.save(staging / "text_pooled.npy", np.asarray(features.text_pooled, dtype=np.float32))
        np.save(staging / "text_tokens.npy", np.asarray(features.text_tokens, dtype=np.float16))
        np.save(staging / "text_mask.npy", np.asarray(features.text_mask, dtype=bool))
        for view, vectors in features.views.items():
            np.save(staging / f"view_{view}.npy", np.asarray(vectors, dtype=np.float32))
            np.save(staging / f"present_{view}.npy", np.asarray(features.view_present[view], dtype=bool))
        meta = dict(features.meta, format_version=FORMAT_VERSION, views=sorted(features.views),
                    num_items=len(features.item_ids), dim=features.dim,
                    max_tokens=int(features.text_tokens.shape[1]))
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if folder.exists():  # replace: move the old folder aside first so the swap is one rename
            retired = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
            os.replace(folder, retired / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(retired)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder


def load_features(folder: str | Path, mmap: bool = True, *, encoder: str | None = None) -> SemanticFeatures:
    """Features saved by ``save_features``; ``encoder`` (optional) must match the one that made them."""
    folder = Path(folder).expanduser()
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no semantic features in {folder} (meta.json missing); run `dmesr embed`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"features in {folder} have format {meta.get('format_version')!r}; this dmesr reads {FORMAT_VERSION}"
        )
    if encoder is not None and meta.get("encoder") != encoder:
        raise ValueError(
            f"features in {folder} were encoded with {meta.get('encoder')!r}, not {encoder!r}; re-run `dmesr embed`"
        )
    mode = "r" if mmap else None

    def array(name: str) -> np.ndarray:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"semantic features in {folder} are incomplete: {path.name} missing")
        return np.load(path, mmap_mode=mode)

    features = SemanticFeatures(
        item_ids=array("item_ids"),
        views={view: array(f"view_{view}") for view in meta["views"]},
        view_present={view: array(f"present_{view}") for view in meta["views"]},
        text_pooled=array("text_pooled"),
        text_tokens=array("text_tokens"),
        text_mask=array("text_mask"),
        meta=meta,
    )
    rows = len(features.item_ids)
    shapes = [features.text_pooled.shape[0], features.text_tokens.shape[0], features.text_mask.shape[0]]
    shapes += [v.shape[0] for v in features.views.values()] + [p.shape[0] for p in features.view_present.values()]
    if any(count != rows for count in shapes) or rows != meta["num_items"]:
        raise ValueError(f"semantic features in {folder} are inconsistent: arrays do not all have {rows} rows")
    return features
