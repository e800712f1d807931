"""The two offline stages as functions the CLI and notebooks call: describe, then embed.

``describe_items`` walks an item table view by view in batches, skips what the cache already
holds, writes each finished batch to disk before starting the next, and isolates bad items: a
batch that fails is retried one item at a time, so one broken item costs only itself. A describer
whose model cannot load fails once, before the loop; one process writes a cache file at a time.
``embed_items`` encodes the cached descriptions and the original texts into ``SemanticFeatures``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dmesr.data.identity import dataset_key, dataset_name
from dmesr.enrich.cache import DescriptionCache, read_descriptions, safe_name
from dmesr.enrich.describers import Describer, DescribeRequest
from dmesr.enrich.encoders import DEFAULT_ENCODER, TextEncoder
from dmesr.enrich.feature_files import load_features, save_features
from dmesr.enrich.features import SemanticFeatures
from dmesr.enrich.images import has_image_path, load_image
from dmesr.enrich.prompts import VIEWS, check_view, prompt_hash
from dmesr.enrich.registry import describer_name, make_describer
from dmesr.lock import exclusive
from dmesr.paths import dmesr_home
from dmesr.shards import parse_shard

log = logging.getLogger(__name__)


def default_enrich_dir(dataset: str) -> Path:
    """One dataset's descriptions and features, under its identity (:mod:`dmesr.data.identity`)."""
    return dmesr_home() / "enrich" / dataset_key(dataset)


def features_folder(dataset: str, describer: str, encoder: str = DEFAULT_ENCODER) -> Path:
    """Where ``embed_items`` stores, and training looks for, one dataset's features."""
    return default_enrich_dir(dataset) / "features" / safe_name(f"{describer}__{Path(encoder).name}")


def load_dataset_features(dataset: str, items_config) -> SemanticFeatures:
    """The features training uses for ``items_config`` (its ``describer`` and ``encoder`` fields),
    checked to be made from this dataset (the identity they record, where they record one)."""
    folder = features_folder(dataset, items_config.describer, items_config.encoder)
    if not (folder / "meta.json").is_file():
        key = default_enrich_dir(dataset).name
        others = sorted(path.name for path in default_enrich_dir(dataset).parent.glob(f"{dataset_name(dataset)}-*")
                        if path.name != key and (path / "features" / folder.name / "meta.json").is_file())
        stale = (f"; those in enrich/{others[-1]} were made from other content of {dataset!r} (its files or "
                 "registration changed since) and are not used") if others else ""
        raise FileNotFoundError(
            f"no semantic features for dataset {dataset!r}, describer {items_config.describer!r}, encoder "
            f"{items_config.encoder!r} (looked in {folder}){stale}; run `dmesr embed --dataset {dataset} "
            f"--describer {items_config.describer}` first"
        )
    features = load_features(folder, encoder=items_config.encoder)
    recorded, current = features.meta.get("dataset_key"), dataset_key(dataset)
    if recorded is not None and recorded != current:
        raise ValueError(f"features in {folder} were made from dataset {recorded}, not {current} (its files "
                         f"differ); run `dmesr embed --dataset {dataset}` again")
    return features


def _identity(dataset: str) -> str | None:
    """The dataset's key, or None for an item table given without a dataset dmesr can load."""
    try:
        return dataset_key(dataset)
    except (ValueError, FileNotFoundError):
        return None


