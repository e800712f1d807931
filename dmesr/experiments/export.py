"""Export a preprocessed split as plain CSV files that any code (not only dmesr) can read.

    dmesr export ml-1m exports/ml-1m

The folder gets ``item_map.csv``, ``user_map.csv``, ``train.csv``, ``valid.csv``, ``test.csv``,
``sampled_negatives_valid.csv`` / ``sampled_negatives_test.csv`` (when the split has sampled
negatives), a ``README.md`` that describes every file, and ``SHA256SUMS`` (``sha256sum -c``
format). The same split always gives the same bytes, so the checksums identify the data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from dmesr.config import load_config
from dmesr.data import prepare_split
from dmesr.data.schema import SequenceSplit

CHECKSUM_FILE = "SHA256SUMS"
SPLIT_FILES = ("item_map.csv", "user_map.csv", "train.csv", "valid.csv", "test.csv")
NEGATIVE_FILES = {"valid": "sampled_negatives_valid.csv", "test": "sampled_negatives_test.csv"}
EXPORT_FILES = (*SPLIT_FILES, *NEGATIVE_FILES.values(), "README.md", CHECKSUM_FILE)

README = """# {name}: a preprocessed leave-one-out split, exported by dmesr

Split fingerprint: `{fingerprint}` (hash of the raw files and every preprocessing parameter).
{users} users, {items} items, {interactions} interactions. Verify the files with `sha256sum -c SHA256SUMS`.

All files are UTF-8 CSV with a header row, comma-separated, `\\n` line ends, quoted where needed.

* `item_map.csv`: `item,original_id,text`. `item` is the internal id, 1..{items} (0 is padding in
  dmesr and never appears here); `original_id` is the id in the raw data; `text` is the item's
  original text (title, year, genres, ... assembled by the loader).
* `user_map.csv`: `user,original_id`. `user` is the internal id, 0..{last_user}.
* `train.csv`, `valid.csv`, `test.csv`: `user,item,position`, rows sorted by user then position.
  `position` counts each user's interactions in time order from 0 (ties in time keep the raw
  file's order). Leave-one-out: a user with n interactions has positions 0..n-3 in `train.csv`,
  position n-2 in `valid.csv` (validation target; its history is the train part) and position
  n-1 in `test.csv` (test target; its history is train + validation).
{negatives}
Statistics of the split (from dmesr):

```json
{stats}
```
"""

NEGATIVES_TEXT = """* `sampled_negatives_valid.csv`, `sampled_negatives_test.csv`: `user,rank,item`, {k} items per
  user that the user never interacted with, drawn once (seeded) for the sampled protocol: the
  target is ranked among itself and these. `rank` orders them as drawn (0..{last_rank}).
"""
# Data with repeat consumption: the negatives may be items the user had (see dmesr.data.preprocess).
REPEAT_NEGATIVES_TEXT = """* `sampled_negatives_valid.csv`, `sampled_negatives_test.csv`: `user,rank,item`, {k} items per
  user other than that stage's target, drawn once (seeded) for the sampled protocol: the target is
  ranked among itself and these. Users of this data come back to items, so the negatives may be
  items the user had before (all-unseen negatives would let "the user's own items first" win by
  construction). `rank` orders them as drawn (0..{last_rank}).
"""


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def split_tables(split: SequenceSplit) -> dict[str, pd.DataFrame]:
    """The split's tables, named by their file name."""
    lengths = split.lengths()
    if len(lengths) and lengths.min() < 3:
        raise ValueError(f"split {split.name}: every user needs >= 3 interactions for leave-one-out, "
                         f"{int((lengths < 3).sum())} users have fewer")
    if "text" not in split.items:
        raise ValueError(f"split {split.name}: the item table has no 'text' column")
    users = np.repeat(np.arange(split.num_users), lengths)
    positions = np.arange(len(split.flat_items)) - np.repeat(split.offsets[:-1], lengths)
    interactions = pd.DataFrame({"user": users, "item": split.flat_items, "position": positions})
    from_end = np.repeat(lengths, lengths) - positions  # 1 for the last interaction of a user
    tables = {
        "item_map.csv": pd.DataFrame({"item": np.arange(1, split.num_items + 1), "original_id": split.item_ids,
                                      "text": split.items["text"].to_numpy()}),
        "user_map.csv": pd.DataFrame({"user": np.arange(split.num_users), "original_id": split.user_ids}),
        "train.csv": interactions[from_end > 2],
        "valid.csv": interactions[from_end == 2],
        "test.csv": interactions[from_end == 1],
    }
    for stage, negatives in (("valid", split.valid_negatives), ("test", split.test_negatives)):
        if negatives is not None:
            if negatives.shape[0] != split.num_users:
                raise ValueError(f"split {split.name}: {stage} negatives have {negatives.shape[0]} rows "
                                 f"for {split.num_users} users")
            count = negatives.shape[1]
            tables[NEGATIVE_FILES[stage]] = pd.DataFrame({
                "user": np.repeat(np.arange(split.num_users), count),
                "rank": np.tile(np.arange(count), split.num_users), "item": negatives.reshape(-1)})
    return tables


def export_split(split: SequenceSplit, folder: str | Path) -> Path:
    """Write the split's files, README and checksums into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    strangers = sorted(path.name for path in folder.iterdir() if path.name not in EXPORT_FILES)
    if strangers:
        raise ValueError(f"{folder} holds files that are not part of an export ({', '.join(strangers[:5])}); "
                         "export into an empty folder")
    contents = {name: _csv_bytes(table) for name, table in split_tables(split).items()}
    contents["README.md"] = _readme(split).encode("utf-8")
    for name in EXPORT_FILES:
        if name not in contents:
            (folder / name).unlink(missing_ok=True)  # e.g. negatives left by an earlier export
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(contents.items()))
    (folder / CHECKSUM_FILE).write_text(sums)
    return folder


def _readme(split: SequenceSplit) -> str:
    drawn = [n for n in (split.valid_negatives, split.test_negatives) if n is not None]
    template = REPEAT_NEGATIVES_TEXT if split.stats.get("repeat_consumption", 0) > 0 else NEGATIVES_TEXT
    negatives = template.format(k=drawn[0].shape[1], last_rank=drawn[0].shape[1] - 1) if drawn else ""
    return README.format(name=split.name, fingerprint=split.fingerprint, users=split.num_users,
                         items=split.num_items, interactions=len(split.flat_items), last_user=split.num_users - 1,
                         negatives=negatives, stats=json.dumps(split.stats, indent=2, sort_keys=True, default=str))


def export(dataset: str, out_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """CLI entry: build (or load the cached) split of ``dataset`` with ``data.*`` overrides and export it.

    ``dataset`` may be a run directory: its split, rebuilt from the run's config, is exported.
    """
    if (Path(dataset) / "config.yaml").is_file() and (Path(dataset) / "data.json").is_file():
        from dmesr.training.run import load_run_split

        split = load_run_split(dataset)
    else:
        config = load_config(overrides=[f"data.dataset={dataset}", *(overrides or [])])
        split = prepare_split(config.data)
    folder = export_split(split, out_dir)
    print(f"wrote {folder} ({CHECKSUM_FILE} lists every file)")
    return folder
