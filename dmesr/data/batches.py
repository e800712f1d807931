"""Tensors the models consume: left-padded training windows and evaluation inputs.

Training uses each user's train part (``sequence[:-2]``), cut to its last ``max_len + 1``
items (``train.all_windows=true``: windows over the whole part); the model turns a window into
inputs and targets; :meth:`TrainWindows.earlier` gives the items before a batch's windows (the repeat
head's whole history). Evaluation uses, per user, the history before the target (truncated to
``max_len`` for the model) and the full history as the set of seen items to exclude from ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dmesr.data.repeats import has_repeats, target_is_repeat
from dmesr.data.schema import SequenceSplit


def pad_left(sequences: list[np.ndarray], length: int) -> torch.Tensor:
    """Right-align each sequence (keeping its last ``length`` items) in a zero-padded row."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return torch.from_numpy(out)


class TrainWindows(Dataset):
    """Left-padded training windows ``[max_len + 1]`` cut from each user's train part.

    ``all_windows=False``: one window per user, the last ``max_len + 1`` items (the common
    practice). ``all_windows=True``: the whole train part is covered by windows ending at
    ``len, len - max_len, len - 2 * max_len, ...`` (consecutive windows share one item), so
    every transition of a history longer than ``max_len`` is trained on exactly once. ``stride=N``:
    windows end every N items and each trains its last N targets (``trained``), the earliest all of its
    own: every transition is trained once, with at least ``max_len - N + 1`` items of context (N = 1: all).
    """

    def __init__(self, split: SequenceSplit, max_len: int, all_windows: bool = False, stride: int = 0):
        windows, users, trained, starts = [], [], [], []
        self.parts = [split.train_part(user) for user in range(split.num_users)]
        self.train_interactions = self.covered_interactions = 0  # how much of the train parts the windows hold
        step = stride or max_len
        for user, part in enumerate(self.parts):
            ends = range(len(part), 1, -step) if all_windows or stride else [len(part)]
            self.train_interactions += len(part)
            if len(part) >= 2:
                self.covered_interactions += len(part) if all_windows or stride else min(len(part), max_len + 1)
            for end in ends:
                if end >= 2:
                    starts.append(max(0, end - max_len - 1))
                    windows.append(part[starts[-1] : end])
                    users.append(user)
                    # the next window (ending `stride` items earlier) trains the targets before these
                    trained.append(stride if stride and end - stride >= 2 else max_len)
        self.users = np.array(users, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)  # where each window begins in its user's train part
        self.windows = pad_left(windows, max_len + 1)
        # targets each window trains, counted from its end (``stride``: the others are another window's)
        self.trained = torch.tensor(trained, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.windows[index]

    def earlier(self, rows: torch.Tensor) -> torch.Tensor:
        """The items before each window of ``rows``, left-padded to the longest of them ``[len(rows), H]``:
        built per batch, so memory holds one batch of whole histories at a time."""
        rows = np.asarray(rows)
        parts = [self.parts[user][:start] for user, start in zip(self.users[rows], self.starts[rows])]
        return pad_left(parts, max(map(len, parts), default=0))


@dataclass
class EvalInputs:
    histories: torch.Tensor  # [U, max_len] left-padded model input
    targets: torch.Tensor  # [U] the held-out item
    seen_offsets: torch.Tensor  # [U + 1] CSR offsets of each user's full history
    seen_items: torch.Tensor  # all history items, users concatenated
    negatives: torch.Tensor | None  # [U, k] sampled-protocol negatives, when the split has them
    repeat_data: bool = False  # whether the split has repeat consumption (decides exclude_history=auto)
    target_is_repeat: torch.Tensor | None = None  # [U] bool: the target is in the user's history before it

    def __len__(self) -> int:
        return len(self.targets)

    def full_histories(self, start: int, stop: int) -> torch.Tensor:
        """The whole histories of users ``start..stop-1``, left-padded to the longest of them."""
        offsets = self.seen_offsets[start : stop + 1].tolist()
        rows = [self.seen_items[offsets[k] : offsets[k + 1]].numpy() for k in range(stop - start)]
        return pad_left(rows, max(1, max(map(len, rows))))


def evaluation_inputs(split: SequenceSplit, stage: str, max_len: int, users=None) -> EvalInputs:
    """Inputs for the validation (target ``sequence[-2]``) or test (target ``sequence[-1]``) stage, of every
    user or of ``users`` (indices, in that order)."""
    users = np.arange(split.num_users) if users is None else np.asarray(users, dtype=np.int64)
    held = [split.held_out(int(user), stage) for user in users]
    histories = [history for history, _ in held]
    targets = np.array([target for _, target in held], dtype=np.int64)
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    negatives = split.valid_negatives if stage == "valid" else split.test_negatives
    return EvalInputs(
        histories=pad_left(histories, max_len),
        targets=torch.from_numpy(targets),
        seen_offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)])),
        seen_items=torch.from_numpy(np.concatenate(histories).astype(np.int64)),
        negatives=None if negatives is None else torch.from_numpy(np.asarray(negatives, dtype=np.int64)[users]),
        repeat_data=has_repeats(split),
        target_is_repeat=torch.from_numpy(target_is_repeat(split, stage)[users]),
    )
