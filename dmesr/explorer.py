"""Looking inside trained runs: recommendations per user, embedding spaces, alignment, attention.

The logic behind notebooks 03 (alignment), 04 (attention heatmaps) and 06 (the explorer app):
notebooks only call these functions and draw. Everything here reads a finished run directory
(``best.pt`` + ``config.yaml``) and never trains. Top-k lists and held-out ranks go through the evaluation
code (:mod:`dmesr.evaluation.protocols`): the run's ``exclude_history``, seen items other than the target
left out, ties counted against the target.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dmesr.config import RunConfig
from dmesr.data.batches import evaluation_inputs
from dmesr.data.repeats import has_repeats
from dmesr.data.schema import SequenceSplit
from dmesr.evaluation.protocols import evaluate, excludes_history, seen_item_mask
from dmesr.models.base import SequentialRecommender
from dmesr.models.item_encoders import ORIGINAL_TEXT, DMESRItems, alignment_sources


@dataclass
class TrainedRun:
    run_dir: Path | None  # None for a model built in memory
    config: RunConfig
    split: SequenceSplit
    model: SequentialRecommender  # best checkpoint, eval mode, on the CPU


def load_trained(run_dir: str | Path, split: SequenceSplit | None = None) -> TrainedRun:
    """The best checkpoint of a finished run; ``split`` (default: rebuilt from the config) must be its data."""
    from dmesr.training.run import load_finished_run

    config, split, model = load_finished_run(run_dir, split)
    return TrainedRun(run_dir=Path(run_dir), config=config, split=split, model=model.eval())


def held_out(split: SequenceSplit, user: int, stage: str = "test") -> tuple[np.ndarray, int]:
    """``(history, target)`` of ``user`` at ``stage`` (internal item ids)."""
    return split.held_out(user, stage)


@torch.no_grad()
def _scores(run: TrainedRun, users, stage: str) -> tuple[torch.Tensor, np.ndarray]:
    """``(scores [U, num_items + 1], targets [U])`` of the users' ``stage`` items, for listing: padding and,
    where the run excludes them (``seen_item_mask``, the evaluation's rule), seen items other than the target
    are never listed."""
    inputs = evaluation_inputs(run.split, stage, run.config.data.max_len, users)
    histories = inputs.full_histories(0, len(inputs)) if getattr(run.model, "reads_full_history", False) \
        else inputs.histories
    scores = run.model.predict_scores(histories).clone()
    scores[:, 0] = -torch.inf  # padding
    if excludes_history(run.config.eval, has_repeats(run.split)):
        seen = seen_item_mask(inputs, 0, len(inputs), scores.shape, scores.device)
        seen[torch.arange(len(inputs)), inputs.targets] = False  # the target is always ranked
        scores[seen] = -torch.inf
    return scores, inputs.targets.numpy()


def top_k(run: TrainedRun, users, k: int = 10, stage: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(items [U, k], hit [U, k])``: each user's top-``k`` from the history before the ``stage`` target,
    in one batch (the item table is computed once), and where the target is among them."""
    scores, targets = _scores(run, users, stage)
    items = torch.topk(scores, k, dim=1).indices.numpy()
    return items, items == targets[:, None]


def recommend(run: TrainedRun, user: int, k: int = 10, stage: str = "test") -> pd.DataFrame:
    """Top-``k`` items for one user with their score order, ``hit`` marking the held-out target, and display info."""
    items, hits = top_k(run, [user], k, stage)
    return pd.DataFrame({"rank": np.arange(1, k + 1), "item_id": items[0], "hit": hits[0]}).join(
        item_info(run.split, items[0]))


def item_info(split: SequenceSplit, item_ids, descriptions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Display columns of internal ids (title or text, genres, image path where any item has one, and the
    MLLM description per view)."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if len(item_ids) and (item_ids.min() < 1 or item_ids.max() > split.num_items):
        raise ValueError(f"item ids must lie in 1..{split.num_items}")
    from dmesr.enrich.images import has_image_path

    rows = split.items.iloc[item_ids - 1].reset_index(drop=True)
    columns = [c for c in ("item", "title", "genres", "text", "image_path") if c in rows.columns]
    if "image_path" in columns and not any(has_image_path(path) for path in rows["image_path"]):
        columns.remove("image_path")  # a dataset without pictures: no column of "(no image)"
    table = rows[columns].copy()
    if descriptions is not None:
        for view, group in descriptions.groupby("view"):
            lookup = dict(zip(group["item"].astype(str), group["description"]))
            table[f"{view} view"] = [lookup.get(str(item), "") for item in table["item"]]
    return table


def user_history(split: SequenceSplit, user: int, stage: str = "test", descriptions: pd.DataFrame | None = None,
                 last: int = 10) -> pd.DataFrame:
    """The last ``last`` items the model sees before the ``stage`` target, oldest first."""
    history, _ = held_out(split, user, stage)
    shown = history[-last:]
    table = item_info(split, shown, descriptions)
    table.insert(0, "position", np.arange(len(history) - len(shown), len(history)) + 1)
    return table


def embedding_spaces(model: SequentialRecommender) -> dict[str, np.ndarray]:
    """Item vectors ``[num_items, D]`` per space: the scoring table and, where the encoder has them,
    the ID part, the frozen original text and the frozen and fused MLLM views."""
    items = model.items
    with torch.no_grad():
        spaces = {"item (scoring)": torch.cat(items.tables(), dim=-1)[1:]}
        if hasattr(items, "ids"):
            spaces["ID embedding"] = items.ids.tables()[0][1:]
        semantics = getattr(items, "semantics", None)
        if semantics is not None:
            spaces["original text (frozen)"] = semantics.vector(ORIGINAL_TEXT)
            for view in semantics.views:
                spaces[f"MLLM {view} view (frozen)"] = semantics.vector(view)
        if isinstance(items, DMESRItems):
            for index, view in enumerate(items.views):
                spaces[f"fused {view} view"] = items.fused_views()[:, index]
    return {name: vectors.detach().float().numpy() for name, vectors in spaces.items()}


def _unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("cannot compare a zero vector by cosine similarity (an item missing this view?)")
    return vectors / norms


def nearest_items(vectors, item_id: int, k: int = 10) -> pd.DataFrame:
    """The ``k`` items closest to ``item_id`` by cosine similarity in ``vectors [num_items, D]`` (row = id - 1)."""
    vectors = np.asarray(vectors)
    if not 1 <= item_id <= len(vectors):
        raise ValueError(f"item id {item_id} is out of range 1..{len(vectors)}")
    unit = _unit(vectors)
    similarity = unit @ unit[item_id - 1]
    similarity[item_id - 1] = -np.inf
    order = np.argsort(-similarity, kind="stable")[:k]
    return pd.DataFrame({"item_id": order + 1, "cosine": similarity[order]})


def _dmesr_items(model: SequentialRecommender, what_needs_it: str) -> DMESRItems:
    if not isinstance(model.items, DMESRItems):
        raise ValueError(f"{what_needs_it} a DMESR item encoder, got {type(model.items).__name__}")
    return model.items


def aligned_pair(model: SequentialRecommender) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray]:
    """``(first, second, a, b, present)``: the adapted vectors the DMESR alignment loss compares.

    The pair is the two MLLM views, or (one view only) the view and the original text, as in
    :class:`DMESRItems`; rows where either is missing are False in ``present``.
    """
    items = _dmesr_items(model, "alignment needs")
    pair = alignment_sources(items.views, items.use_original_text)
    if pair is None:
        raise ValueError("one MLLM view and no original text: this encoder has no pair to align")
    first, second = pair
    with torch.no_grad():
        a, b = items.adapt(first), items.adapt(second)
        present = items.semantics.present(first) & items.semantics.present(second)
    return first, second, a.numpy(), b.numpy(), present.numpy()


def matched_pair_accuracy(a, b) -> float:
    """Share of rows whose nearest row of ``b`` (cosine) is their own: 1.0 = every pair retrieves its partner."""
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors must have the same shape, got {a.shape} and {b.shape}")
    return float(np.mean(np.argmax(a @ b.T, axis=1) == np.arange(len(a))))


def alignment_uniformity(a, b, t: float = 2.0) -> dict[str, float]:
    """Wang & Isola (2020) on unit vectors: ``alignment`` = mean squared distance of pairs (lower = closer),
    ``uniformity`` = log mean exp(-t * squared distance) over all rows of both (lower = more spread)."""
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"need two [N >= 2, D] arrays of one shape, got {a.shape} and {b.shape}")
    both = np.concatenate([a, b])
    squared = np.clip(2.0 - 2.0 * both @ both.T, 0.0, None)
    off_diagonal = squared[~np.eye(len(both), dtype=bool)]
    return {"alignment": float(np.mean(np.sum((a - b) ** 2, axis=1))),
            "uniformity": float(np.log(np.mean(np.exp(-t * off_diagonal))))}


