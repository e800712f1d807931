"""Recommendation losses over hidden states and an item table, and the one training-step loss.

``train.loss`` picks one by its name in the registry :data:`dmesr.config.LOSSES`:

* ``ce``: full softmax over all items (padding column 0 excluded). The strongest choice in
  "Turning Dross Into Gold Loss" (RecSys 2023). It is computed in tiles of logits that produce the
  gradients during the forward pass, so the ``positions x items`` logits never exist at once: less
  memory traffic on a CPU, where the loss is a large part of a SASRec step, and bounded memory on any
  device, whatever the catalogue (time grows linearly with it). Its plain form is
  :func:`dmesr.models.reference.next_item_loss` (timings of both: reports/dmesr-notes.md, "Fast paths").
* ``bce``: one positive against ``num_negatives`` uniform negatives per position, binary
  cross-entropy averaged over all those logits (the paper's sampled variant, which draws
  negatives per sequence rather than per batch).
* ``sampled_softmax``: softmax over the positive and the uniform negatives. Uniform sampling
  makes the logQ correction a constant, so none is applied.

Negatives are drawn once per call and shared by every position of the batch: one
``[N, d] x [d, k]`` product instead of gathering ``N x k`` vectors. A negative that equals a
position's positive is masked out of that position's loss.
"""

from __future__ import annotations

from importlib import import_module

import torch
import torch.nn.functional as F

from dmesr.config import LOSSES, TrainConfig
from dmesr.models.base import SequentialRecommender


class _ChunkedSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ items.T`` with class ``labels``; gradients made in forward.

    The logits are visited in tiles of ``rows x items``, each about ``TILE_BYTES``, so memory stays
    bounded and time grows linearly with the catalogue: a row block's log-normaliser is accumulated
    over its item blocks (online log-sum-exp), then a second sweep turns each tile into
    ``softmax`` gradients. When one item block spans the catalogue the first sweep's logits are
    reused. The ``- one_hot`` part of ``d loss / d logits`` is applied once, outside the tiles,
    as ``- items[labels]`` and ``- hidden`` scattered to the labels: no data-dependent indexing.
    ``weights`` (``None`` or 0/1 per row) leave rows out of the mean without removing them, so that a
    compiled step keeps one shape whatever the number of targets.
    """

    @staticmethod
    def forward(ctx, hidden, items, labels, weights):
        rows, columns = _tile_shape(len(labels), items.shape[0], hidden.device)
        want_hidden, want_items = ctx.needs_input_grad[:2]
        want_grad = want_hidden or want_items
        label_items = items[labels]
        if weights is not None:  # rows weighted 0 add nothing: scale them where they enter a sum
            label_items = label_items * weights[:, None]
        target_logits = (hidden * label_items).sum(dim=1)
        total = -target_logits.sum()
        grad_hidden = -label_items if want_hidden else None
        if want_items:
            weighted_hidden = hidden if weights is None else hidden * weights[:, None]
        grad_items = torch.zeros_like(items).index_add_(0, labels, weighted_hidden, alpha=-1) if want_items else None
        for start in range(0, len(labels), rows):
            chunk = hidden[start : start + rows]
            log_normalizer, logits = _log_normalizer(chunk, items, columns)
            chunk_weights = None if weights is None else weights[start : start + rows]
            total += log_normalizer.sum() if weights is None else (log_normalizer * chunk_weights).sum()
            if not want_grad:
                continue
            for column in range(0, items.shape[0], columns):
                block = items[column : column + columns]
                tile = logits if logits is not None else chunk @ block.T
                softmax = tile.sub_(log_normalizer[:, None]).exp_()
                if chunk_weights is not None:
                    softmax.mul_(chunk_weights[:, None])
                if want_hidden:
                    grad_hidden[start : start + rows].addmm_(softmax, block)
                if want_items:
                    grad_items[column : column + columns].addmm_(softmax.T, chunk)
        count = len(labels) if weights is None else weights.sum().clamp(min=1)
        ctx.save_for_backward(*(None if grad is None else grad / count for grad in (grad_hidden, grad_items)))
        return total / count

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_items = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_output * grad_hidden,
            None if grad_items is None else grad_output * grad_items,
            None,
            None,
        )


# A tile of ~4 MB of logits stays in a CPU cache; a GPU prefers few, large kernels.
TILE_BYTES = {"cpu": 2**22, "other": 2**28}
# Whole item rows down to FULL_WIDTH_MIN_ROWS per tile (one sweep); below that, tiles of TILE_ROWS
# rows: fewer rows and the item gradient is re-read for too little work.
FULL_WIDTH_MIN_ROWS, TILE_ROWS = 64, 256


def _tile_shape(num_rows: int, num_items: int, device: torch.device) -> tuple[int, int]:
    """Rows and items per logits tile: whole item rows when enough rows fit, else square-ish tiles."""
    elements = TILE_BYTES["cpu" if device.type == "cpu" else "other"] // 4
    rows = min(num_rows, max(1, elements // num_items))
    if rows >= min(num_rows, FULL_WIDTH_MIN_ROWS):
        return rows, num_items
    rows = min(num_rows, TILE_ROWS)
    return rows, max(1, elements // rows)


def _log_normalizer(chunk: torch.Tensor, items: torch.Tensor, columns: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logsumexp(chunk @ items.T)`` per row, over item blocks of ``columns``; also the logits if one block."""
    if columns >= items.shape[0]:
        logits = chunk @ items.T
        return torch.logsumexp(logits, dim=1), logits
    log_normalizer = None
    for column in range(0, items.shape[0], columns):
        block_normalizer = torch.logsumexp(chunk @ items[column : column + columns].T, dim=1)
        log_normalizer = block_normalizer if log_normalizer is None else torch.logaddexp(log_normalizer, block_normalizer)
    return log_normalizer, None


