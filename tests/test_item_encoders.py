"""Item encoders on tiny synthetic features: shapes and padding, masking of missing views and padding
tokens, gradient flow (and none into frozen adapters), alignment and its fallback, determinism, and a
few training steps of every kind / integration with a minimal backbone that must lower the loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dmesr.config import ITEM_KINDS, ItemEncoderConfig, ModelConfig
from dmesr.enrich.features import SemanticFeatures
from dmesr.models.base import IDEmbedding, SequentialRecommender
from dmesr.models.item_encoders import DMESRItems, build_item_representation

NUM_ITEMS, FEATURE_DIM, TOKENS, DIM = 30, 24, 6, 16
NO_IMAGE = [0, 3, 7]  # rows (item id - 1) without an image view
NO_VIEW = [5, 11]  # rows without any MLLM view


def make_features(seed: int = 0, views=("image", "text")) -> SemanticFeatures:
    """Views and text derived from one latent per item, so the semantics carry item identity."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(NUM_ITEMS, 8))

    def project(noise: float) -> np.ndarray:  # unit-norm rows, like sentence-encoder outputs
        vectors = latent @ rng.normal(size=(8, FEATURE_DIM)) + noise * rng.normal(size=(NUM_ITEMS, FEATURE_DIM))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    present = {v: np.ones(NUM_ITEMS, dtype=bool) for v in views}
    if "image" in present:
        present["image"][NO_IMAGE] = False
    for v in views:
        present[v][NO_VIEW] = False
    vectors = {v: project(0.1) * present[v][:, None] for v in views}
    lengths = rng.integers(1, TOKENS + 1, size=NUM_ITEMS)
    mask = np.arange(TOKENS)[None, :] < lengths[:, None]
    tokens = (project(0.3)[:, None, :] + 0.3 * rng.normal(size=(NUM_ITEMS, TOKENS, FEATURE_DIM))) * mask[..., None]
    return SemanticFeatures(
        item_ids=np.array([f"i{k}" for k in range(1, NUM_ITEMS + 1)]),
        views=vectors,
        view_present=present,
        text_pooled=project(0.1),
        text_tokens=tokens.astype(np.float16),
        text_mask=mask,
    )


def config(**overrides) -> ItemEncoderConfig:
    return dataclasses.replace(ItemEncoderConfig(kind="dmesr", adapter_hidden=32, dropout=0.1), **overrides)


def build(seed: int = 0, features: SemanticFeatures | None = None, **overrides):
    torch.manual_seed(seed)
    return build_item_representation(config(**overrides), NUM_ITEMS, DIM, features or make_features())


