"""A repeat-aware head for every backbone (``model.repeat_head``): a repeat / explore mixture as in
RepeatNet (Ren et al., AAAI 2019).

Next-item models trained with a softmax over the catalogue underweight re-consumption: on a
retail log, "the user's own past items by count" (``repeat-pop``) beats them. The head gives every
position two ways to pick the next item and learns how to mix them:

* **explore**: the backbone's own softmax over the whole catalogue, ``p_e = softmax(h . e_j)``;
* **repeat**: a softmax over the items of the user's history up to that position only, scored from
  how often each occurred (``log(1 + count)``, its share of the history), how recently
  (``log(1 + steps since its last occurrence)``) and the backbone's score of it;
* a **gate** per user and step, ``g = sigmoid(w . [h, repeat share of the history so far,
  log(1 + history length)])``: ``p = g p_r + (1 - g) p_e``. The gate reads ``h`` (the first item
  table's part, with ``dual`` items) without sending gradients into it.

Training minimises ``-log p(target)`` (the full-catalogue softmax stays inside ``p_e``); scores are
``log p``. A target that is not in the history has ``p_r = 0``, so its gradient reaches the backbone
exactly as the plain cross-entropy's would: on data without repeats the backbone trains as without
the head, and the gate learns to close. With the gate closed (``g = 0``) the scores are the plain
backbone's log-softmax, so items rank exactly as without the head.

Causality: at training position ``i`` the features come from ``prefix[:, : i + 1]`` and the items
before the window only, where the backbone says what the history of position ``i`` is
(:meth:`SequentialRecommender.repeat_prefix`): the inputs up to ``i`` for next-item models, the items
before ``i`` for BERT4Rec's cloze targets.

The whole history (``model.repeat_context``): the backbone sees the last ``max_len`` items, but a
shopper's staples may last appear long before them. The training batches carry each window's earlier
items (:meth:`dmesr.data.batches.TrainWindows.earlier`) and the evaluation the user's whole history, so
counts, recency and the gate's history length run over everything before the target, and up to
``repeat_context`` distinct earlier items (the most often consumed) are candidates beside the window's
own. Memory stays bounded by ``[B, n + 1]`` per-item counts and ``[B, L, L + repeat_context]`` features.

The head's few hundred weights may learn faster than the backbone (``train.repeat_head_lr``): with one
window per user an epoch is a handful of steps, and at ``train.lr`` they barely leave their start before
the backbone stops improving on validation.

The explore term needs each row's log-normaliser with gradients, so the logits are built densely,
in blocks of rows recomputed in the backward pass (activation checkpointing) when one block would
exceed ``BLOCK_ELEMENTS``: memory stays bounded, each step costs one extra logits product then.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

NUM_ITEM_FEATURES = 3  # log(1 + count), log(1 + recency), count / history length
NUM_GATE_FEATURES = 2  # repeat share of the history so far, log(1 + history length)
SCORE_HIDDEN = 16
BLOCK_ELEMENTS = 2**25  # logits per block of rows in the training loss (128 MB in float32)
# log-probabilities stand-in for "impossible" in the training path: -inf would give NaN gradients
IMPOSSIBLE = -1e4


class HistoryFeatures(NamedTuple):
    """The repeat candidates of every position over ``S`` slots (:func:`history_features`)."""

    slots: torch.Tensor  # [B, S] the item of each slot: the prefix's L, then the earlier items kept
    features: torch.Tensor  # [B, L, S, 3]
    candidate: torch.Tensor  # [B, L, S] bool
    gate_features: torch.Tensor  # [B, L, 2]


def history_features(prefix: torch.Tensor, earlier: torch.Tensor | None = None, num_items: int = 0,
                     context: int = 0, last: int = 0, gate_only: bool = False) -> HistoryFeatures:
    """``prefix [B, L]`` (0 = padding) and the items before it, ``earlier [B, H]`` (left-padded, may be
    empty) -> the repeat candidates of every position ``i`` (:class:`HistoryFeatures`): the prefix's
    slots ``k`` and up to ``context`` distinct items of ``earlier`` (the most often consumed, then the
    most recent; ``num_items`` bounds the ids). Features count over ``earlier`` and ``prefix[: i + 1]``:

    * ``features [B, L(i), S, 3]``: the item's count (log and share of the history) and log(1 + steps
      since its last occurrence), for the ``S = L + C`` slots;
    * ``candidate [B, L(i), S]`` bool: a real item seen by ``i``, each item in one slot only (a prefix
      slot at its last occurrence up to ``i``, else its ``earlier`` slot);
    * ``gate_features [B, L(i), 2]``: the repeat share of the history so far and log(1 + its length).

    Strictly causal: nothing after position ``i`` of ``prefix`` enters position ``i``. ``earlier`` sits
    right before the prefix's first real slot. ``last``: only the last positions ``i`` (0: all), as
    inference needs the last one only. ``gate_only``: the gate's inputs alone (what a batch whose targets
    are all new to their histories needs): ``features`` is empty and ``candidate [B, L, 1]`` says whether
    position ``i`` has any candidate at all."""
    length = prefix.shape[1]
    real = prefix > 0
    same = (prefix[:, :, None] == prefix[:, None, :]) & real[:, :, None] & real[:, None, :]
    running = same.cumsum(dim=2)  # [B, k, i]: occurrences of prefix[k]'s item at positions <= i
    count = running.transpose(1, 2)  # [B, i, k]
    own = running.diagonal(dim1=1, dim2=2)  # [B, k]: occurrences up to k itself
    steps = torch.arange(length, device=prefix.device)
    up_to = steps[None, :] <= steps[:, None]  # [i, k]
    candidate = up_to & (count == own[:, None, :]) & real[:, None, :]
    history_length = real.cumsum(dim=1)  # [B, i]
    distinct = candidate.sum(dim=-1)
    recency = (steps[:, None] - steps[None, :]).clamp(min=0).to(torch.float32)
    count = count.to(torch.float32)
    positions = steps[-last:] if last else steps
    if last:
        count, candidate, recency = count[:, -last:], candidate[:, -last:], recency[-last:]
        history_length, distinct = history_length[:, -last:], distinct[:, -last:]
    slots = prefix
    if earlier is not None and earlier.shape[1] and context > 0:
        earlier_counts, earlier_last = _item_counts(earlier, num_items)  # [B, n + 1] each
        earlier_length = (earlier > 0).sum(dim=1, keepdim=True)
        in_earlier = earlier_counts.gather(1, prefix) > 0  # [B, k]
        # earlier items the prefix repeats leave their earlier slot: the prefix slot counts them
        distinct = distinct + (earlier_counts > 0).sum(dim=1, keepdim=True) - (candidate & in_earlier[:, None]).sum(-1)
        history_length = history_length + earlier_length
        if not gate_only:
            count = count + earlier_counts.gather(1, prefix)[:, None, :].to(torch.float32)
            items, item_count, item_time = _earlier_slots(earlier_counts, earlier_last, context,
                                                          first_real=length - real.sum(dim=1, keepdim=True))
            first_in_prefix = torch.full_like(earlier_counts, length).scatter_reduce_(
                1, prefix, steps.expand_as(prefix), reduce="amin").gather(1, items)  # [B, C]
            earlier_candidate = (items > 0)[:, None, :] & (first_in_prefix[:, None, :] > positions[None, :, None])
            candidate = torch.cat([candidate, earlier_candidate], dim=2)
            count = torch.cat([count, item_count[:, None, :].expand(-1, len(positions), -1).to(torch.float32)],
                              dim=2)
            earlier_recency = (positions[None, :, None] - item_time[:, None, :]).clamp(min=0).to(torch.float32)
            recency = torch.cat([recency.expand(len(prefix), -1, -1), earlier_recency], dim=2)
            slots = torch.cat([prefix, items], dim=1)
    seen = history_length.clamp(min=1).to(torch.float32)
    repeat_share = (history_length - distinct) / seen  # 0 on padding
    gate_features = torch.stack([repeat_share, seen.log1p()], dim=-1)
    if gate_only:  # any earlier item makes a candidate: itself, or its prefix slot once the prefix repeats it
        return HistoryFeatures(slots, count.new_zeros(0), (history_length > 0)[:, :, None], gate_features)
    features = torch.stack([count.log1p(), recency.log1p().expand_as(count), count / seen[:, :, None]], dim=-1)
    return HistoryFeatures(slots, features, candidate, gate_features)


def _item_counts(earlier: torch.Tensor, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``earlier [B, H]`` -> per item ``[B, num_items + 1]``: its count and the position of its last
    occurrence (-1: none); column 0, padding, counts nothing."""
    counts = torch.zeros(len(earlier), num_items + 1, dtype=torch.int64, device=earlier.device)
    counts.scatter_add_(1, earlier, torch.ones_like(earlier))
    counts[:, 0] = 0
    positions = torch.arange(earlier.shape[1], device=earlier.device).expand_as(earlier)
    last = torch.full_like(counts, -1).scatter_reduce_(1, earlier, positions, reduce="amax")
    return counts, last - earlier.shape[1]  # last occurrence counted back from the prefix: -1 = just before


