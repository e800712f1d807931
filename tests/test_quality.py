"""Description-quality score: contradiction heuristics on hand-made texts, the genre probe on synthetic vectors."""

import numpy as np
import pandas as pd

from dmesr.analysis.description_quality import contradictions, genre_probe, score_source

ITEMS = pd.DataFrame({"item": ["1", "2", "3", "4"], "year": ["1995", "1995", "1977", None],
                      "genres": ["Comedy|Drama", "Film-Noir", "Sci-Fi|War", "Children's"],
                      "text": ["a", "b", "c", "d"]})


def _rates(texts: dict) -> dict:
    from dmesr.analysis.description_quality import item_genres

    genres = item_genres(ITEMS)
    years = pd.Series(ITEMS["year"].to_numpy(), index=genres.index)
    return contradictions(pd.Series(texts), years, genres)


def test_year_off_by_more_than_one_counts_and_within_one_does_not():
    rates = _rates({"1": "A comedy from 1996.", "2": "Shot in 1993, a noir.", "3": "Released 1978."})
    assert rates["far_year_rate"] == 1 / 3  # only 1993 vs 1995
    assert rates["any_year_rate"] == 1.0 and rates["far_year_share_of_stating"] == 1 / 3


def test_decades_centuries_and_items_without_year_are_not_years():
    rates = _rates({"1": "Set in the 1890s, an 18th-century tale.", "4": "A story of 1884."})
    assert rates["any_year_rate"] == 0.5  # "1884" is a year but item 4 has none to contradict
    assert rates["far_year_rate"] == 0.0 and rates["texts_with_item_year"] == 1


def test_genre_word_absent_from_the_items_genres_counts():
    rates = _rates({"1": "A warm comedy and drama.", "2": "A classic film noir.", "3": "A sci-fi war epic.",
                    "4": "A horror film for children."})
    assert rates["foreign_genre_rate"] == 0.0  # vocabulary has no "horror"; "children" is not "children's"
    rates = _rates({"1": "A thriller with a War hero.", "2": "Dramatic noir.", "3": "Comedy in space."})
    assert rates["foreign_genre_rate"] == 2 / 3  # "war" for item 1, "comedy" for item 3; "dramatic" is not "drama"


def _labels(rng: np.random.Generator, n: int = 400, genres: int = 4, share: float = 0.3) -> np.ndarray:
    return (rng.random((n, genres)) < share).astype(int)


def test_probe_scores_high_when_vectors_encode_the_labels():
    rng = np.random.default_rng(0)
    labels = _labels(rng)
    vectors = np.hstack([labels * 2.0 - 1.0, rng.normal(size=(len(labels), 8))]) + rng.normal(0, 0.3, (len(labels), 12))
    scores = genre_probe(vectors, labels, seed=0)
    assert scores["micro_f1"] > 0.9 and scores["macro_f1"] > 0.9
    assert scores["micro_f1"] > scores["prior"]["micro_f1"] + 0.3


def test_probe_on_noise_is_no_better_than_the_prior():
    rng = np.random.default_rng(1)
    labels = _labels(rng, share=0.45)  # about 1.8 genres per item: the prior guesses the 2 most frequent
    scores = genre_probe(rng.normal(size=(len(labels), 12)), labels, seed=0)
    assert scores["micro_f1"] < scores["prior"]["micro_f1"] + 0.1
    assert scores["micro_f1"] < 0.55 and scores["items"] == 400 and scores["genres"] == 4


def test_rare_genres_are_dropped_and_items_without_text_counted():
    items = pd.DataFrame({"item": [str(i) for i in range(40)], "year": ["2000"] * 40,
                          "genres": ["Drama" if i % 2 else "Comedy" for i in range(39)] + ["Comedy|Western"],
                          "text": ["x"] * 40})
    texts = pd.Series({str(i): ("drama" if i % 2 else "comedy") for i in range(36)})
    texts["3"] = "  "

    def encode(batch):  # a fake encoder: one feature, 1 for "drama"
        return np.array([[1.0 if text == "drama" else 0.0] for text in batch])

    row = score_source("fake", texts, items, encode)
    assert row["described"] == 35 and row["without_description"] == 5 and row["coverage"] == 35 / 40
    assert row["probe"]["genres"] == 2  # Western (1 item) dropped
    assert row["probe"]["micro_f1"] == 1.0


def test_the_order_of_a_sources_texts_does_not_change_its_folds():
    items = pd.DataFrame({"item": [str(i) for i in range(60)], "year": ["2000"] * 60,
                          "genres": [("Drama|Comedy", "Drama", "Comedy")[i % 3] for i in range(60)], "text": ["x"] * 60})
    texts = pd.Series({str(i): f"text {i}" for i in range(60)})

    def encode(batch):  # a fixed noise vector per text
        return np.array([np.random.default_rng(int(text.split()[1])).normal(size=4) for text in batch])

    assert score_source("a", texts, items, encode) == score_source("a", texts[::-1], items, encode)
