"""Enrichment throughput on this machine: batched vs one-at-a-time description, encoder speed, cache sizes.

    python benchmarks/bench_enrich.py --items 32 --batch-size 32 --repeats 3 --threads 2 \
        --out reports/bench/enrich-ml-100k.json

Describes the first ``--items`` ml-100k items (text view) with the cascade describer, once in
batches of ``--batch-size`` and once item by item, each ``--repeats`` times, and prints median
items/s. On CPU the prompt pass (prefill) costs the same either way, so the gain comes from the
generated tokens: it grows with the batch size and with ``--max-new-tokens``.
Then times the MiniLM encoder over all ml-100k item texts and reports how big the description
cache and the saved features are.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dmesr.data import load_raw
from dmesr.enrich.cache import read_descriptions
from dmesr.enrich.cascade import CascadeDescriber
from dmesr.enrich.describers import DescribeRequest
from dmesr.enrich.encoders import TextEncoder
from dmesr.enrich.pipeline import default_enrich_dir, embed_items

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "descriptions" / "ml-100k.cascade.text.jsonl"


def median_rate(count: int, run, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return count / statistics.median(seconds)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items = load_raw("ml-100k").items
    requests = [DescribeRequest(item=row.item, view="text", text=row.text) for row in items.head(args.items).itertuples()]

    describer = CascadeDescriber(max_new_tokens=args.max_new_tokens, device="cpu")
    describer.describe(requests[:2])  # load the models and warm up outside the timings
    batches = [requests[start:start + args.batch_size] for start in range(0, len(requests), args.batch_size)]
    batched = median_rate(len(requests), lambda: [describer.describe(batch) for batch in batches], args.repeats)
    single = median_rate(len(requests), lambda: [describer.describe([r]) for r in requests], args.repeats)
    print(f"cascade describer, {args.items} items, max_new_tokens={args.max_new_tokens}, {args.threads} thread(s), "
          f"median of {args.repeats}:")
    print(f"  batched (batches of {args.batch_size}): {batched:.3f} items/s")
    print(f"  one item at a time:         {single:.3f} items/s")
    print(f"  speed-up: {batched / single:.2f}x")
    figures = {"items": args.items, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
               "threads": args.threads, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
               "describer": describer.describer_id, "batched_items_per_s": batched, "single_items_per_s": single,
               "speedup": batched / single}

    encoder = TextEncoder(device="cpu", batch_size=64)
    texts = items["text"].tolist()
    rate = median_rate(len(texts), lambda: encoder.encode_with_tokens(texts, max_tokens=32), args.repeats)
    print(f"MiniLM encoder (pooled + 32 token states), {len(texts)} texts: {rate:.1f} texts/s")
    figures["encoder_texts_per_s"] = rate
    figures.update(cache_sizes(items))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures -> {args.out}")


def cache_sizes(items) -> dict:
    """Bytes of the ml-100k description file and of the features embedded from it."""
    source = SHIPPED if SHIPPED.is_file() else default_enrich_dir("ml-100k") / "descriptions"
    table = read_descriptions(source, "ml-100k")
    if table.empty:
        print(f"no ml-100k descriptions in {source} yet: cache sizes skipped")
        return {}
    cache_bytes = SHIPPED.stat().st_size if source == SHIPPED else folder_bytes(source)
    print(f"description cache ({source}): {len(table)} descriptions, {cache_bytes / 1e6:.2f} MB, "
          f"{cache_bytes / len(table):.0f} bytes each")
    with tempfile.TemporaryDirectory() as folder:
        described = items[items["item"].isin(set(table["item"]))]
        embed_items(described, "ml-100k", source, Path(folder) / "features", views=["text"])
        size = folder_bytes(Path(folder) / "features")
        print(f"features for {len(described)} items (text view, 32 tokens, float16): {size / 1e6:.2f} MB, "
              f"{size / len(described) / 1e3:.1f} kB per item")
    return {"descriptions": len(table), "description_file_bytes": cache_bytes, "feature_items": len(described),
            "feature_bytes": size}


if __name__ == "__main__":
    main()
