"""Shards: ``i/n`` splits a job into n parts that separate processes (a Slurm array, several GPUs) run."""

from __future__ import annotations


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``"2/8"`` or ``(2, 8)`` -> ``(2, 8)``; the index counts from 0 (like ``$SLURM_ARRAY_TASK_ID`` with
    ``--array=0-7``)."""
    try:
        index, count = (int(part) for part in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: need n >= 1 and 0 <= i < n")
    return index, count
