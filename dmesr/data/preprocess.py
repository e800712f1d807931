"""From a ``RawDataset`` to a saved, fingerprinted ``SequenceSplit`` (leave-one-out per user).

Steps, in order: drop exact duplicate interactions; iterative k-core filter until stable
(users also need >= 3 interactions to give a train part, a validation and a test target);
per-user chronological order with a stable tie-break on file order (MovieLens timestamps tie
for about half the rows, so an unstable sort would change the targets); internal ids 1..N;
sampled-protocol negatives drawn once (on data with repeat consumption from every item but the
target, see ``sample_negatives``). The fingerprint hashes the raw files and every
``DataConfig`` field that changes the split, so a cached split is reused only when it would be
rebuilt identically.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dmesr.config import DataConfig
from dmesr.data.identity import source_identity
from dmesr.data.loaders import require_columns, sha256_file
from dmesr.data.registry import load_raw
from dmesr.data.repeats import repeat_share, target_is_repeat
from dmesr.data.schema import INTERACTION_COLUMNS, RawDataset, SequenceSplit
from dmesr.paths import dmesr_home

logger = logging.getLogger(__name__)

SPLIT_FORMAT = 1  # bump when the saved layout or the preprocessing rules change
MIN_SEQUENCE_LENGTH = 3  # >= 1 training item + validation target + test target
NOT_FINGERPRINTED = ("max_len",)  # DataConfig fields that do not change the split
ARRAYS_FILE, ITEMS_FILE, META_FILE = "arrays.npz", "items.parquet", "meta.json"


def split_params(config: DataConfig) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in NOT_FINGERPRINTED}


def split_fingerprint(source_hashes: list[str], config: DataConfig) -> str:
    """sha256 over the raw sources' hashes, the split parameters and ``SPLIT_FORMAT``."""
    payload = json.dumps({"sources": source_hashes, "params": split_params(config), "format": SPLIT_FORMAT})
    return hashlib.sha256(payload.encode()).hexdigest()


def source_hashes(raw: RawDataset) -> list[str]:
    """Hashes of the files the dataset came from; for an in-memory dataset, of its tables."""
    if raw.source_files:
        return [sha256_file(path) for path in raw.source_files]
    return [
        hashlib.sha256(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes()).hexdigest()
        for frame in (raw.interactions, raw.items)
    ]


def sorted_order(ids: np.ndarray) -> np.ndarray:
    """Indices that sort ids: numerically when every id is an integer ("2" before "10"), else as strings."""
    ids = ids.astype(str)
    if len(ids) and pd.Series(ids).str.fullmatch(r"\d{1,18}").all():
        return np.lexsort((ids, ids.astype(np.int64)))
    return np.argsort(ids, kind="stable")