class CumulativeMeanRecommender(SequentialRecommender):
    """Stand-in backbone: embedding lookup, running mean over the non-padding history, one linear layer."""

    def __init__(self, items):
        super().__init__(ModelConfig(hidden_size=DIM), items, max_len=8)
        self.mix = nn.Linear(DIM, DIM)

    def encode(self, seqs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        real = (seqs > 0).float().unsqueeze(-1)
        running = (table[seqs] * real).cumsum(dim=1) / real.cumsum(dim=1).clamp(min=1)
        return self.mix(running)


def next_item_windows(num_users: int = 24, length: int = 9, seed: int = 0) -> torch.Tensor:
    """Users walk the catalogue in order from random starts: the next item is learnable."""
    starts = torch.randint(0, NUM_ITEMS, (num_users, 1), generator=torch.Generator().manual_seed(seed))
    return (starts + torch.arange(length)) % NUM_ITEMS + 1


def training_losses(model: SequentialRecommender, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-item cross-entropy, auxiliary loss or 0)."""
    inputs, targets = model.training_inputs(windows)
    hidden, table = model.hidden_and_table(inputs)
    recommendation = F.cross_entropy((hidden @ table.T).flatten(0, 1), targets.flatten())
    auxiliary = model.items.auxiliary_loss(inputs)
    return recommendation, torch.zeros(()) if auxiliary is None else auxiliary


def training_loss(model: SequentialRecommender, windows: torch.Tensor) -> torch.Tensor:
    recommendation, auxiliary = training_losses(model, windows)
    return recommendation + model.items.auxiliary_weight * auxiliary


VARIANTS = [
    dict(kind="id"),
    dict(kind="text"),
    dict(kind="mllm"),
    dict(kind="concat"),
    dict(kind="llmesr"),
    *[dict(integration=mode) for mode in ("sum", "concat", "gate", "dual")],
    dict(fusion="none"),
    dict(use_original_text=False),
    dict(views=("text",)),
    dict(views=("image",), learnable_temperature=True),
    dict(freeze_adapters=True, integration="gate"),
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_kind_gives_padded_tables_and_trains(overrides):
    items = build(**overrides)
    tables = items.tables()
    expected_tables = 2 if overrides.get("kind") == "llmesr" or overrides.get("integration") == "dual" else 1
    assert len(tables) == expected_tables
    for table in tables:
        assert table.shape == (NUM_ITEMS + 1, DIM)
        assert torch.isfinite(table).all()
        assert (table[0] == 0).all()

    model = CumulativeMeanRecommender(items)
    windows = next_item_windows()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(1)
    recommendation_losses = []
    for _ in range(40):
        optimizer.zero_grad()
        recommendation, auxiliary = training_losses(model, windows)
        loss = recommendation + model.items.auxiliary_weight * auxiliary
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        recommendation_losses.append(recommendation.item())
    assert np.mean(recommendation_losses[-3:]) < 0.8 * np.mean(recommendation_losses[:3])


@pytest.mark.parametrize("integration, fusion_norm", [("sum", "pre"), ("concat", "pre"), ("gate", "pre"),
                                                     ("dual", "pre"), ("sum", "post")])
def test_gradients_reach_every_trainable_part(integration, fusion_norm):
    items = build(integration=integration, learnable_temperature=True, fusion_norm=fusion_norm)
    model = CumulativeMeanRecommender(items)
    training_loss(model, next_item_windows()).backward()
    for name, parameter in items.named_parameters():
        if name == "ids.embedding.weight":
            assert parameter.grad[1:].abs().sum(dim=1).gt(0).all()  # every real item gets gradient
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_frozen_adapters_get_no_gradient_but_the_rest_does():
    items = build(freeze_adapters=True)
    adapters = [items.view_adapters, items.token_adapter, items.text_adapter]
    frozen = {id(p) for module in adapters for p in module.parameters()}
    assert frozen and all(not p.requires_grad for module in adapters for p in module.parameters())
    training_loss(CumulativeMeanRecommender(items), next_item_windows()).backward()
    for name, parameter in items.named_parameters():
        if id(parameter) in frozen:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_frozen_adapters_compute_their_first_stage_once_and_after_each_checkpoint_load(caplog):
    items = build(freeze_adapters=True)
    assert "alignment loss trains nothing" in caplog.text  # its inputs depend on no trained weight
    batch = torch.tensor([[0, 1, 2, 3], [4, 5, 9, 10]])
    outputs = []
    for cached in (True, False):  # the cached first stage, then the adapters run whole on the features
        items.frozen_adapters = cached
        torch.manual_seed(7)  # the same dropout draws
        outputs.append((items.tables()[0], items.auxiliary_loss(batch)))
    for cached, explicit in zip(*outputs):
        torch.testing.assert_close(cached, explicit)
    assert not outputs[0][1].requires_grad  # what the warning says: no gradient leaves the alignment
    items.frozen_adapters = True
    other = build(seed=1, freeze_adapters=True).eval()
    assert not torch.allclose(other.tables()[0], items.eval().tables()[0])
    other.load_state_dict(items.state_dict())  # the other seed's frozen adapters are replaced
    torch.testing.assert_close(other.tables()[0], items.tables()[0])


@pytest.mark.parametrize("overrides", [dict(), dict(integration="gate"), dict(fusion_norm="post"), dict(kind="concat"),
                                       dict(kind="mllm")])
def test_an_absent_view_never_reaches_the_item_vector(overrides):
    features = make_features()
    items = build(features=features, **overrides).eval()
    before = items.tables()[0]
    features.views["image"][NO_IMAGE] = 100.0  # garbage where the view is marked absent
    after = build(features=features, **overrides).eval().tables()[0]
    torch.testing.assert_close(before, after)


def test_padding_tokens_are_never_attended_and_never_matter():
    features = make_features()
    items = build(features=features).eval()
    rows = torch.arange(1, NUM_ITEMS + 1)
    weights = items.attention_weights(rows)
    assert weights.shape == (NUM_ITEMS, 2, 2, TOKENS)
    padding = ~torch.as_tensor(features.text_mask)[:, None, None, :].expand_as(weights)
    assert (weights[padding] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(NUM_ITEMS, 2, 2))
    before = items.tables()[0]
    features.text_tokens[~features.text_mask] = 50.0
    torch.testing.assert_close(before, build(features=features).eval().tables()[0])


def test_original_text_tokens_matter_only_when_used():
    features, changed = make_features(), make_features()
    changed.text_tokens[:] = changed.text_tokens[::-1]
    for use_text, should_differ in ((True, True), (False, False)):
        a = build(features=features, use_original_text=use_text).eval().tables()[0]
        b = build(features=changed, use_original_text=use_text).eval().tables()[0]
        assert (not torch.allclose(a, b)) == should_differ


def test_item_without_any_view_falls_back_to_id_plus_original_text():
    items = build().eval()
    with torch.no_grad():
        table = items.tables()[0]
        rows = torch.tensor(NO_VIEW)
        text_term = items.text_adapter(items.semantics.vector("original_text")[rows])
        expected = items.ids.embedding.weight[rows + 1] + text_term
    torch.testing.assert_close(table[rows + 1], expected)
    # an item with views gets its original text through the fusion only, not as an extra term
    with torch.no_grad():
        fused = items.fused_views()
        image_present = torch.as_tensor(make_features().view_present["image"])
        expected_all = items.ids.embedding.weight[1:] + fused[:, 0] * image_present[:, None] + fused[:, 1]
    has_view = torch.ones(NUM_ITEMS, dtype=torch.bool)
    has_view[NO_VIEW] = False
    torch.testing.assert_close(table[1:][has_view], expected_all[has_view])
    without_text = build(use_original_text=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(without_text.tables()[0][rows + 1], without_text.ids.embedding.weight[rows + 1])


def test_alignment_loss_and_its_single_view_fallback():
    batch = torch.tensor([[0, 1, 2, 2], [4, 9, 10, 1]])
    two_views = build(align_weight=0.5)
    loss = two_views.auxiliary_loss(batch)
    assert loss.ndim == 0 and loss.item() > 0
    assert two_views.alignment_pair == ("image", "text")
    # only item 2 has both views here (item 1 has no image, item 6 no view): zero, not NaN
    assert two_views.auxiliary_loss(torch.tensor([1, 2, 6, 0])).item() == 0.0

    single = build(features=make_features(views=("text",)))
    assert single.alignment_pair == ("text", "original_text")
    assert torch.isfinite(single.auxiliary_loss(batch))
    torch.manual_seed(0)
    single_view = make_features(views=("text",))
    no_fallback = build_item_representation(config(), NUM_ITEMS, DIM, single_view, align_fallback=False)
    assert no_fallback.auxiliary_loss(batch) is None
    assert build(features=make_features(views=("text",)), use_original_text=False).auxiliary_loss(batch) is None
    assert build(align_weight=0.0).auxiliary_loss(batch) is None
    assert build(kind="concat").auxiliary_loss(batch) is None
    with pytest.raises(ValueError, match="out of range"):
        two_views.auxiliary_loss(torch.tensor([1, NUM_ITEMS + 1]))


def test_views_missing_from_the_features_are_skipped():
    items = build(features=make_features(views=("text",)), views=("image", "text"))
    assert isinstance(items, DMESRItems) and items.views == ["text"]


def test_llmesr_collaborative_table_starts_as_the_pca_of_the_semantics():
    items = build(kind="llmesr", views=())
    pooled = torch.as_tensor(make_features().text_pooled)
    centred = pooled - pooled.mean(0)
    first_component = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[0]
    collaborative = items.collaborative.embedding.weight[1:, 0].detach()
    correlation = torch.corrcoef(torch.stack([first_component, collaborative]))[0, 1]
    assert abs(correlation.item()) > 0.999
    assert items.collaborative.embedding.weight[1:].std().item() == pytest.approx(0.02, rel=0.1)


def test_same_seed_same_encoder_and_same_dropout_noise():
    a, b = build(seed=3), build(seed=3)
    torch.manual_seed(7)
    first = a.tables()[0]
    torch.manual_seed(7)
    torch.testing.assert_close(first, b.tables()[0])
    assert not torch.allclose(first, build(seed=4).tables()[0])


def test_frozen_features_move_with_the_module_but_stay_out_of_checkpoints():
    items = build(token_pca_dim=0)
    buffers = dict(items.named_buffers())
    assert buffers["semantics.real_tokens"].dtype == torch.float16
    assert not any(key.startswith("semantics.") for key in items.state_dict())
    doubled = items.double()
    assert doubled.tables()[0].dtype == torch.float64


def test_id_kind_needs_no_features_and_bad_input_is_refused():
    assert isinstance(build_item_representation(ItemEncoderConfig(kind="id"), NUM_ITEMS, DIM, None), IDEmbedding)
    with pytest.raises(ValueError, match="unknown item encoder kind"):
        build(kind="bert")
    with pytest.raises(ValueError, match="unknown integration"):
        build(integration="product")
    with pytest.raises(ValueError, match="unknown fusion"):
        build(fusion="self_attention")
    with pytest.raises(ValueError, match="unknown fusion_norm 'mid'"):
        build(fusion_norm="mid")
    with pytest.raises(ValueError, match="needs semantic features"):
        build_item_representation(config(), NUM_ITEMS, DIM, None)
    with pytest.raises(ValueError, match="split has 29"):
        build_item_representation(config(), NUM_ITEMS - 1, DIM, make_features())
    with pytest.raises(ValueError, match="at least one MLLM view"):
        build(features=make_features(views=("text",)), views=("image",))
    broken = make_features()
    broken.text_pooled[4, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build(features=broken)


def test_token_pca_keeps_the_leading_directions_and_a_linear_adapter():
    features = make_features()
    items = build(features=features, token_pca_dim=4)
    reduced = items.semantics.token_base[items.semantics.token_mask]
    assert not items.semantics.token_base[~items.semantics.token_mask].any()  # zero padding
    assert reduced.shape[1] == 4 and isinstance(items.token_adapter, nn.Linear)
    assert reduced.mean(dim=0).abs().max() < 1e-4  # centred
    variances = reduced.var(dim=0)
    assert torch.all(variances[:-1] >= variances[1:] - 1e-6)  # ordered by explained variance
    real = torch.as_tensor(np.asarray(features.text_tokens, dtype=np.float32))[torch.as_tensor(features.text_mask)]
    total = real.var(dim=0).sum()
    assert variances.sum() <= total + 1e-4


@pytest.mark.parametrize("views", [("image", "text"), ("text",)])
def test_alignment_after_a_forward_reuses_its_adapted_views_exactly(views):
    encoder = build(features=make_features(views=views), align_weight=0.5).eval()  # eval: no dropout noise
    batch = torch.tensor([[0, 1, 2, 3], [4, 5, 9, 10]])
    alone = encoder.auxiliary_loss(batch)
    encoder.tables()  # a training step's forward: adapts every item's views once
    reused = encoder.auxiliary_loss(batch)
    torch.testing.assert_close(reused, alone)
    reused.backward()
    assert all(p.grad is not None for p in encoder.view_adapters.parameters())
    with torch.no_grad():
        encoder.tables()  # evaluation leaves nothing behind for a later training step
    assert "_adapted_this_step" not in encoder.__dict__


@pytest.mark.parametrize("kind", sorted(ITEM_KINDS))
def test_every_registered_item_kind_builds(kind):
    """The registry config.ITEM_KINDS is the one list of item encoders: each name builds its encoder."""
    from dmesr.models.base import ItemRepresentation

    items = build(kind=kind)
    assert isinstance(items, ItemRepresentation)
    assert torch.cat(items.tables(), dim=-1).shape[0] == NUM_ITEMS + 1