def text_tokens(texts: list[str], max_tokens: int, encoder: str = "all-MiniLM-L6-v2") -> list[list[str]]:
    """The word pieces whose states the encoder kept for each text (its first ``max_tokens``, [CLS] included)."""
    from transformers import AutoTokenizer

    from dmesr.enrich.encoders import MAX_ENCODER_TOKENS, encoder_path

    tokenizer = AutoTokenizer.from_pretrained(encoder_path(encoder))
    encoded = tokenizer(list(texts), truncation=True, max_length=MAX_ENCODER_TOKENS)["input_ids"]
    return [tokenizer.convert_ids_to_tokens(ids)[:max_tokens] for ids in encoded]


def attention_over_tokens(model: SequentialRecommender, item_id: int) -> tuple[np.ndarray, list[str]]:
    """Cross-attention of one item over its real original-text tokens: ``([heads * views, tokens], row labels)``."""
    items = _dmesr_items(model, "attention weights need")
    weights = items.attention_weights(torch.tensor([item_id]))[0]  # [heads, views, tokens]
    real = int(items.semantics.token_mask[item_id - 1].sum())
    heads, views = weights.shape[:2]
    labels = [f"{view} view, head {head + 1}" for head in range(heads) for view in items.views]
    return weights[:, :, :real].reshape(heads * views, real).float().numpy(), labels


