"""The one interface every sequential backbone implements, and the pluggable item side.

Conventions shared by data, models and evaluation:

* internal item ids run 1..num_items; 0 is padding;
* sequences are left-padded to a fixed length, so the most recent item sits at the last
  position (index -1) of every row;
* an :class:`ItemRepresentation` owns the item vectors. Backbones never hold their own item
  embedding table: they ask ``items.tables()`` for the vectors, embed the input sequence with
  them and score with the same vectors on the output side. DMESR swaps in its own item encoder
  without touching the backbones.

A representation may return several tables (LLM-ESR-style ``dual`` integration): the backbone
then runs once per table with shared weights, and hidden states and tables are concatenated, so
``score = sum_v <h_v, e_v>``.

``model.repeat_head`` adds a repeat / explore mixture over the user's own history on top of any
backbone (:mod:`dmesr.models.repeats`): subclasses only say which items form each training
position's history (:meth:`SequentialRecommender.repeat_prefix`, :meth:`~SequentialRecommender.repeat_earlier`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import ModelConfig
from dmesr.models.repeats import RepeatHead


class ItemRepresentation(nn.Module):
    """Maps every item id (row 0 = padding) to a vector of width ``dim``."""

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.num_items = num_items
        self.dim = dim

    def tables(self) -> list[torch.Tensor]:
        """One or more ``[num_items + 1, dim]`` tables, recomputed on every call (they may be trained)."""
        raise NotImplementedError

    auxiliary_weight = 0.0  # the weight of auxiliary_loss in the training loss (DMESR: lambda)

    def auxiliary_loss(self, item_ids: torch.Tensor) -> torch.Tensor | None:
        """An extra training loss over the batch's items, ``item_ids`` (any shape, 0 = padding), unweighted
        (DMESR: L_align); the training
        loss adds ``auxiliary_weight`` times it (:func:`dmesr.models.losses.total_loss`)."""
        return None


class IDEmbedding(ItemRepresentation):
    """The plain backbone: one trainable vector per item id."""

    def __init__(self, num_items: int, dim: int):
        super().__init__(num_items, dim)
        self.embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.02)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def tables(self) -> list[torch.Tensor]:
        return [self.embedding.weight]


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement :meth:`encode`; BERT4Rec also overrides the batch logic."""

    def __init__(self, config: ModelConfig, items: ItemRepresentation, max_len: int):
        super().__init__()
        self.config = config
        self.items = items
        self.max_len = max_len
        self.num_items = items.num_items
        self.repeat_head = None
        if config.repeat_head:  # drawn from a forked generator: the backbone's weights are the same without it
            with torch.random.fork_rng(devices=[]):
                self.repeat_head = RepeatHead(items.dim, config.repeat_context)

    @property
    def reads_full_history(self) -> bool:
        """Whether the evaluation passes each user's whole history (the repeat head's ``model.repeat_context``)
        instead of the ``max_len`` window; the backbone still reads the window."""
        return self.repeat_head is not None and self.repeat_head.context > 0

    def encode(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``seqs [B, L]`` (0 = padding) embedded with ``table`` -> hidden states ``[B, L, d]``."""
        raise NotImplementedError

    def hidden_and_table(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states ``[B, L, d*V]`` and the matching item table ``[num_items + 1, d*V]``."""
        tables = self.items.tables()
        hidden = torch.cat([self.encode(seqs, table) for table in tables], dim=-1)
        return hidden, torch.cat(tables, dim=-1)

    def training_inputs(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training windows ``[B, L+1]`` -> (inputs ``[B, L]``, targets ``[B, L]``, 0 = no loss).

        Default: next-item prediction at every position (SASRec, GRU4Rec). A window's first item
        has only padding before it, so it is not a target.
        """
        inputs = windows[:, :-1]
        return inputs, windows[:, 1:] * (inputs > 0)

    def repeat_prefix(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` items whose first ``i + 1`` make the history of training position ``i`` (the repeat
        head's features). Next-item prediction: the inputs up to and including ``i``."""
        return inputs

    def repeat_earlier(self, windows: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """The items before :meth:`repeat_prefix`'s first slot, from the training windows ``[B, L + 1]``
        and the items before them ``earlier [B, H]``. Next-item prediction: ``earlier`` itself."""
        return earlier

    def inference_inputs(self, histories: torch.Tensor) -> torch.Tensor:
        """Histories ``[B, L]`` -> the input whose last position predicts the next item."""
        return histories

    def predict_scores(self, histories: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` for the item following each history (column 0 = padding);
        with the repeat head, the log-probabilities of its mixture."""
        earlier = None
        if self.reads_full_history:  # the whole history: the backbone reads its last max_len items
            histories = F.pad(histories, (max(0, self.max_len - histories.shape[1]), 0))
            histories, earlier = histories[:, -self.max_len :], histories[:, : -self.max_len]
        hidden, table = self.hidden_and_table(self.inference_inputs(histories))
        scores = hidden[:, -1, :] @ table.T
        if self.repeat_head is None:
            return scores
        return self.repeat_head.scores(scores, hidden[:, -1, :], table, histories, earlier)
