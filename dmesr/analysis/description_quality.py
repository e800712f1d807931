"""How good a describer's item descriptions are, scored against the item's known year and genres.

No human judge: two cheap, reproducible signals per text source (the original item text, and each
shipped description file).

- Genre probe: the frozen text encoder embeds each text; a 5-fold cross-validated one-vs-rest
  logistic regression (standardised inputs, C=1, fixed, nothing tuned) predicts the item's
  multi-label genres; micro- and macro-F1 of the out-of-fold predictions. The prior baseline gives
  every item the k genres most frequent in its training folds (k = the mean number of genres per
  item, rounded). The original text states the genres, so its probe is an upper reference.
- Contradictions, from the text alone: the share of texts that state a year (a standalone 4-digit
  1000-2099; "1990s" and "18th-century" are not years) more than 1 away from the item's year; the
  share that name a genre of the dataset's vocabulary (lowercase, whole words, "film noir" for
  "Film-Noir") that is not among the item's genres; the share that state any year; and, of the
  texts that state a year, the share whose year is far off. Heuristics: a year may be the story's
  setting, and "war" or "action" may not mean the genre.

    dmesr experiments quality --dataset ml-100k --descriptions data/descriptions/ml-100k.cascade.text.jsonl \
        --out reports/bench/description-quality-ml-100k.json
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

YEAR = re.compile(r"\b(1\d{3}|20\d{2})\b")
FOLDS = 5


def item_genres(items: pd.DataFrame) -> pd.Series:
    """Per item (index ``item``), the set of its genres ("A|B" -> {"A", "B"}); empty when unknown."""
    return pd.Series([set(g.split("|")) if isinstance(g, str) and g else set() for g in items["genres"]],
                     index=items["item"].astype(str))


def genre_pattern(genre: str) -> re.Pattern:
    """A whole-word, case-insensitive pattern for a genre name; a hyphen also matches a space."""
    words = [re.escape(part) for part in genre.lower().split("-")]
    return re.compile(r"\b" + "[- ]".join(words) + r"(?![\w'])", re.IGNORECASE)


def contradictions(texts: pd.Series, years: pd.Series, genres: pd.Series) -> dict:
    """Shares of ``texts`` (index: item) that state a far-off year, name a foreign genre, state any year."""
    vocabulary = sorted(set().union(*genres))
    patterns = {genre: genre_pattern(genre) for genre in vocabulary}
    far_year, foreign_genre, any_year, dated, dated_stating = 0, 0, 0, 0, 0
    for item, text in texts.items():
        stated = [int(y) for y in YEAR.findall(text)]
        any_year += bool(stated)
        year = pd.to_numeric(pd.Series([years.get(item)]), errors="coerce").iloc[0]
        if pd.notna(year):
            dated += 1
            dated_stating += bool(stated)
            far_year += any(abs(y - int(year)) > 1 for y in stated)
        named = {genre for genre, pattern in patterns.items() if pattern.search(text)}
        foreign_genre += bool(named - genres.get(item, set()))
    count = max(len(texts), 1)
    return {"far_year_rate": far_year / max(dated, 1), "foreign_genre_rate": foreign_genre / count,
            "any_year_rate": any_year / count,
            "far_year_share_of_stating": far_year / max(dated_stating, 1), "texts": len(texts),
            "texts_with_item_year": dated}


def genre_probe(vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Out-of-fold micro/macro-F1 of a linear probe from ``vectors`` [N, D] to multi-hot ``labels`` [N, G].

    Also the prior baseline's scores. Genres with fewer than ``FOLDS`` items are dropped first (a
    fold could not learn them); the count kept is reported.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import KFold
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = labels[:, labels.sum(0) >= FOLDS].astype(int)
    predicted, prior = np.zeros_like(labels), np.zeros_like(labels)
    for train, test in KFold(FOLDS, shuffle=True, random_state=seed).split(vectors):
        probe = OneVsRestClassifier(make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)))
        predicted[test] = probe.fit(vectors[train], labels[train]).predict(vectors[test])
        k = max(1, int(round(labels[train].sum(1).mean())))
        prior[np.ix_(test, np.argsort(-labels[train].sum(0), kind="stable")[:k])] = 1

    def scores(guess: np.ndarray) -> dict:
        return {"micro_f1": float(f1_score(labels, guess, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(labels, guess, average="macro", zero_division=0))}

    return {**scores(predicted), "prior": scores(prior), "items": len(labels), "genres": labels.shape[1]}


def score_source(name: str, texts: pd.Series, items: pd.DataFrame, encode: Callable[[list[str]], np.ndarray],
                 seed: int = 0) -> dict:
    """Coverage, genre probe and contradiction rates of one text source (``texts`` indexed by item)."""
    genres = item_genres(items)
    texts = texts.reindex([item for item in genres.index if item in texts.index])  # the item table's order: the
    texts = texts[texts.str.strip().astype(bool)]  # same folds for every source that covers the same items
    years = pd.Series(items["year"].to_numpy(), index=genres.index)
    labelled = [item for item in texts.index if genres[item]]
    vocabulary = sorted(set().union(*genres))
    labels = np.array([[genre in genres[item] for genre in vocabulary] for item in labelled])
    vectors = encode(texts[labelled].tolist())
    return {"source": name, "items": len(genres), "described": len(texts),
            "coverage": len(texts) / max(len(genres), 1), "without_description": len(genres) - len(texts),
            "probe": genre_probe(vectors, labels, seed), "contradictions": contradictions(texts, years, genres)}


def description_texts(path: str | Path, dataset: str) -> pd.Series:
    """The text-view descriptions of a shipped file, indexed by item."""
    from dmesr.enrich import read_descriptions

    table = read_descriptions(path, dataset)
    table = table[table["view"] == "text"] if (table["view"] == "text").any() else table
    return pd.Series(table["description"].to_numpy(), index=table["item"].astype(str)).groupby(level=0).first()


def quality_command(dataset: str, descriptions: list[str], out: str | None, command: str, seed: int = 0) -> list[dict]:
    """CLI entry: score the split's original text and each description file; print a table; write JSON."""
    from dmesr.config import DataConfig
    from dmesr.data import prepare_split
    from dmesr.enrich import TextEncoder

    items = prepare_split(DataConfig(dataset=dataset)).items
    if "genres" not in items.columns or not item_genres(items).map(bool).any():
        raise ValueError(f"dataset {dataset!r} has no item genres to score descriptions against")
    sources = [("original text", pd.Series(items["text"].to_numpy(), index=items["item"].astype(str)))]
    sources += [(str(path), description_texts(path, dataset)) for path in descriptions]  # bad files fail first
    encoder = TextEncoder(device="cpu")
    rows = [score_source(name, texts, items, encoder.encode, seed) for name, texts in sources]
    table = pd.DataFrame([{"source": Path(row["source"]).name, "coverage": row["coverage"],
                           "probe micro-F1": row["probe"]["micro_f1"], "probe macro-F1": row["probe"]["macro_f1"],
                           "far year": row["contradictions"]["far_year_rate"],
                           "foreign genre": row["contradictions"]["foreign_genre_rate"],
                           "any year": row["contradictions"]["any_year_rate"]} for row in rows])
    print(table.to_string(index=False, float_format="%.3f"))
    print(f"prior baseline: micro-F1 {rows[0]['probe']['prior']['micro_f1']:.3f}, "
          f"macro-F1 {rows[0]['probe']['prior']['macro_f1']:.3f}")
    if out:
        result = {"dataset": dataset, "encoder": encoder.name, "seed": seed, "folds": FOLDS, "sources": rows,
                  "command": command}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return rows