def _earlier_slots(counts: torch.Tensor, last: torch.Tensor, context: int, first_real: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``context`` distinct earlier items per row, the most often consumed first, then the most
    recent -> items ``[B, C]`` (0 = none), their counts and the prefix position of their last
    occurrence (negative: before the prefix's first real slot ``first_real [B, 1]``)."""
    distinct = int((counts > 0).sum(dim=1).max())
    order = counts * (last.shape[1] + counts.shape[1]) + last  # count first; last >= -H breaks ties
    kept = order.masked_fill(counts == 0, -1).topk(min(context, distinct), dim=1).indices
    item_count = counts.gather(1, kept)
    items = kept * (item_count > 0)
    return items, item_count, first_real + last.gather(1, kept)


class RepeatHead(nn.Module):
    """The repeat scores and the gate over hidden states of width ``width`` (:mod:`dmesr.models.repeats`);
    ``context``: how many distinct items from before the prefix it also scores (0: the prefix only)."""

    def __init__(self, width: int, context: int = 0):
        super().__init__()
        self.width = width
        self.context = context
        self.score = nn.Sequential(nn.Linear(NUM_ITEM_FEATURES, SCORE_HIDDEN), nn.ReLU(), nn.Linear(SCORE_HIDDEN, 1))
        self.item_weight = nn.Parameter(torch.zeros(()))  # how much the backbone's score of a history item counts
        self.gate = nn.Linear(width + NUM_GATE_FEATURES, 1)

    def mixture(self, hidden: torch.Tensor, table: torch.Tensor, prefix: torch.Tensor,
                earlier: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hidden states ``[B, P, D]`` of the last ``P`` positions of ``prefix [B, L]`` (``earlier [B, H]``:
        the items before it) -> ``log g [B, P]``, ``log(1 - g) [B, P]``, repeat log-probabilities
        ``[B, P, S]`` over the candidate slots (``IMPOSSIBLE`` where not a candidate), the candidate mask
        ``[B, P, S]`` and the slots' items ``[B, S]``. ``log g`` is ``IMPOSSIBLE`` (and ``log(1 - g)`` 0)
        where the history is empty."""
        slots, features, candidate, gate_features = history_features(prefix, earlier, table.shape[0] - 1,
                                                                     self.context, last=hidden.shape[1])
        item_scores = hidden @ F.embedding(slots, table).transpose(1, 2)  # [B, P, S]
        repeat_logits = self.score(features).squeeze(-1) + self.item_weight * item_scores
        repeat_log_probs = repeat_logits.masked_fill(~candidate, IMPOSSIBLE).log_softmax(dim=-1)
        repeat_log_probs = repeat_log_probs.masked_fill(~candidate, IMPOSSIBLE)
        log_gate, log_explore = self._gate(hidden, gate_features, candidate.any(dim=-1))
        return log_gate, log_explore, repeat_log_probs, candidate, slots

    def _gate(self, hidden: torch.Tensor, gate_features: torch.Tensor, has_history: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log g`` and ``log(1 - g)`` ``[B, P]``: ``IMPOSSIBLE`` and 0 where the history is empty."""
        # the gate reads the hidden state without training it: the backbone learns only from its own softmax
        # and the repeat scores, so on data without repeats it trains exactly as without the head
        state = hidden[..., : self.width].detach()
        gate_logits = self.gate(torch.cat([state, gate_features], dim=-1)).squeeze(-1)
        log_gate = torch.where(has_history, F.logsigmoid(gate_logits), IMPOSSIBLE)
        log_explore = torch.where(has_history, F.logsigmoid(-gate_logits), 0.0)
        return log_gate, log_explore

    def scores(self, scores: torch.Tensor, hidden: torch.Tensor, table: torch.Tensor, histories: torch.Tensor,
               earlier: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's next-item ``scores [B, n + 1]`` and last hidden states ``[B, D]`` after
        ``histories [B, L]`` (``earlier``: the items before them) -> ``log p [B, n + 1]`` of the mixture
        (column 0, padding, is -inf)."""
        log_gate, log_explore, repeat_log_probs, candidate, slots = self.mixture(hidden[:, None], table, histories,
                                                                                 earlier)
        log_gate, log_explore, repeat_log_probs, candidate = (
            part[:, 0] for part in (log_gate, log_explore, repeat_log_probs, candidate))
        explore = F.pad(scores[:, 1:].log_softmax(dim=-1), (1, 0), value=-torch.inf)
        repeat = torch.full_like(scores, -torch.inf).scatter_(
            1, slots.masked_fill(~candidate, 0), repeat_log_probs.masked_fill(~candidate, -torch.inf))
        log_gate = log_gate.masked_fill(log_gate <= IMPOSSIBLE, -torch.inf)
        return torch.logaddexp(log_gate[:, None] + repeat, log_explore[:, None] + explore)

    def loss(self, hidden: torch.Tensor, table: torch.Tensor, prefix: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None, earlier: torch.Tensor | None = None) -> torch.Tensor:
        """Mean ``-log p(target)`` over positions: ``hidden [B, L, D]``, ``prefix`` and ``targets [B, L]``
        (0 = no target), ``earlier [B, H]`` the items before the prefix. ``weights [B, L]`` (0/1): every
        position kept, those weighted 0 left out of the mean (fixed shapes for a compiled step); without,
        only the positions with a target are scored."""
        rows = (slice(None),) if weights is not None else (targets > 0,)
        if self._repeats_a_target(prefix, targets, earlier, table.shape[0] - 1):
            log_gate, log_explore, repeat_log_probs, candidate, slots = self.mixture(hidden, table, prefix, earlier)
            is_target = candidate & (slots[:, None, :] == targets[:, :, None])
            repeat = torch.where(is_target.any(dim=-1), (repeat_log_probs * is_target).sum(dim=-1), IMPOSSIBLE)
        else:  # every target is new to its history: p_r(target) = 0, the gate is all the head adds
            gate_inputs = history_features(prefix, earlier, table.shape[0] - 1, self.context, gate_only=True)
            log_gate, log_explore = self._gate(hidden, gate_inputs.gate_features, gate_inputs.candidate[..., 0])
            # the scores' weights get the zero gradients the full mixture gives them, so an optimiser (and its
            # weight decay) treats them alike whichever path a batch takes
            unused = sum(parameter.sum() for parameter in (self.item_weight, *self.score.parameters()))
            repeat = torch.full_like(log_gate, IMPOSSIBLE) + 0.0 * unused
        flat = [part[rows].flatten() for part in (log_gate, log_explore, repeat, targets)]
        explore = -_cross_entropy_rows(hidden[rows].reshape(-1, hidden.shape[-1]), table, flat[3])
        log_p = torch.logaddexp(flat[0] + flat[2], flat[1] + explore)
        if weights is None:
            return -log_p.mean()
        weights = weights.flatten()
        return -(log_p * weights).sum() / weights.sum().clamp(min=1)

    def _repeats_a_target(self, prefix: torch.Tensor, targets: torch.Tensor, earlier: torch.Tensor | None,
                          num_items: int) -> bool:
        """Whether any position's target occurred in its history (``prefix[: i + 1]`` or ``earlier``): only then
        can it be a repeat candidate. A superset of the candidates' targets, so the shortcut is exact."""
        steps = torch.arange(prefix.shape[1], device=prefix.device)
        seen = (targets[:, :, None] == prefix[:, None, :]) & (prefix > 0)[:, None, :] & (steps[None, :] <= steps[:, None])
        if seen.any():
            return True
        if earlier is None or not earlier.shape[1] or self.context == 0:
            return False
        consumed = torch.zeros(len(earlier), num_items + 1, dtype=torch.bool, device=earlier.device)
        consumed.scatter_(1, earlier, True)
        consumed[:, 0] = False
        return bool(consumed.gather(1, targets).any())


def _cross_entropy_rows(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[N]`` softmax cross-entropy of ``hidden [N, D] @ table[1:].T`` with ``targets`` in 1..n (0: any
    value), in blocks of rows recomputed in the backward pass when the logits would be large."""
    rows = max(1, BLOCK_ELEMENTS // table.shape[0])
    if len(hidden) <= rows:
        return _block_cross_entropy(hidden, table, targets)
    return torch.cat([checkpoint(_block_cross_entropy, hidden[start : start + rows], table,
                                 targets[start : start + rows], use_reentrant=False)
                      for start in range(0, len(hidden), rows)])


def _block_cross_entropy(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(hidden @ table[1:].T, (targets - 1).clamp(min=0), reduction="none")
