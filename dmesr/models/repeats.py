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

Causality: at training position ``i`` the features come from ``prefix[:, : i + 1]`` only, where the
backbone says what the history of position ``i`` is (:meth:`SequentialRecommender.repeat_prefix`):
the inputs up to ``i`` for next-item models, the items before ``i`` for BERT4Rec's cloze targets.

The explore term needs each row's log-normaliser with gradients, so the logits are built densely,
in blocks of rows recomputed in the backward pass (activation checkpointing) when one block would
exceed ``BLOCK_ELEMENTS``: memory stays bounded, each step costs one extra logits product then.
"""

from __future__ import annotations

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


def history_features(prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``prefix [B, L]`` (0 = padding) -> for every position ``i`` and history position ``k``:

    * ``features [B, L(i), L(k), 3]``: the count of ``prefix[k]``'s item in ``prefix[: i + 1]`` (log and
      share of the history) and the steps since position ``k``;
    * ``candidate [B, L(i), L(k)]`` bool: ``k <= i`` holds a real item and is its last occurrence up to
      ``i`` (each history item is a candidate once);
    * ``gate_features [B, L(i), 2]``: the repeat share of ``prefix[: i + 1]`` and log(1 + its length).
    """
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
    seen = history_length.clamp(min=1).to(torch.float32)
    count = count.to(torch.float32)
    recency = (steps[:, None] - steps[None, :]).clamp(min=0).to(torch.float32).log1p()
    features = torch.stack([count.log1p(), recency.expand_as(count), count / seen[:, :, None]], dim=-1)
    repeat_share = (history_length - candidate.sum(dim=-1)) / seen  # 0 on padding
    gate_features = torch.stack([repeat_share, seen.log1p()], dim=-1)
    return features, candidate, gate_features


class RepeatHead(nn.Module):
    """The repeat scores and the gate over hidden states of width ``width`` (:mod:`dmesr.models.repeats`)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.score = nn.Sequential(nn.Linear(NUM_ITEM_FEATURES, SCORE_HIDDEN), nn.ReLU(), nn.Linear(SCORE_HIDDEN, 1))
        self.item_weight = nn.Parameter(torch.zeros(()))  # how much the backbone's score of a history item counts
        self.gate = nn.Linear(width + NUM_GATE_FEATURES, 1)

    def mixture(self, hidden: torch.Tensor, table: torch.Tensor, prefix: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hidden states ``[B, P, D]`` of the last ``P`` positions of ``prefix [B, L]`` ->
        ``log g [B, P]``, ``log(1 - g) [B, P]``, repeat log-probabilities ``[B, P, L]`` over the history
        positions (``IMPOSSIBLE`` where not a candidate) and the candidate mask ``[B, P, L]``.
        ``log g`` is ``IMPOSSIBLE`` (and ``log(1 - g)`` 0) where the history is empty."""
        features, candidate, gate_features = (part[:, -hidden.shape[1]:] for part in history_features(prefix))
        item_scores = hidden @ F.embedding(prefix, table).transpose(1, 2)  # [B, P, L]
        repeat_logits = self.score(features).squeeze(-1) + self.item_weight * item_scores
        repeat_log_probs = repeat_logits.masked_fill(~candidate, IMPOSSIBLE).log_softmax(dim=-1)
        repeat_log_probs = repeat_log_probs.masked_fill(~candidate, IMPOSSIBLE)
        # the gate reads the hidden state without training it: the backbone learns only from its own softmax
        # and the repeat scores, so on data without repeats it trains exactly as without the head
        state = hidden[..., : self.width].detach()
        gate_logits = self.gate(torch.cat([state, gate_features], dim=-1)).squeeze(-1)
        has_history = candidate.any(dim=-1)
        log_gate = torch.where(has_history, F.logsigmoid(gate_logits), IMPOSSIBLE)
        log_explore = torch.where(has_history, F.logsigmoid(-gate_logits), 0.0)
        return log_gate, log_explore, repeat_log_probs, candidate

    def scores(self, scores: torch.Tensor, hidden: torch.Tensor, table: torch.Tensor, histories: torch.Tensor
               ) -> torch.Tensor:
        """The backbone's next-item ``scores [B, n + 1]`` and last hidden states ``[B, D]`` -> ``log p``
        ``[B, n + 1]`` of the mixture (column 0, padding, is -inf)."""
        log_gate, log_explore, repeat_log_probs, candidate = (
            part[:, 0] for part in self.mixture(hidden[:, None], table, histories))
        explore = F.pad(scores[:, 1:].log_softmax(dim=-1), (1, 0), value=-torch.inf)
        repeat = torch.full_like(scores, -torch.inf).scatter_(
            1, histories.masked_fill(~candidate, 0), repeat_log_probs.masked_fill(~candidate, -torch.inf))
        log_gate = log_gate.masked_fill(log_gate <= IMPOSSIBLE, -torch.inf)
        return torch.logaddexp(log_gate[:, None] + repeat, log_explore[:, None] + explore)

    def loss(self, hidden: torch.Tensor, table: torch.Tensor, prefix: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean ``-log p(target)`` over positions: ``hidden [B, L, D]``, ``prefix`` and ``targets [B, L]``
        (0 = no target). ``weights [B, L]`` (0/1): every position kept, those weighted 0 left out of the mean
        (fixed shapes for a compiled step); without, only the positions with a target are scored."""
        log_gate, log_explore, repeat_log_probs, candidate = self.mixture(hidden, table, prefix)
        is_target = candidate & (prefix[:, None, :] == targets[:, :, None])
        repeat = torch.where(is_target.any(dim=-1), (repeat_log_probs * is_target).sum(dim=-1), IMPOSSIBLE)
        rows = (slice(None),) if weights is not None else (targets > 0,)
        flat = [part[rows].flatten() for part in (log_gate, log_explore, repeat, targets)]
        explore = -_cross_entropy_rows(hidden[rows].reshape(-1, hidden.shape[-1]), table, flat[3])
        log_p = torch.logaddexp(flat[0] + flat[2], flat[1] + explore)
        if weights is None:
            return -log_p.mean()
        weights = weights.flatten()
        return -(log_p * weights).sum() / weights.sum().clamp(min=1)


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