def k_core(
    users: np.ndarray, items: np.ndarray, alive: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, np.ndarray]:
    """Iteratively drop rows of users / items that are too rare until nothing changes.

    A user needs ``min_user`` distinct items and an item ``min_item`` distinct users (an item
    bought five times by one user is not five users' item); every interaction of a survivor is
    kept. A user also needs ``MIN_SEQUENCE_LENGTH`` interactions for the leave-one-out split.
    Without repeat consumption distinct counts equal interaction counts. ``users`` / ``items``
    are integer codes per row. Returns the surviving-row mask and, per user code, the count that
    removed the user (distinct items when below ``min_user``, else interactions; -1: never).
    """
    removed_at = np.full(users.max() + 1, -1, dtype=np.int64)
    num_items = items.max() + 1
    alive = alive.copy()
    while True:
        pairs = np.unique(users[alive] * num_items + items[alive])
        distinct_items = np.bincount(pairs // num_items, minlength=len(removed_at))
        distinct_users = np.bincount(pairs % num_items, minlength=num_items)
        user_count = np.bincount(users[alive], minlength=len(removed_at))
        short_users = (user_count > 0) & ((distinct_items < min_user) | (user_count < MIN_SEQUENCE_LENGTH))
        rare_items = (distinct_users > 0) & (distinct_users < min_item)
        if not short_users.any() and not rare_items.any():
            return alive, removed_at
        removed_at[short_users] = np.where(distinct_items < min_user, distinct_items, user_count)[short_users]
        alive &= ~short_users[users] & ~rare_items[items]


def sample_negatives(split: SequenceSplit, k: int, rng: np.random.Generator, target_from_end: int = 0) -> np.ndarray:
    """``[num_users, k]`` distinct internal ids per user, none of which the user ever interacted with.

    With ``target_from_end`` (1: test target, 2: validation target), for data with repeat
    consumption, only that target is left out: the negatives may be items the user had before, so
    ranking the user's own past items first does not win by construction.
    """
    negatives = np.empty((split.num_users, k), dtype=np.int64)
    for user in range(split.num_users):
        sequence = split.sequence(user)
        seen = sequence[-target_from_end:][:1] if target_from_end else np.unique(sequence)
        unseen = split.num_items - len(seen)
        if unseen < k:
            raise ValueError(
                f"user {split.user_ids[user]} has only {unseen} {'candidate' if target_from_end else 'unseen'} "
                f"items, fewer than num_sampled_negatives={k}; lower it"
            )
        ranks = rng.choice(unseen, size=k, replace=False)  # positions among the unseen ids
        # seen[j] - 1 - j unseen ids lie below seen[j]; each seen id at or below the answer shifts it by one
        unseen_below = seen - 1 - np.arange(len(seen))
        negatives[user] = ranks + 1 + np.searchsorted(unseen_below, ranks, side="right")
    return negatives


def _quantiles(lengths: np.ndarray) -> dict:
    points = {"min": 0, "p25": 25, "p50": 50, "p75": 75, "p90": 90, "max": 100}
    summary = {key: float(np.percentile(lengths, q)) for key, q in points.items()}
    return {**summary, "mean": float(lengths.mean())}


def _checked_interactions(raw: RawDataset) -> pd.DataFrame:
    frame = raw.interactions
    require_columns(frame, INTERACTION_COLUMNS, f"dataset {raw.name} interactions")
    if frame.empty:
        raise ValueError(f"dataset {raw.name} has no interactions")
    if frame[list(INTERACTION_COLUMNS)].isna().any().any():
        column = frame[list(INTERACTION_COLUMNS)].isna().any().idxmax()
        raise ValueError(f"dataset {raw.name}: missing values in interaction column {column!r}")
    if not pd.api.types.is_integer_dtype(frame["timestamp"]):
        raise ValueError(f"dataset {raw.name}: timestamp must be int64, got {frame['timestamp'].dtype}")
    return frame


def _aligned_items(raw: RawDataset, item_ids: np.ndarray) -> tuple[pd.DataFrame, int]:
    """Item table in internal-id order; items the source has no row for get an empty text."""
    require_columns(raw.items, ("item", "text"), f"dataset {raw.name} items")
    table = raw.items.assign(item=raw.items["item"].astype(str))
    repeated = table["item"][table["item"].duplicated()]
    if len(repeated):
        raise ValueError(f"dataset {raw.name}: item {repeated.iloc[0]!r} has more than one row in the item table")
    table = table.set_index("item").reindex(item_ids)
    without_metadata = int(table["text"].isna().sum())
    table["text"] = table["text"].fillna("").astype(str)
    if "image_path" not in table.columns:
        table["image_path"] = None
    return _none_for_missing_images(table.rename_axis("item").reset_index()), without_metadata


def _none_for_missing_images(items: pd.DataFrame) -> pd.DataFrame:
    paths = [path if isinstance(path, str) else None for path in items["image_path"]]
    items["image_path"] = pd.Series(paths, index=items.index, dtype=object)  # None, not NaN, for "no image"
    return items


def build_split(raw: RawDataset, config: DataConfig) -> SequenceSplit:
    """Filter, order and index ``raw`` into a leave-one-out ``SequenceSplit`` (see the module docstring)."""
    frame = _checked_interactions(raw)
    user_codes, user_names = pd.factorize(frame["user"].astype(str))
    item_codes, item_names = pd.factorize(frame["item"].astype(str))
    timestamps = frame["timestamp"].to_numpy(dtype=np.int64)
    unique_rows = ~frame.duplicated(list(INTERACTION_COLUMNS)).to_numpy()
    alive, removed_at = k_core(
        user_codes, item_codes, unique_rows, config.min_user_interactions, config.min_item_interactions
    )
    rows = np.flatnonzero(alive)  # ascending = file order
    if not len(rows):
        raise ValueError(
            f"dataset {raw.name}: no interactions survive the k-core filter "
            f"(min_user_interactions={config.min_user_interactions}, "
            f"min_item_interactions={config.min_item_interactions})"
        )

    kept_users, kept_items = np.unique(user_codes[rows]), np.unique(item_codes[rows])
    user_ids = np.asarray(user_names)[kept_users]
    item_ids = np.asarray(item_names)[kept_items]
    user_order, item_order = sorted_order(user_ids), sorted_order(item_ids)
    user_ids, item_ids = user_ids[user_order].astype(str), item_ids[item_order].astype(str)
    user_rank = np.full(len(user_names), -1, dtype=np.int64)
    user_rank[kept_users[user_order]] = np.arange(len(kept_users))
    internal_item = np.zeros(len(item_names), dtype=np.int64)
    internal_item[kept_items[item_order]] = np.arange(1, len(kept_items) + 1)

    # lexsort keys, last = primary: user, then timestamp, then file position (the stable tie-break)
    order = rows[np.lexsort((rows, timestamps[rows], user_rank[user_codes[rows]]))]
    lengths = np.bincount(user_rank[user_codes[order]], minlength=len(user_ids))
    items, without_metadata = _aligned_items(raw, item_ids)

    present_before = np.bincount(user_codes[unique_rows], minlength=len(user_names)) > 0
    dropped = present_before & (user_rank < 0)
    min_user = config.min_user_interactions
    split = SequenceSplit(
        name=raw.name,
        item_ids=item_ids,
        user_ids=user_ids,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        flat_items=internal_item[item_codes[order]],
        items=items,
        fingerprint=split_fingerprint(source_hashes(raw), config),
    )
    split.stats = {
        "users": split.num_users,
        "items": split.num_items,
        "interactions": len(split.flat_items),
        "density": len(split.flat_items) / (split.num_users * split.num_items),
        "sequence_length": _quantiles(lengths),
        "raw": {"users": len(user_names), "items": len(item_names), "interactions": len(frame)},
        "duplicates_removed": int((~unique_rows).sum()),
        "users_dropped": {
            "below_min_user_interactions": int((dropped & (removed_at >= 0) & (removed_at < min_user)).sum()),
            "fewer_than_3_interactions": int((dropped & (removed_at >= min_user)).sum()),
            "all_items_filtered": int((dropped & (removed_at < 0)).sum()),  # every item they had was too rare
        },
        "items_dropped": int(len(item_names) - split.num_items),
        "items_without_metadata": without_metadata,
        "params": split_params(config),
    }
    split.stats["repeat_consumption"] = repeat_share(split)
    split.stats["repeat_targets"] = {stage: float(target_is_repeat(split, stage).mean()) for stage in ("valid", "test")}
    repeats = split.stats["repeat_consumption"] > 0
    fewest_unseen = split.num_items - 1 if repeats else \
        min(split.num_items - len(np.unique(split.sequence(u))) for u in range(split.num_users))
    if config.num_sampled_negatives > 0 and fewest_unseen < config.num_sampled_negatives:
        # a catalogue this small cannot support the sampled protocol; full ranking still works
        reason = (f"a user has only {fewest_unseen} unseen items, fewer than "
                  f"num_sampled_negatives={config.num_sampled_negatives}")
        logger.warning("%s: no sampled-protocol negatives (%s)", split.name, reason)
        split.stats["sampled_protocol"] = f"unavailable: {reason}"
    elif config.num_sampled_negatives > 0:
        rng = np.random.default_rng(config.negative_seed)
        split.valid_negatives = sample_negatives(split, config.num_sampled_negatives, rng, 2 if repeats else 0)
        split.test_negatives = sample_negatives(split, config.num_sampled_negatives, rng, 1 if repeats else 0)
    return split


def save_split(split: SequenceSplit, folder: Path | str) -> Path:
    """Write ``arrays.npz`` + ``items.parquet`` + ``meta.json`` into a temp folder, then rename it into place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        arrays = {
            "item_ids": np.asarray(split.item_ids, dtype=str),
            "user_ids": np.asarray(split.user_ids, dtype=str),
            "offsets": np.asarray(split.offsets, dtype=np.int64),
            "flat_items": np.asarray(split.flat_items, dtype=np.int64),
        }
        for key in ("valid_negatives", "test_negatives"):
            if getattr(split, key) is not None:
                arrays[key] = np.asarray(getattr(split, key), dtype=np.int64)
        np.savez_compressed(scratch / ARRAYS_FILE, **arrays)
        split.items.to_parquet(scratch / ITEMS_FILE, index=False)
        meta = {"split_format": SPLIT_FORMAT, "name": split.name, "fingerprint": split.fingerprint}
        (scratch / META_FILE).write_text(json.dumps({**meta, "stats": split.stats}, indent=2))
        if folder.exists():
            retired = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
            os.replace(folder, retired / folder.name)
            shutil.rmtree(retired)
        try:
            os.replace(scratch, folder)
        except OSError as error:
            # Two grid workers can build the same uncached split at once: the second rename then
            # meets the first one's folder. The split is a function of its fingerprint, so theirs
            # is as good as ours; anything else in the way is a real error.
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or saved_fingerprint(folder) != split.fingerprint:
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def saved_fingerprint(folder: Path) -> str | None:
    """The fingerprint of the split saved in ``folder``, or None when there is no complete one."""
    try:
        return json.loads((folder / META_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def load_split(folder: Path | str) -> SequenceSplit:
    """Read a split written by ``save_split`` (no pickle involved)."""
    folder = Path(folder)
    for file in (ARRAYS_FILE, ITEMS_FILE, META_FILE):
        if not (folder / file).is_file():
            raise FileNotFoundError(f"{folder}: not a saved split (missing {file})")
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("split_format") != SPLIT_FORMAT:
        raise ValueError(
            f"{folder}: split format {meta.get('split_format')!r}, this dmesr reads {SPLIT_FORMAT}; rebuild it"
        )
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
        loaded = {key: arrays[key] for key in arrays.files}
    return SequenceSplit(
        name=meta["name"],
        item_ids=loaded["item_ids"],
        user_ids=loaded["user_ids"],
        offsets=loaded["offsets"],
        flat_items=loaded["flat_items"],
        items=_none_for_missing_images(pd.read_parquet(folder / ITEMS_FILE)),
        fingerprint=meta["fingerprint"],
        stats=meta["stats"],
        valid_negatives=loaded.get("valid_negatives"),
        test_negatives=loaded.get("test_negatives"),
    )


def prepare_split(config: DataConfig, home: Path | str | None = None) -> SequenceSplit:
    """Fetch, load and build the split for ``config``, cached in ``$DMESR_HOME/processed/``.

    ``config.dataset`` is a known dataset name (see ``known_datasets()``: the built-in ones and
    those added with ``dmesr data add``, see ``dmesr.data.own``) or the path of a folder holding
    RecBole atomic files (``<name>.inter`` with user_id, item_id, timestamp, and an optional
    ``<name>.item``). The cache folder is named by
    the fingerprint, so changing the files or any split parameter builds a new split.
    """
    fingerprint = split_fingerprint(source_identity(config.dataset, home), config)
    folder = dmesr_home(home) / "processed" / f"{Path(config.dataset).name}-{fingerprint[:12]}"
    if saved_fingerprint(folder) == fingerprint:
        split = load_split(folder)
        # saved before repeats were counted: rebuilt once, as k-core and negatives differ on repeat data
        if "repeat_consumption" in split.stats:
            return split
    split = build_split(load_raw(config.dataset, home), config)
    split.fingerprint = fingerprint  # of the sources as identified above (for a registration: its content)
    save_split(split, folder)
    print(f"dmesr: built {split.name}: {split.num_users} users, {split.num_items} items -> {folder}")
    return split


def dataset_stats(name_or_split: str | DataConfig | SequenceSplit, home: Path | str | None = None) -> dict:
    """Statistics of a split, or of the default split of a dataset name / config (built if needed)."""
    if isinstance(name_or_split, SequenceSplit):
        return dict(name_or_split.stats)
    config = name_or_split if isinstance(name_or_split, DataConfig) else DataConfig(dataset=str(name_or_split))
    return dict(prepare_split(config, home).stats)