def full_cross_entropy(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """``hidden [N, d]``, ``table [n + 1, d]``, ``targets [N]`` in 1..n -> mean softmax cross-entropy.
    ``weights [N]`` (0 or 1): the mean over the rows weighted 1; a row weighted 0 may have target 0."""
    labels = targets - 1 if weights is None else (targets - 1).clamp(min=0)
    return _ChunkedSoftmaxCrossEntropy.apply(hidden, table[1:], labels, weights)


def _sampled_logits(
    hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, num_negatives: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive logits ``[N]``, logits ``[N, k]`` of ``k`` shared uniform negatives from 1..n, and
    ``[N, k]``: is that negative the row's positive?"""
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
    num_items = table.shape[0] - 1
    device = table.device if generator is None else generator.device
    negatives = torch.randint(1, num_items + 1, (num_negatives,), generator=generator, device=device)
    negatives = negatives.to(table.device)
    positive_logits = (hidden * table[targets]).sum(dim=-1)
    return positive_logits, hidden @ table[negatives].T, targets.unsqueeze(1) == negatives.unsqueeze(0)


def bce_sampled(
    hidden: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    num_negatives: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of each positive (label 1) and ``num_negatives`` uniform negatives (label 0)."""
    positive_logits, negative_logits, collides = _sampled_logits(hidden, table, targets, num_negatives, generator)
    # -log sigmoid(s) = softplus(-s) for positives; -log(1 - sigmoid(s)) = softplus(s) for negatives.
    negative_terms = F.softplus(negative_logits).masked_fill(collides, 0.0)
    total = F.softplus(-positive_logits).sum() + negative_terms.sum()
    return total / (targets.numel() + (~collides).sum())


def sampled_softmax(
    hidden: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    num_negatives: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cross-entropy of the positive against itself plus ``num_negatives`` uniform negatives."""
    positive_logits, negative_logits, collides = _sampled_logits(hidden, table, targets, num_negatives, generator)
    logits = torch.cat([positive_logits.unsqueeze(1), negative_logits.masked_fill(collides, float("-inf"))], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()




def loss_terms(model: SequentialRecommender, windows: torch.Tensor, train_config: TrainConfig,
               trained: torch.Tensor | None = None, earlier: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of one batch of training windows ``[B, L + 1]``: ``rec`` (L_rec, the next-item loss)
    and, when the item side has one, ``align`` (its auxiliary loss, unweighted: DMESR's L_align).
    ``trained [B]``: each window's targets counted from its end that enter the loss (``train.window_stride``).
    ``earlier [B, H]``: the items before each window (:meth:`dmesr.data.batches.TrainWindows.earlier`), read
    by a repeat head over the whole history (``model.repeat_context``)."""
    spec = LOSSES.get(train_config.loss)
    if spec is None:
        raise ValueError(f"unknown loss {train_config.loss!r}; known: {', '.join(LOSSES)}")
    inputs, targets = model.training_inputs(windows)
    if trained is not None:
        positions = torch.arange(targets.shape[1], device=targets.device)
        targets = targets * (positions >= targets.shape[1] - trained.unsqueeze(1))
    hidden, table = model.hidden_and_table(inputs)
    has_target = targets > 0
    if model.repeat_head is not None:  # the repeat / explore mixture's -log p (train.loss is ce, checked)
        weights = has_target.to(hidden.dtype) if torch.compiler.is_compiling() else None
        if weights is None and not has_target.any():
            raise ValueError("training batch has no target item: every window is empty or a single item")
        earlier = model.repeat_earlier(windows, earlier) if earlier is not None and model.reads_full_history \
            else None
        return _with_auxiliary(model, windows, model.repeat_head.loss(
            hidden, table, model.repeat_prefix(inputs, targets), targets, weights, earlier))
    if train_config.loss == "ce" and torch.compiler.is_compiling():
        # fixed shapes for a compiled graph (train.compile): every position, those without a target
        # weighted 0, instead of selecting the positions with one (a shape only the data decides)
        return _with_auxiliary(model, windows, full_cross_entropy(
            hidden.flatten(0, -2), table, targets.flatten(), has_target.flatten().to(hidden.dtype)))
    hidden, targets = hidden[has_target], targets[has_target]
    if targets.numel() == 0:
        raise ValueError("training batch has no target item: every window is empty or a single item")
    loss_function = getattr(import_module(spec.module), spec.function)  # the registry dmesr.config.LOSSES
    negatives = (train_config.num_negatives,) if spec.samples_negatives else ()
    return _with_auxiliary(model, windows, loss_function(hidden, table, targets, *negatives))


def _with_auxiliary(model: SequentialRecommender, windows: torch.Tensor, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    auxiliary = model.items.auxiliary_loss(windows)
    return {"rec": loss} if auxiliary is None else {"rec": loss, "align": auxiliary}


def total_loss(model: SequentialRecommender, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """L = L_rec + lambda * L_align, lambda being the item side's ``auxiliary_weight``."""
    return terms["rec"] + model.items.auxiliary_weight * terms["align"] if "align" in terms else terms["rec"]


def sequence_loss(model: SequentialRecommender, windows: torch.Tensor, train_config: TrainConfig) -> torch.Tensor:
    """The training loss of one batch of windows (:func:`loss_terms`, weighted by :func:`total_loss`)."""
    return total_loss(model, loss_terms(model, windows, train_config))
