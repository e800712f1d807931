"""Evaluation protocols: score every user's history with a model, rank the held-out target, report.

Two protocols, chosen by ``EvalConfig.protocol``:

* ``full`` (default): the target is ranked against the whole catalogue (items ``1..n``). With
  ``exclude_history`` every item of the user's FULL history (``EvalInputs.seen_items``, not only
  the ``max_len`` window the model sees) is removed from the ranking, except the target itself,
  which is always ranked (a re-consumed item stays rankable). This is the published-anchor
  protocol, "seen items excluded", that the SASRec / BERT4Rec / LLM-ESR line of papers reports.
  The default ``auto`` excludes seen items only on data without repeat consumption: where users
  come back to items, a repeated target would be the only seen item left in the ranking, so the
  candidate set would depend on the answer. There every item is ranked.
* ``sampled``: the target is ranked among itself and the split's negatives (e.g. 100 items the
  user never interacted with). The negatives are drawn once, seeded, when the split is built and
  saved with it, never here, so every model meets the same candidates. On data with repeat
  consumption they are drawn from every item but the target, seen ones included, for the same
  reason (``dmesr.data.preprocess.sample_negatives``).

Ties count against the model (see :mod:`dmesr.evaluation.metrics`). Scoring runs in batches under
``torch.inference_mode`` with the model in eval mode; its previous mode is restored afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import PROTOCOLS, EvalConfig
from dmesr.data.batches import EvalInputs
from dmesr.evaluation.metrics import metrics_from_ranks, ranks_from_scores, summarize


@dataclass
class EvalResult:
    metrics: dict[str, float]  # mean over users, e.g. {"NDCG@10": 0.123, ...}
    per_user: dict[str, np.ndarray]  # [U] per-user value of each metric, in EvalInputs order
    ranks: np.ndarray  # [U] 0-based rank of each user's target


def evaluate(
    model: nn.Module, inputs: EvalInputs, config: EvalConfig, device: str | torch.device = "cpu"
) -> EvalResult:
    """Rank every user's target with ``model.predict_scores`` (model already on ``device``)."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {config.protocol!r}; known: {', '.join(PROTOCOLS)}")
    if config.batch_size < 1:
        raise ValueError(f"evaluation batch_size must be >= 1, got {config.batch_size}")
    num_users = len(inputs)
    if num_users == 0:
        raise ValueError("no users to evaluate: the evaluation inputs are empty")
    if config.protocol == "sampled":
        _check_negatives(inputs)
    exclude = excludes_history(config, inputs.repeat_data)  # a run passes it resolved already

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ranks = torch.cat(
                [
                    _rank_batch(model, inputs, config.protocol, exclude, start, min(start + config.batch_size, num_users),
                                device)
                    for start in range(0, num_users, config.batch_size)
                ]
            )
    finally:
        model.train(was_training)

    per_user = metrics_from_ranks(ranks, config.ks)
    return EvalResult(
        metrics=summarize(per_user),
        per_user={name: values.numpy() for name, values in per_user.items()},
        ranks=ranks.numpy(),
    )


def _rank_batch(
    model: nn.Module, inputs: EvalInputs, protocol: str, exclude: bool, start: int, stop: int,
    device: str | torch.device,
) -> torch.Tensor:
    """Ranks (on the CPU) of the targets of users ``start..stop-1``."""
    targets = inputs.targets[start:stop].to(device)
    # a model may read each user's whole history instead of the max_len window (repeat-pop's default)
    histories = inputs.full_histories(start, stop) if getattr(model, "reads_full_history", False) \
        else inputs.histories[start:stop]
    scores = model.predict_scores(histories.to(device))
    expected_width = getattr(model, "num_items", scores.shape[-1] - 1) + 1
    if scores.shape != (stop - start, expected_width):
        raise ValueError(
            f"model.predict_scores returned shape {tuple(scores.shape)}, expected [{stop - start}, {expected_width}]"
        )
    if protocol == "sampled":
        candidates = torch.cat([targets.unsqueeze(1), inputs.negatives[start:stop].to(device)], dim=1)
        if candidates.max() >= scores.shape[1]:
            raise ValueError(f"negative item id {int(candidates.max())} is outside the model's catalogue")
        # Lay the candidates out as a small catalogue (column 0 = padding) whose item 1 is the target.
        candidate_scores = F.pad(scores.gather(1, candidates), (1, 0))
        return ranks_from_scores(candidate_scores, torch.ones_like(targets)).cpu()
    excluded = seen_item_mask(inputs, start, stop, scores.shape, scores.device) if exclude else None
    return ranks_from_scores(scores, targets, excluded).cpu()


def excludes_history(config: EvalConfig, repeat_data: bool) -> bool:
    """``eval.exclude_history`` resolved: ``auto`` excludes seen items only on data without repeats. A run
    resolves it once, when it starts, and evaluates with the resolved value."""
    if config.exclude_history == "auto":
        return not repeat_data
    if not isinstance(config.exclude_history, bool):
        raise ValueError(f"eval.exclude_history must be true, false or auto, got {config.exclude_history!r}")
    return config.exclude_history


def seen_item_mask(
    inputs: EvalInputs, start: int, stop: int, shape: torch.Size, device: torch.device
) -> torch.Tensor:
    """Bool ``[B, n + 1]``: True at every item of each user's full history (one index_put, no loop).

    A mask rather than scores set to -inf: a target the model itself scores -inf must not tie with
    (and so rank below) the removed items.
    """
    offsets = inputs.seen_offsets[start : stop + 1]
    items = inputs.seen_items[offsets[0] : offsets[-1]]
    if len(items) and (items.min() < 1 or items.max() >= shape[1]):
        raise ValueError(f"history item ids must lie in 1..{shape[1] - 1}, got {int(items.min())}..{int(items.max())}")
    rows = torch.repeat_interleave(torch.arange(stop - start), offsets.diff())
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    mask.index_put_((rows.to(device), items.to(device)), torch.tensor(True, device=device))
    return mask


def _check_negatives(inputs: EvalInputs) -> None:
    negatives = inputs.negatives
    if negatives is None:
        raise ValueError("sampled protocol needs negatives, but this split has none (build it with sampled negatives)")
    if negatives.ndim != 2 or negatives.shape[0] != len(inputs) or negatives.shape[1] < 1:
        raise ValueError(f"negatives must have shape [{len(inputs)}, k >= 1], got {tuple(negatives.shape)}")
    if negatives.min() < 1:
        raise ValueError(f"negative item ids must be >= 1 (0 is padding), got {int(negatives.min())}")
    clashes = (negatives == inputs.targets.unsqueeze(1)).any(dim=1)
    if clashes.any():
        raise ValueError(f"negatives contain the target item for {int(clashes.sum())} users")