def _with_downloaded_images(items: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Items whose pictures are URLs get the files ``dmesr data images`` downloaded for this dataset."""
    from dmesr.data.images import images_folder, with_downloaded_images

    if "image_urls" not in items.columns:
        return items
    try:
        folder = images_folder(dataset)
    except (ValueError, FileNotFoundError):
        return items
    return with_downloaded_images(items, folder)


def check_item_table(items: pd.DataFrame) -> pd.DataFrame:
    missing = {"item", "text"} - set(items.columns)
    if missing:
        raise ValueError(f"item table lacks column(s) {sorted(missing)}")
    if items["item"].astype(str).duplicated().any():
        raise ValueError(f"item table has duplicate item ids, e.g. {items['item'][items['item'].duplicated()].iloc[0]!r}")
    return items


def in_shard(item: str, shard: tuple[int, int]) -> bool:
    """Stable across runs, machines and table order: a hash of the item id."""
    return int(hashlib.sha1(item.encode("utf-8")).hexdigest()[:8], 16) % shard[1] == shard[0]


def select_items(items: pd.DataFrame, limit: int | None, shard) -> pd.DataFrame:
    if shard is not None:
        shard = parse_shard(shard)
        items = items[[in_shard(str(item), shard) for item in items["item"]]]
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0, got {limit!r}")
    return items if limit is None else items.head(int(limit))


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def describe_items(items: pd.DataFrame, dataset: str, describer: str | Describer = "cascade", views=VIEWS,
                   cache_dir=None, limit: int | None = None, shard=None, batch_size: int = 16, progress: bool = True,
                   **backend_options) -> dict:
    """Describe every (item, view) not yet in the cache; returns a summary (done, cached, skipped, failed).

    ``describer`` is a backend name (its options in ``backend_options``) or a ready ``Describer``,
    which keeps its loaded models across calls.
    """
    check_item_table(items)
    views = [check_view(view) for view in views]
    if "image" in views:
        items = _with_downloaded_images(items, dataset)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    selected = select_items(items, limit, shard)
    backend = describer if isinstance(describer, Describer) else make_describer(describer, **backend_options)
    cache = DescriptionCache(cache_dir or default_enrich_dir(dataset) / "descriptions", dataset)
    shard_tag = "all" if shard is None else "shard-{}-of-{}".format(*parse_shard(shard))
    path = cache.writer_path(backend.describer_id, shard_tag)
    with exclusive(path.with_name(path.name + ".lock"), str(path)):
        return _describe_locked(selected, dataset, backend, views, cache, shard_tag, batch_size, progress)


def _describe_locked(selected: pd.DataFrame, dataset: str, backend: Describer, views: list[str],
                     cache: DescriptionCache, shard_tag: str, batch_size: int, progress: bool) -> dict:
    writer = cache.writer(backend.describer_id, shard_tag)  # first: it ends the file on a whole record
    done = cache.done_keys()
    skipped, failed, cached = Counter(), Counter(), 0
    usable = Counter()  # per view: item views cached or with a readable input
    pending: dict[str, list[dict]] = {view: [] for view in views}
    for row in selected.to_dict("records"):
        for view in views:
            key = (dataset, str(row["item"]), view, backend.describer_id, prompt_hash(view))
            if key in done:
                cached += 1
                usable[view] += 1
            elif view == "image" and not has_image_path(row.get("image_path")):
                skipped["no image"] += 1
            elif view == "text" and not _text(row["text"]):
                failed["empty item text"] += 1
            else:
                pending[view].append(row)
    total = sum(len(rows) for rows in pending.values())
    _refuse_views_without_input(dataset, [view for view in views if not pending[view]], len(selected), usable,
                                skipped, failed)  # before any model loads: nothing to read at all
    if total:
        backend.load()  # a model that cannot load is one error here, not one per item below
    started, written = time.perf_counter(), 0
    with tqdm(total=total, unit="item", desc=f"describe {dataset}", disable=not progress) as bar:
        for view, rows in pending.items():
            for start in range(0, len(rows), batch_size):
                batch = rows[start:start + batch_size]
                requests = _requests(view, batch, skipped)
                usable[view] += len(requests)
                records = [
                    dict(dataset=dataset, item=request.item, view=view, describer=backend.describer_id,
                         prompt_hash=prompt_hash(view), description=description)
                    for request, description in _describe_isolated(backend, requests, failed)
                ]
                writer.append(records)
                written += len(records)
                bar.update(len(batch))
    seconds = time.perf_counter() - started
    summary = dict(dataset=dataset, describer=backend.describer_id, views=views, items=len(selected),
                   done=written, cached=cached, skipped=dict(skipped), failed=dict(failed),
                   seconds=round(seconds, 2), items_per_s=round(written / seconds, 3) if written else 0.0,
                   cache_file=str(writer.path))
    log.info("describe summary: %s", summary)
    if progress:
        print(f"describe {dataset}: {written} done, {cached} already cached, skipped {dict(skipped)}, "
              f"failed {dict(failed)} ({summary['items_per_s']} items/s)")
    _refuse_views_without_input(dataset, views, len(selected), usable, skipped, failed)
    if total and not written and failed:
        raise RuntimeError(f"describe {dataset}: every one of {total} item views failed ({dict(failed)}); "
                           f"nothing was written to {writer.path}")
    return summary


def _refuse_views_without_input(dataset: str, views: list[str], selected: int, usable: Counter, skipped: Counter,
                                failed: Counter) -> None:
    """A view asked for with no readable input for any item (no picture at all, say) is an error, not a no-op."""
    unusable = [view for view in views if selected and not usable[view]]
    if unusable:
        raise RuntimeError(f"describe {dataset}: no item has a readable input for the {' and '.join(unusable)} view "
                           f"(skipped: {dict(skipped)}, failed: {dict(failed)}); check the pictures (dmesr data stats) "
                           "or ask for the other view only")


def _requests(view: str, rows: list[dict], skipped: Counter) -> list[DescribeRequest]:
    requests = []
    for row in rows:
        image = None
        if view == "image":
            image, reason = load_image(row["image_path"])
            if image is None:
                log.warning("item %s: %s (%s); no image view", row["item"], reason, row["image_path"])
                skipped[reason] += 1
                continue
        requests.append(DescribeRequest(item=str(row["item"]), view=view, text=_text(row["text"]), image=image))
    return requests


def _describe_isolated(backend, requests: list[DescribeRequest], failed: Counter):
    """(request, description) pairs; a failing batch is retried item by item, failures counted."""
    if not requests:
        return []
    try:
        descriptions = backend.describe(requests)
        if len(descriptions) != len(requests):
            raise RuntimeError(f"describer returned {len(descriptions)} descriptions for {len(requests)} items")
        outputs = list(zip(requests, descriptions))
    except Exception as error:  # noqa: BLE001 - any model error must cost one item, not the run
        if len(requests) == 1:
            log.warning("item %s (%s view) failed: %s", requests[0].item, requests[0].view, error)
            failed[f"{type(error).__name__}: {str(error)[:80]}"] += 1
            return []
        return [pair for request in requests for pair in _describe_isolated(backend, [request], failed)]
    kept = [(request, text) for request, text in outputs if text.strip()]
    if len(kept) < len(outputs):
        failed["empty description"] += len(outputs) - len(kept)
    return kept


def of_describer(table: pd.DataFrame, describer: str) -> pd.DataFrame:
    """The rows of a descriptions table written by ``describer``: a registered name (``gemma3``: every
    ``gemma3:...`` id, not ``gemma3x:...``) or one full describer id."""
    ids = table["describer"].astype(str)
    return table[(ids == describer) | (ids.map(describer_name) == describer)]


def embed_items(items: pd.DataFrame, dataset: str, descriptions_source=None, out_dir=None,
                encoder: str = DEFAULT_ENCODER, describer: str | None = None, views=VIEWS,
                max_tokens: int = 32, batch_size: int = 64, device: str = "auto",
                progress: bool = True) -> SemanticFeatures:
    """Encode descriptions (cache folder, JSONL or parquet) and original texts; saves and returns features.

    Features already saved from the same items, descriptions, views, encoder and token count are
    loaded instead of encoded again (a rerun of ``make demo`` embeds nothing)."""
    check_item_table(items)
    source = Path(descriptions_source or default_enrich_dir(dataset) / "descriptions")
    table = read_descriptions(source, dataset)
    if describer is not None and "describer" in table.columns:
        table = of_describer(table, describer)
    table = table[table["view"].isin([check_view(view) for view in views])]
    if table.empty:
        raise ValueError(f"no {'/'.join(views)} descriptions for dataset {dataset!r} in {source}"
                         + (f" from describer {describer!r}" if describer else "") + "; run describe first")
    for column in ("describer", "prompt_hash"):
        if column in table.columns and table.groupby("view")[column].nunique().max() > 1:
            found = sorted(table[column].unique())
            raise ValueError(f"{source} mixes several {column} values {found}; pick one with describer=...")
    item_ids = items["item"].astype(str).to_numpy()
    texts = [_text(text) for text in items["text"]]
    if not all(texts):
        raise ValueError(f"item {item_ids[texts.index('')]!r} has no text; the original-text features need one")
    fingerprint = hashlib.sha256()
    for frame in (items[["item", "text"]].astype(str), table[["item", "view", "description"]].sort_values(["item", "view"])):
        fingerprint.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    folder = Path(out_dir or features_folder(dataset, describer or "all", encoder))
    saved = _saved_meta(folder)
    if (saved.get("source_fingerprint") == fingerprint.hexdigest()[:16] and saved.get("encoder") == encoder
            and saved.get("max_tokens") == max_tokens and sorted(saved.get("views", [])) == sorted(views)):
        print(f"dmesr: features in {folder} were made from the same items, descriptions and encoder: not re-embedded")
        return load_features(folder, encoder=encoder)
    text_encoder = TextEncoder(encoder, device=device, batch_size=batch_size, progress=progress)
    pooled, tokens, mask = text_encoder.encode_with_tokens(texts, max_tokens, what="item texts")
    vectors, present = {}, {}
    for view in views:
        lookup = dict(zip(table.loc[table["view"] == view, "item"], table.loc[table["view"] == view, "description"]))
        present[view] = np.array([item in lookup and bool(lookup[item].strip()) for item in item_ids])
        vectors[view] = np.zeros((len(item_ids), text_encoder.dim), dtype=np.float32)
        if present[view].any():
            vectors[view][present[view]] = text_encoder.encode([lookup[i] for i in item_ids[present[view]]],
                                                               what=f"{view}-view descriptions")
    meta = dict(dataset=dataset, dataset_key=_identity(dataset), encoder=encoder, descriptions=str(source),
                describer=sorted(table["describer"].unique()) if "describer" in table.columns else None,
                prompt_hashes={v: sorted(table.loc[table["view"] == v, "prompt_hash"].unique())
                               for v in views} if "prompt_hash" in table.columns else None,
                view_counts={view: int(mask_.sum()) for view, mask_ in present.items()}, max_tokens=max_tokens,
                source_fingerprint=fingerprint.hexdigest()[:16])
    features = SemanticFeatures(item_ids=item_ids, views=vectors, view_present=present, text_pooled=pooled,
                                text_tokens=tokens, text_mask=mask, meta=meta)
    save_features(features, folder)
    return features


def _saved_meta(folder: Path) -> dict:
    """The meta.json of features already in ``folder`` ({} if none or unreadable: then they are made again)."""
    import json

    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
