"""A dataset's identity: the folder name its caches, features and runs are kept under.

A registered dataset (``ml-1m``) is its name: its files are pinned by checksum. A dataset given as a
folder is its safe folder name plus a fingerprint of its source files, ``data-3f2a9c1b``, so two
folders both called ``data`` (or one folder whose files changed) never share an enrich cache,
semantic features or a run directory. Names that are no folder name (``.``, ``..``, empty) are
refused: they would put a dataset's folders next to, or above, where they belong.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dmesr.data.loaders import sha256_file
from dmesr.data.own import registration
from dmesr.data.registry import DATASETS, dataset_spec, source_files

FINGERPRINT_CHARS = 8


def dataset_name(dataset: str) -> str:
    """The last path component of ``dataset``; a one-line error for ``.``, ``..`` and empty names."""
    name = Path(str(dataset)).name
    if not name or name in (".", "..") or not str(dataset).strip():
        raise ValueError(f"dataset {dataset!r} has no name to file it under; give a known dataset or a folder "
                         "by a path that ends in its name (e.g. ../my-data, not ..)")
    return name


_hashed: dict[tuple, str] = {}  # (path, size, mtime) of every source file -> fingerprint: hash each file once


def source_fingerprint(dataset: str) -> str:
    """sha256 over the dataset's source files (name and content), for a dataset given as a folder."""
    files = source_files(dataset)
    stamp = tuple((str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    if stamp not in _hashed:
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
        _hashed[stamp] = digest.hexdigest()
    return _hashed[stamp]


def is_folder_dataset(dataset: str) -> bool:
    """A dataset given as a folder of data files rather than by a registered name."""
    return dataset not in DATASETS and Path(dataset).is_dir()


def dataset_key(dataset: str) -> str:
    """``<folder name>-<source fingerprint>`` for a folder; a registered name stands for itself."""
    name = dataset_name(dataset)
    if not is_folder_dataset(dataset):
        return name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return f"{safe}-{source_fingerprint(dataset)[:FINGERPRINT_CHARS]}"


def dataset_problem(dataset: str) -> str:
    """Why ``dataset`` cannot be loaded (neither a registered name nor a folder), or "" when it can."""
    try:
        dataset_name(dataset)
        if not is_folder_dataset(dataset) and registration(dataset) is None:
            dataset_spec(dataset)
    except ValueError as error:
        return str(error)
    return ""
