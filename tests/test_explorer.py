"""The explorer logic behind notebooks 03, 04 and 06, on the tiny synthetic split and random features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dmesr.config import RunConfig
from dmesr.data.batches import pad_left
from dmesr.enrich.features import SemanticFeatures
from dmesr.explorer import (
    TrainedRun,
    aligned_pair,
    alignment_uniformity,
    attention_over_tokens,
    attention_sharpness,
    compare_recommendations,
    embedding_spaces,
    held_out,
    held_out_rank,
    html_table,
    item_info,
    item_label,
    matched_pair_accuracy,
    nearest_items,
    neighbours_by_space,
    recommend,
    top_k,
    user_history,
)
from dmesr.models import build_model
from dmesr.models.item_encoders import build_item_representation


def random_features(item_ids, dim=16, tokens=4, seed=0) -> SemanticFeatures:
    rng = np.random.default_rng(seed)
    count = len(item_ids)
    mask = np.zeros((count, tokens), dtype=bool)
    mask[:, :2] = True
    mask[::2, 2] = True  # every other item has a third real token
    present = np.ones(count, dtype=bool)
    present[-1] = False  # the last item has no text-view description
    view = rng.normal(size=(count, dim)).astype(np.float32) * present[:, None]
    return SemanticFeatures(item_ids=np.asarray(item_ids), views={"text": view}, view_present={"text": present},
                            text_pooled=rng.normal(size=(count, dim)).astype(np.float32),
                            text_tokens=(rng.normal(size=(count, tokens, dim)) * mask[..., None]).astype(np.float16),
                            text_mask=mask)


def trained(split, kind: str) -> TrainedRun:
    config = RunConfig()
    config.model.hidden_size, config.data.max_len = 8, 10
    config.items.kind, config.items.views = kind, ("text",)
    torch.manual_seed(0)
    features = random_features(split.item_ids) if kind != "id" else None
    items = build_item_representation(config.items, split.num_items, 8, features)
    return TrainedRun(run_dir=None, config=config, split=split, model=build_model(config.model, items, 10).eval())


@pytest.fixture
def split(tiny_split):
    tiny_split.items["title"] = [f"Movie {k}" for k in range(1, tiny_split.num_items + 1)]
    tiny_split.items["image_path"] = None
    return tiny_split


def test_recommend_excludes_history_but_keeps_the_target(split):
    run = trained(split, "dmesr")
    history, target = held_out(split, 0, "test")
    top = recommend(run, 0, k=split.num_items - len(set(history) - {target}))
    assert set(top["item_id"]) == set(range(1, split.num_items + 1)) - (set(history) - {target})
    assert top["hit"].sum() == 1 and top.loc[top["hit"], "item_id"].item() == target
    assert list(top["title"][:1]) == [f"Movie {top['item_id'][0]}"]
    with pytest.raises(ValueError, match="out of range"):
        recommend(run, split.num_users)


def test_top_k_batch_matches_one_user_at_a_time_and_follows_the_scores(split):
    run = trained(split, "dmesr")
    items, hits = top_k(run, [0, 5, 9], k=4, stage="valid")
    for row, user in enumerate([0, 5, 9]):
        single, single_hits = top_k(run, [user], k=4, stage="valid")
        assert list(items[row]) == list(single[0]) and list(hits[row]) == list(single_hits[0])
    history, target = held_out(split, 5, "valid")
    scores = run.model.predict_scores(pad_left([history], 10))[0].detach()
    scores[0] = -torch.inf
    scores[torch.as_tensor(np.setdiff1d(history, [target]))] = -torch.inf
    assert list(items[1]) == list(torch.topk(scores, 4).indices.numpy())


def test_held_out_stages_follow_leave_one_out(split):
    sequence = split.sequence(3)
    history, target = held_out(split, 3, "valid")
    assert list(history) == list(sequence[:-2]) and target == sequence[-2]
    with pytest.raises(ValueError, match="unknown evaluation stage"):
        held_out(split, 3, "train")


def test_user_history_shows_the_last_items_with_descriptions(split):
    descriptions = pd.DataFrame({"item": ["i1", "i2"], "view": ["text", "text"], "description": ["one", "two"]})
    history = user_history(split, 0, descriptions=descriptions, last=4)
    expected = split.sequence(0)[:-1][-4:]
    assert list(history["item"]) == [f"i{i}" for i in expected]
    assert list(history["position"]) == list(range(len(split.sequence(0)) - 4, len(split.sequence(0))))
    assert set(history["text view"]) <= {"one", "two", ""}


def test_compare_recommendations_one_column_per_model(split):
    runs = {"backbone": trained(split, "id"), "DMESR": trained(split, "dmesr")}
    table = compare_recommendations(runs, 0, k=5)
    assert list(table.columns) == ["backbone", "DMESR"] and len(table) == 5
    assert all(isinstance(cell, str) and cell for cell in table.to_numpy().ravel())


def test_nearest_items_by_cosine():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    near = nearest_items(vectors, 1, k=3)
    assert list(near["item_id"]) == [2, 3, 4]
    assert near["cosine"].iloc[-1] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="zero vector"):
        nearest_items(np.zeros((3, 2)), 1)


def test_matched_pair_accuracy_and_alignment_uniformity():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    assert matched_pair_accuracy(a, a) == 1.0
    assert matched_pair_accuracy(a, a[::-1]) < 0.1
    same = alignment_uniformity(a, a)
    shuffled = alignment_uniformity(a, rng.permutation(a))
    assert same["alignment"] == pytest.approx(0.0) and shuffled["alignment"] > 1.0
    assert same["uniformity"] < 0  # log of a mean of values below 1
    collapsed = alignment_uniformity(np.ones((10, 8)), np.ones((10, 8)))
    assert collapsed["uniformity"] == pytest.approx(0.0)  # all points equal: the worst uniformity


def test_aligned_pair_and_attention_of_a_dmesr_model(split):
    run = trained(split, "dmesr")
    first, second, a, b, present = aligned_pair(run.model)
    assert (first, second) == ("text", "original_text")
    assert a.shape == b.shape == (split.num_items, 8) and present.sum() == split.num_items - 1
    weights, rows = attention_over_tokens(run.model, 1)  # item 1 (row 0) has 3 real tokens
    assert weights.shape == (len(rows), 3) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-3)
    assert attention_over_tokens(run.model, 2)[0].shape[1] == 2
    with pytest.raises(ValueError, match="DMESR item encoder"):
        aligned_pair(trained(split, "id").model)


def test_attention_sharpness_is_one_for_uniform_attention_and_lower_when_it_picks_tokens(split):
    run = trained(split, "dmesr")
    fusion = run.model.items.fusion
    torch.nn.init.zeros_(fusion.query.weight)
    torch.nn.init.zeros_(fusion.query.bias)  # every query 0: equal scores, a plain average of the tokens
    uniform = attention_sharpness(run.model)
    # the last item has no text view (random_features): its attention does not count
    assert uniform["items"] == split.num_items - 1 and uniform["normalised_entropy"] == pytest.approx(1.0)
    assert uniform["max_weight"] == pytest.approx(uniform["uniform_max_weight"])
    # items alternate between 3 and 2 real tokens (random_features)
    assert uniform["uniform_max_weight"] == pytest.approx(np.mean([1 / 3 if i % 2 == 0 else 1 / 2
                                                                    for i in range(split.num_items - 1)]))
    torch.nn.init.normal_(fusion.query.weight, std=30.0)  # large scores: the weights concentrate
    sharp = attention_sharpness(run.model)
    assert sharp["normalised_entropy"] < 0.5 and sharp["max_weight"] > uniform["max_weight"]
    with pytest.raises(ValueError, match="DMESR item encoder"):
        attention_sharpness(trained(split, "id").model)


def test_embedding_spaces_and_neighbours_table(split):
    run = trained(split, "dmesr")
    spaces = embedding_spaces(run.model)
    assert set(spaces) == {"item (scoring)", "ID embedding", "original text (frozen)", "MLLM text view (frozen)",
                           "fused text view"}
    assert all(vectors.shape[0] == split.num_items for vectors in spaces.values())
    table = neighbours_by_space(spaces, split, split.num_items, k=3)  # the last item has no text view
    assert table[("MLLM text view (frozen)", "title")].iloc[0] == "(item has no vector here)"
    assert table[("original text (frozen)", "title")].str.startswith("Movie").all()
    cosines = table[("item (scoring)", "cosine")]
    assert cosines.between(-1, 1).all() and cosines.is_monotonic_decreasing


def test_held_out_rank_agrees_with_the_top_k_hit_and_labels_are_unique(split):
    run = trained(split, "dmesr")
    items, hits = top_k(run, np.arange(split.num_users), k=5)
    for user in range(split.num_users):
        rank = held_out_rank(run, user)
        assert (rank <= 5) == hits[user].any()
        if hits[user].any():
            assert rank == int(np.flatnonzero(hits[user])[0]) + 1
    labels = [item_label(split, item) for item in range(1, split.num_items + 1)]
    assert len(set(labels)) == split.num_items and labels[0].endswith(f"[#{split.items['item'].iloc[0]}]")


def test_item_info_shows_the_image_column_only_when_an_item_has_a_picture(split, monkeypatch):
    assert "image_path" not in item_info(split, [1, 2]).columns  # the fixture has no pictures
    monkeypatch.setattr(split, "items", split.items.assign(image_path=["a.png"] + [None] * (len(split.items) - 1)))
    assert item_info(split, [1, 2])["image_path"].iloc[0] == "a.png"


def test_html_table_inlines_images_and_escapes_text(tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 100), "red").save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"no picture")
    table = pd.DataFrame({"title": ["<b>A</b>", "B", "C"],
                          "image_path": [str(tmp_path / "a.png"), str(tmp_path / "bad.png"), None]})
    html = html_table(table)
    assert html.count("data:image/png;base64,") == 1 and "&lt;b&gt;A&lt;/b&gt;" in html
    assert "(unreadable image (UnidentifiedImageError))" in html and "(no image)" in html


def test_load_trained_reproduces_the_runs_test_hit_rate(split, tmp_path):
    from dmesr.explorer import load_trained
    from dmesr.training.run import train_run

    config = RunConfig(output_dir=str(tmp_path))
    config.model.hidden_size, config.data.max_len = 8, 10
    config.train.max_epochs, config.train.device = 2, "cpu"
    run_dir = train_run(config, show_progress=False, split=split)
    run = load_trained(run_dir, split)
    _, hits = top_k(run, range(split.num_users))
    recorded = json.loads((run_dir / "final.json").read_text())["test"]["HR@10"]
    assert hits.any(axis=1).mean() == pytest.approx(recorded)
    split.fingerprint = "other-data"
    with pytest.raises(ValueError, match="trained on other data"):
        load_trained(run_dir, split)


@pytest.mark.parametrize("model, epochs", [("pop", 1), ("sasrec", 2)])
def test_explorer_ranks_are_the_ones_behind_final_json_for_every_ml100k_user(tmp_path, model, epochs):
    """pop scores tie (every unseen item of equal popularity): the explorer must count ties against the
    target, as the metrics in final.json do, and leave out exactly the items the evaluation leaves out."""
    from dmesr.config import load_config
    from dmesr.evaluation.metrics import metrics_from_ranks
    from dmesr.explorer import _scores, held_out_ranks, load_trained
    from dmesr.training.run import resolved_evaluation, test_model, train_run

    config = load_config(overrides=[f"model.name={model}", f"train.max_epochs={epochs}", "train.num_threads=1",
                                    f"output_dir={tmp_path}"])
    run_dir = train_run(config, show_progress=False)
    run = load_trained(run_dir)
    ranks = held_out_ranks(run)
    assert len(ranks) == run.split.num_users == 943
    evaluator, _ = test_model(run.model, run.split, resolved_evaluation(run.config, run.split), torch.device("cpu"))
    np.testing.assert_array_equal(ranks, evaluator.ranks + 1)
    with np.load(run_dir / "test_per_user.npz") as saved:
        for name, values in metrics_from_ranks(torch.as_tensor(ranks - 1), config.eval.ks).items():
            np.testing.assert_allclose(values.numpy(), saved[name], err_msg=name)
    if model == "pop":  # ties are common: counted in the target's favour, the ranks would differ
        scores, targets = (np.asarray(part) for part in _scores(run, np.arange(run.split.num_users), "test"))
        optimistic = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(axis=1) + 1
        assert (optimistic < ranks).sum() > 100
