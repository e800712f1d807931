"""Head/tail breakdowns: does a model help popular or rare items, short or long users?

Groups are defined from TRAINING data only (each user's ``sequence[:-2]``), so they are the same
for the validation and the test stage and never peek at a held-out item:

* ``head`` / ``tail``: users whose target is / is not a head item. Head items are the
  ``round(fraction * num_items)`` items with the most training interactions; equal counts are
  broken by the smaller internal id, so the set is deterministic.
* ``short`` / ``long``: users whose training length is below / at-or-above the median training
  length over all users (the threshold is returned as ``median_train_length``).
* ``repeat`` / ``new``: users whose target is / is not an item they had before it (repeat
  consumption; on MovieLens every target is new and ``repeat`` is empty).

The groups reuse the per-user values of an :class:`EvalResult`; nothing is scored again.
"""

from __future__ import annotations

import numpy as np

from dmesr.config import EvalConfig
from dmesr.data.batches import EvalInputs
from dmesr.data.schema import SequenceSplit
from dmesr.evaluation.metrics import summarize
from dmesr.evaluation.protocols import EvalResult


def training_lengths(split: SequenceSplit) -> np.ndarray:
    """``[num_users]`` length of each user's training part ``sequence[:-2]``."""
    return np.maximum(split.lengths() - 2, 0)


def item_popularity(split: SequenceSplit) -> np.ndarray:
    """``[num_items + 1]`` training interactions per item id (index 0 = padding, always 0)."""
    lengths = split.lengths()
    user_end = np.repeat(split.offsets[1:], lengths)  # end offset of the user owning each position
    in_training_part = np.arange(len(split.flat_items)) < user_end - 2
    items = np.asarray(split.flat_items)[in_training_part]
    if len(items) and (items.min() < 1 or items.max() > split.num_items):
        raise ValueError(f"item ids must lie in 1..{split.num_items}, got {items.min()}..{items.max()}")
    return np.bincount(items, minlength=split.num_items + 1)


def head_items(split: SequenceSplit, fraction: float = 0.2) -> np.ndarray:
    """Sorted ids of the ``round(fraction * num_items)`` most popular training items (ties: smaller id)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"head fraction must lie strictly between 0 and 1, got {fraction}")
    counts = item_popularity(split)[1:]
    by_popularity = np.argsort(-counts, kind="stable")  # stable: equal counts keep ascending id order
    return np.sort(by_popularity[: round(fraction * split.num_items)] + 1)


def breakdown(
    result: EvalResult, inputs: EvalInputs, split: SequenceSplit, config: EvalConfig
) -> dict[str, dict[str, float]]:
    """``{"head" | "tail" | "short" | "long" | "repeat" | "new": {metric: mean, "num_users": ..., threshold}}``.

    head/tail carry ``num_head_items``; short/long carry ``median_train_length``. A group with no
    users has NaN metrics.
    """
    num_users = len(result.ranks)
    if len(inputs) != num_users or split.num_users != num_users:
        raise ValueError(
            f"result ({num_users} users), inputs ({len(inputs)}) and split ({split.num_users})"
            " must cover the same users"
        )
    heads = head_items(split, config.head_fraction)
    target_is_head = np.isin(inputs.targets.numpy(), heads)
    lengths = training_lengths(split)
    median_length = float(np.median(lengths))
    is_long = lengths >= median_length
    groups = {
        "head": (target_is_head, {"num_head_items": float(len(heads))}),
        "tail": (~target_is_head, {"num_head_items": float(len(heads))}),
        "short": (~is_long, {"median_train_length": median_length}),
        "long": (is_long, {"median_train_length": median_length}),
    }
    if inputs.target_is_repeat is not None:
        repeat = inputs.target_is_repeat.numpy()
        groups.update({"repeat": (repeat, {}), "new": (~repeat, {})})
    table = {}
    for name, (members, threshold) in groups.items():
        metrics = summarize({metric: values[members] for metric, values in result.per_user.items()})
        table[name] = {**metrics, "num_users": float(members.sum()), **threshold}
    return table