@torch.no_grad()
def attention_sharpness(model: SequentialRecommender) -> dict[str, float]:
    """How far the cross-attention is from a plain average of each item's original-text tokens.

    Averaged over every head and every (item, view) pair where the item has that view and at least
    two real tokens: ``normalised_entropy`` (entropy of the weights over ``log`` of the token count;
    1 = uniform, the attention then only mean-pools the tokens, 0 = one token), ``max_weight`` (the
    largest weight) next to ``uniform_max_weight`` (its value under uniform attention, 1 / tokens),
    and ``items`` (how many items count for at least one view).
    """
    items = _dmesr_items(model, "attention weights need")
    _, weights = items.fused_views(return_attention=True)  # [N, H, V, L], zero on padding
    weights = weights.double().transpose(1, 2)  # [N, V, H, L]
    counts = items.semantics.token_mask.sum(dim=1).double()
    present = torch.stack([items.semantics.present(view) for view in items.views], dim=1)  # [N, V]
    counted = present & (counts >= 2)[:, None]
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1)  # [N, V, H]
    per_pair = {"normalised_entropy": entropy / counts.log().clamp_min(1e-30)[:, None, None],
                "max_weight": weights.amax(dim=-1),
                "uniform_max_weight": (1.0 / counts)[:, None, None].expand_as(entropy)}
    result = {name: float(values[counted].mean()) for name, values in per_pair.items()}
    return {**result, "items": int(counted.any(dim=1).sum())}


