"""Trivial baselines every table needs beside the trained models: nothing to train, only counts.

* ``pop``: every user gets the items ordered by training popularity (interactions in the train
  parts, ``sequence[:-2]``, so neither validation nor test targets are counted).
* ``repeat-pop``: the user's own past items first (most often consumed first), then the rest by
  popularity. ``model.repeat_history`` says which past: ``all`` (default) counts the user's whole
  history, the strongest form of the heuristic; ``window`` only the last ``max_len`` items a model
  sees. On repeat-consumption data (groceries, music) this is the baseline to beat; on MovieLens it
  equals ``pop`` once seen items are excluded.

Both score through the same ``predict_scores`` interface as the backbones, so a run trains them
for zero steps and evaluates them exactly like any model. The counts are a buffer of the module,
saved in the checkpoint like weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Popularity(nn.Module):
    """Scores every item by its training popularity, whatever the history."""

    reads_full_history = False  # the evaluation passes the model's max_len window

    def __init__(self, popularity: np.ndarray, max_len: int):
        super().__init__()
        self.num_items = len(popularity) - 1
        self.max_len = max_len
        counts = torch.as_tensor(np.asarray(popularity), dtype=torch.float32).clone()
        counts[0] = 0.0  # padding
        self.register_buffer("popularity", counts)

    def predict_scores(self, histories: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` (column 0 = padding)."""
        return self.popularity.expand(len(histories), -1).clone()


class RepeatPopularity(Popularity):
    """The user's own past items first (by how often they occur in the history), then popularity.
    ``whole_history``: the evaluation passes each user's whole history instead of the model's window."""

    def __init__(self, popularity: np.ndarray, max_len: int, whole_history: bool = True):
        super().__init__(popularity, max_len)
        self.reads_full_history = whole_history

    def predict_scores(self, histories: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(len(histories), self.num_items + 1, device=histories.device)
        counts.scatter_add_(1, histories, torch.ones_like(histories, dtype=counts.dtype))
        counts[:, 0] = 0.0  # padding positions
        # any past item outranks every unseen one: one occurrence outweighs the largest popularity
        return counts * (self.popularity.max() + 1) + self.popularity


BASELINES: dict[str, type[Popularity]] = {"pop": Popularity, "repeat-pop": RepeatPopularity}
