"""Stage 2: the bundled MiniLM encoder, ``embed_items`` end to end, and the features store
(memory-mapped round trip, atomic overwrite, clear errors on mismatches)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dmesr.enrich.encoders import TextEncoder
from dmesr.enrich.feature_files import load_features, save_features
from dmesr.enrich.pipeline import embed_items

TEXTS = ["Title: Toy Story. Year: 1995. Genres: Animation, Children's, Comedy.",
         "Title: Heat. Year: 1995. Genres: Action, Crime, Thriller.",
         "Title: Babe. Year: 1995. Genres: Children's, Comedy, Drama."]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(device="cpu", batch_size=2)


def test_pooled_vectors_are_unit_norm_and_order_independent(encoder):
    pooled = encoder.encode(TEXTS)
    assert pooled.shape == (3, 384) and pooled.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(TEXTS[::-1])[::-1], pooled, atol=1e-5)
    # the two children's comedies are closer to each other than to the crime thriller
    assert pooled[0] @ pooled[2] > pooled[0] @ pooled[1]


def test_token_states_are_padded_truncated_and_masked(encoder):
    long_text = "word " * 300
    pooled, tokens, mask = encoder.encode_with_tokens(["Heat.", long_text], max_tokens=8)
    assert tokens.shape == (2, 8, 384) and tokens.dtype == np.float16 and mask.dtype == bool
    assert mask[1].all() and 2 <= mask[0].sum() < 8  # [CLS] heat . [SEP]
    assert not tokens[0][~mask[0]].any()
    with pytest.raises(ValueError, match="empty text"):
        encoder.encode(["ok", "  "])


def descriptions(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(dict(zip(("item", "view", "description"), row))) + "\n" for row in rows))
    return path


def test_embed_items_saves_aligned_features_with_missing_views(tmp_path):
    items = pd.DataFrame({"item": ["1", "2", "3"], "text": TEXTS})
    source = descriptions(tmp_path, [("1", "text", "A toy adventure for kids."), ("2", "text", "A heist film."),
                                     ("3", "text", "A farm pig story."), ("2", "image", "A dark city at night.")])
    features = embed_items(items, "toy", source, tmp_path / "features", max_tokens=16)
    assert features.view_present["image"].tolist() == [False, True, False]
    assert not features.views["image"][0].any() and features.views["text"].shape == (3, 384)
    loaded = load_features(tmp_path / "features", encoder="all-MiniLM-L6-v2")
    assert isinstance(loaded.text_tokens, np.memmap) and loaded.text_tokens.shape == (3, 16, 384)
    np.testing.assert_array_equal(loaded.views["text"], features.views["text"])
    assert loaded.meta["view_counts"] == {"image": 1, "text": 3} and len(loaded.meta["source_fingerprint"]) == 16
    reordered = loaded.aligned_to(np.array(["3", "1"]))
    np.testing.assert_array_equal(reordered.text_pooled, features.text_pooled[[2, 0]])
    with pytest.raises(KeyError, match="no cached features"):
        loaded.aligned_to(np.array(["1", "99"]))
    with pytest.raises(ValueError, match="encoded with"):
        load_features(tmp_path / "features", encoder="another-encoder")


def test_embed_refuses_empty_or_mixed_sources(tmp_path):
    items = pd.DataFrame({"item": ["1"], "text": TEXTS[:1]})
    with pytest.raises(ValueError, match="no image/text descriptions"):
        embed_items(items, "toy", descriptions(tmp_path, [("9", "audio", "x")]), tmp_path / "f")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(dict(item="1", view="text", description="x", describer=name,
                                             prompt_hash="h", dataset="toy")) + "\n" for name in ("a", "b")))
    with pytest.raises(ValueError, match="mixes several describer"):
        embed_items(items, "toy", mixed, tmp_path / "f")


def test_save_is_atomic_overwrite_and_load_checks_files(tmp_path, encoder):
    items = pd.DataFrame({"item": ["1", "2"], "text": TEXTS[:2]})
    source = descriptions(tmp_path, [("1", "text", "x"), ("2", "text", "y")])
    first = embed_items(items, "toy", source, tmp_path / "features", views=["text"], max_tokens=4)
    save_features(first, tmp_path / "features")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert load_features(tmp_path / "features", mmap=False).text_mask.shape == (2, 4)
    (tmp_path / "features" / "text_pooled.npy").unlink()
    with pytest.raises(FileNotFoundError, match="text_pooled.npy missing"):
        load_features(tmp_path / "features")
    with pytest.raises(FileNotFoundError, match="meta.json missing"):
        load_features(tmp_path / "nothing")


def test_embed_again_with_the_same_inputs_loads_instead_of_encoding(tmp_path, monkeypatch):
    items = pd.DataFrame({"item": ["1", "2"], "text": TEXTS[:2]})
    source = descriptions(tmp_path, [("1", "text", "A toy adventure."), ("2", "text", "A heist film.")])
    first = embed_items(items, "toy", source, tmp_path / "features", views=["text"], max_tokens=8)
    import dmesr.enrich.pipeline as pipeline

    encoded = []
    original = pipeline.TextEncoder
    monkeypatch.setattr(pipeline, "TextEncoder", lambda *a, **k: encoded.append(1) or original(*a, **k))
    again = embed_items(items, "toy", source, tmp_path / "features", views=["text"], max_tokens=8)
    assert encoded == [] and again.meta["source_fingerprint"] == first.meta["source_fingerprint"]
    np.testing.assert_array_equal(again.views["text"], first.views["text"])
    embed_items(items, "toy", source, tmp_path / "features", views=["text"], max_tokens=4)  # another token count
    changed = descriptions(tmp_path, [("1", "text", "A toy adventure."), ("2", "text", "A bank robbery.")])
    embed_items(items, "toy", changed, tmp_path / "features", views=["text"], max_tokens=4)  # other descriptions
    assert len(encoded) == 2
