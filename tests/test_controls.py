"""The controls break the semantic inputs as documented, and only those."""

import numpy as np
import pytest

from dmesr.config import config_hash, load_config
from dmesr.enrich.features import SemanticFeatures
from dmesr.models.controls import apply_control


def _features(num_items: int = 12, dim: int = 8, length: int = 5) -> SemanticFeatures:
    rng = np.random.default_rng(3)
    present = np.ones(num_items, dtype=bool)
    present[[2, 7]] = False
    views = {"text": rng.standard_normal((num_items, dim)).astype(np.float32) * present[:, None]}
    mask = np.arange(length)[None, :] < rng.integers(1, length + 1, num_items)[:, None]
    tokens = (rng.standard_normal((num_items, length, dim)) * mask[:, :, None]).astype(np.float16)
    return SemanticFeatures(np.arange(1, num_items + 1).astype(str), views, {"text": present},
                            rng.standard_normal((num_items, dim)).astype(np.float32), tokens, mask)


def test_none_returns_the_features_unchanged():
    features = _features()
    assert apply_control(features, "none") is features


def test_shuffled_gives_every_present_item_another_items_description():
    features = _features()
    shuffled = apply_control(features, "shuffled")
    before, after, present = features.views["text"], shuffled.views["text"], features.view_present["text"]
    assert not np.isclose(before[present], after[present]).all(axis=1).any()  # nobody keeps its own
    # a permutation of the present rows: the same multiset of vectors, absent rows untouched
    assert sorted(map(tuple, before[present])) == sorted(map(tuple, after[present]))
    assert (after[~present] == 0).all()
    np.testing.assert_array_equal(shuffled.text_pooled, features.text_pooled)
    np.testing.assert_array_equal(shuffled.text_tokens, features.text_tokens)
    # one fixed permutation: the same for every call (hence every training seed)
    np.testing.assert_array_equal(apply_control(features, "shuffled").views["text"], after)


def test_random_keeps_shapes_and_norms_but_not_directions():
    features = _features()
    random = apply_control(features, "random")
    for name, before, after in [("view", features.views["text"], random.views["text"]),
                                ("pooled", features.text_pooled, random.text_pooled),
                                ("tokens", features.text_tokens, random.text_tokens)]:
        assert after.shape == before.shape and after.dtype == before.dtype, name
        np.testing.assert_allclose(np.linalg.norm(after.astype(np.float32), axis=-1),
                                   np.linalg.norm(before.astype(np.float32), axis=-1), rtol=2e-3, err_msg=name)
        flat_before, flat_after = before.reshape(-1, before.shape[-1]), after.reshape(-1, after.shape[-1])
        nonzero = np.linalg.norm(flat_before.astype(np.float32), axis=1) > 0
        cosines = (flat_before[nonzero] * flat_after[nonzero]).sum(1) / (
            np.linalg.norm(flat_before[nonzero], axis=1) * np.linalg.norm(flat_after[nonzero], axis=1))
        assert np.abs(cosines).max() < 0.99, name
    np.testing.assert_array_equal(random.text_mask, features.text_mask)


def test_text_only_puts_the_original_text_where_the_description_was():
    features = _features()
    text_only = apply_control(features, "text-only")
    np.testing.assert_array_equal(text_only.views["text"], features.text_pooled)
    assert text_only.view_present["text"].all()
    np.testing.assert_array_equal(text_only.text_tokens, features.text_tokens)


def test_unknown_control_is_refused_and_the_default_keeps_run_hashes():
    with pytest.raises(ValueError, match="items.control"):
        apply_control(_features(), "bogus")
    config = load_config(overrides=["items.kind=dmesr"])
    before = config_hash(config)
    config.items.control = "shuffled"
    assert config_hash(config) != before
    config.items.control = "none"
    assert config_hash(config) == before
