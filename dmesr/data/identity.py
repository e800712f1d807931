"""A dataset's identity: the folder name its caches, features and runs are kept under.

A built-in dataset (``ml-1m``) is its name: its files are pinned by checksum. A dataset added with
``dmesr data add`` is its name plus its content identity (the recorded sha256 of its files and the
columns that read them), ``shop-5e0c2d7a``; a dataset given as a folder is its safe folder name plus
a fingerprint of its source files, ``data-3f2a9c1b``. So registering a name again with other files,
two folders both called ``data``, or one folder whose files changed never share a split, an enrich
cache, semantic features or a run directory. Names that are no folder name (``.``, ``..``, empty)
are refused: they would put a dataset's folders next to, or above, where they belong.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dmesr.data.loaders import cached_sha256
from dmesr.data.own import READ_RULES, content_identity, registration, verified_files
from dmesr.data.registry import DATASETS, dataset_spec, source_files

FINGERPRINT_CHARS = 8


def dataset_name(dataset: str) -> str:
    """The last path component of ``dataset``; a one-line error for ``.``, ``..`` and empty names."""
    name = Path(str(dataset)).name
    if not name or name in (".", "..") or not str(dataset).strip():
        raise ValueError(f"dataset {dataset!r} has no name to file it under; give a known dataset or a folder "
                         "by a path that ends in its name (e.g. ../my-data, not ..)")
    return name


def source_fingerprint(dataset: str) -> str:
    """sha256 over the dataset's source files (name and content), for a dataset given as a folder."""
    digest = hashlib.sha256()
    for path in source_files(dataset):
        digest.update(f"{path.name}:{cached_sha256(path)}\n".encode())
    return digest.hexdigest()


def registered_content(dataset: str, home=None) -> str | None:
    """The content identity of a dataset added with ``dmesr data add`` (its files checked first), else None."""
    entry = None if dataset in DATASETS else registration(dataset, home)
    if entry is None:
        return None
    verified_files(entry)
    return entry.get("content") or content_identity(entry)


def source_identity(dataset: str, home=None) -> list[str]:
    """What a dataset's split is made from, for its fingerprint: the verified sha256 of a built-in
    dataset's files; a registered dataset's content identity; a folder's file hashes and ``READ_RULES``."""
    content = registered_content(dataset, home)
    if content is not None:
        return [content]
    hashes = [cached_sha256(path) for path in source_files(dataset, home)]
    return hashes if dataset in DATASETS else hashes + [f"read-rules-{READ_RULES}"]


def is_folder_dataset(dataset: str) -> bool:
    """A dataset given as a folder of data files rather than by a registered name."""
    return dataset not in DATASETS and Path(dataset).is_dir()


def dataset_key(dataset: str) -> str:
    """``<folder name>-<source fingerprint>`` for a folder, ``<name>-<content identity>`` for a dataset
    added with ``dmesr data add``; a built-in name stands for itself."""
    name = dataset_name(dataset)
    if not is_folder_dataset(dataset):
        content = registered_content(dataset)
        return name if content is None else f"{name}-{content[:FINGERPRINT_CHARS]}"
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