def held_out_ranks(run: TrainedRun, users=None, stage: str = "test") -> np.ndarray:
    """Where ``run`` ranks each user's held-out ``stage`` item (1 = first; every user by default): the rank
    behind its metrics, computed by the evaluation code under the run's full-ranking protocol."""
    inputs = evaluation_inputs(run.split, stage, run.config.data.max_len, users)
    return evaluate(run.model, inputs, replace(run.config.eval, protocol="full")).ranks + 1


def held_out_rank(run: TrainedRun, user: int, stage: str = "test") -> int:
    """Where ``run`` ranks one user's held-out ``stage`` item (1 = first), as :func:`held_out_ranks`."""
    return int(held_out_ranks(run, [user], stage)[0])


def item_label(split: SequenceSplit, item_id: int) -> str:
    """An item's title (or text) with its id in the data, unique even where titles repeat: ``Heat [#6]``."""
    row = split.items.iloc[item_id - 1]
    title = row["title"] if "title" in split.items and isinstance(row["title"], str) else str(row["text"])
    return f"{title} [#{row['item']}]"


def compare_recommendations(runs: dict[str, TrainedRun], user: int, k: int = 10, stage: str = "test") -> pd.DataFrame:
    """Top-``k`` of several runs side by side (one column per run), a hit marked with a check mark."""
    columns = {}
    for name, run in runs.items():
        top = recommend(run, user, k, stage)
        label = top["title"] if "title" in top.columns else top["text"]
        columns[name] = [f"✔ {text}" if hit else str(text) for text, hit in zip(label, top["hit"])]
    return pd.DataFrame(columns, index=pd.RangeIndex(1, k + 1, name="rank"))


def neighbours_by_space(spaces: dict[str, np.ndarray], split: SequenceSplit, item_id: int, k: int = 10) -> pd.DataFrame:
    """The ``k`` nearest items of ``item_id`` in each embedding space: per space a ``title`` column and a
    ``cosine`` column (cosine similarity to the item, 1 = same direction), under the space's name."""
    columns = {}
    for name, vectors in spaces.items():
        present = np.linalg.norm(vectors, axis=1) > 0  # items without this view have a zero vector
        if not present[item_id - 1]:
            columns[(name, "title")] = ["(item has no vector here)"] + [""] * (k - 1)
            columns[(name, "cosine")] = [np.nan] * k
            continue
        rows = np.flatnonzero(present)
        position = int(np.searchsorted(rows, item_id - 1))
        near = nearest_items(vectors[rows], position + 1, k)
        info = item_info(split, rows[near["item_id"].to_numpy() - 1] + 1)
        label = info["title"] if "title" in info.columns else info["text"]
        padding = k - len(near)
        columns[(name, "title")] = list(label) + [""] * padding
        columns[(name, "cosine")] = list(near["cosine"].round(3)) + [np.nan] * padding
    return pd.DataFrame(columns, index=pd.RangeIndex(1, k + 1, name="rank"))


def html_table(table: pd.DataFrame, image_column: str = "image_path", thumbnail: int = 96) -> str:
    """``table`` as HTML with the pictures named in ``image_column`` inlined as thumbnails (others: no image)."""
    from dmesr.enrich.images import has_image_path, load_image

    def picture(path) -> str:
        if not has_image_path(path):
            return "(no image)"
        image, reason = load_image(path, max_side=thumbnail)
        if image is None:
            return f"({reason})"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>'

    shown = table.astype(object).map(lambda value: html.escape(str(value)))  # escape=False below: escape text here
    if image_column in table.columns:
        shown[image_column] = [picture(path) for path in table[image_column]]
    return shown.to_html(escape=False, index=False)
