"""Cross-attention fusion: shapes, masking (padding gets exactly zero weight), normalisation,
items without tokens, and gradients."""

from __future__ import annotations

import pytest
import torch

from dmesr.models.fusion import CrossAttentionFusion, LinearTokens


def _inputs(n=5, queries=2, length=7, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(n, queries, dim, generator=generator)
    tokens = torch.randn(n, length, dim, generator=generator)
    lengths = torch.tensor([7, 3, 1, 5, 2])[:n]
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return q, tokens, mask


def test_shapes_for_one_and_several_queries():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0).eval()
    q, tokens, mask = _inputs()
    fused, weights = fusion(q, tokens, mask, return_attention=True)
    assert fused.shape == (5, 2, 8) and weights.shape == (5, 2, 2, 7)
    single = fusion(q[:, 0], tokens, mask)
    assert single.shape == (5, 8)
    torch.testing.assert_close(single, fused[:, 0])  # queries do not interact


def test_padding_gets_exactly_zero_weight_and_real_tokens_sum_to_one():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0).eval()
    q, tokens, mask = _inputs()
    _, weights = fusion(q, tokens, mask, return_attention=True)
    padding = ~mask[:, None, None, :].expand_as(weights)
    assert (weights[padding] == 0).all()
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(5, 2, 2))


def test_padding_token_states_do_not_change_the_output():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0).eval()
    q, tokens, mask = _inputs()
    changed = tokens.clone()
    changed[~mask] = 1e4
    torch.testing.assert_close(fusion(q, tokens, mask), fusion(q, changed, mask))


def test_item_without_tokens_keeps_its_query_path_and_has_no_nan():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0, norm="post").eval()
    q, tokens, mask = _inputs()
    mask[1] = False
    fused, weights = fusion(q, tokens, mask, return_attention=True)
    assert torch.isfinite(fused).all()
    assert (weights[1] == 0).all()
    # With no token to attend to, the attention contribution is the output bias alone.
    attended = fusion.output.bias.expand(2, 8)
    hidden = fusion.attention_norm(q[1] + attended)
    torch.testing.assert_close(fused[1], fusion.output_norm(hidden + fusion.feed_forward(hidden)))


def test_pre_norm_keeps_the_query_on_the_residual_stream():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0).eval()  # pre-norm by default
    q, tokens, mask = _inputs()
    mask[1] = False
    fused = fusion(q, tokens, mask)
    # an item without tokens: its query, the output bias, and the feed-forward of their LayerNorm
    hidden = q[1] + fusion.output.bias
    torch.testing.assert_close(fused[1], hidden + fusion.feed_forward(fusion.output_norm(hidden)))
    with torch.no_grad():  # both branches silenced: the fused vector is the query itself
        fusion.output.weight.zero_(), fusion.output.bias.zero_()
        fusion.feed_forward[-2].weight.zero_(), fusion.feed_forward[-2].bias.zero_()
    torch.testing.assert_close(fusion(q, tokens, mask), q)
    assert not torch.equal(CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0, norm="post").eval()(q, tokens, mask),
                           fused)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_gradients_reach_every_parameter_and_the_inputs(norm):
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.1, norm=norm)
    q, tokens, mask = _inputs()
    q.requires_grad_(True)
    tokens.requires_grad_(True)
    fusion(q, tokens, mask).pow(2).sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert (tokens.grad[~mask] == 0).all() and tokens.grad[mask].abs().sum() > 0


def test_output_scale_sets_the_initial_scale_of_the_post_norm_fused_vectors():
    torch.manual_seed(0)
    q, tokens, mask = _inputs()
    for scale in (1.0, 0.02):
        fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0, output_scale=scale, norm="post").eval()
        fused = fusion(q, tokens, mask)
        torch.testing.assert_close(fused.std(dim=-1, unbiased=False), torch.full((5, 2), scale), rtol=1e-3, atol=0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        CrossAttentionFusion(dim=10, num_heads=3)
    with pytest.raises(ValueError, match="unknown fusion norm 'mid'; known: post, pre"):
        CrossAttentionFusion(dim=8, num_heads=2, norm="mid")
    fusion = CrossAttentionFusion(dim=8, num_heads=2)
    q, tokens, mask = _inputs()
    with pytest.raises(ValueError, match="fusion inputs disagree"):
        fusion(q, tokens, mask[:, :4])


def test_packed_tokens_give_the_padded_result_and_gradients():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.0).eval()
    q, tokens, mask = _inputs()
    mask[4] = False  # an item without any token
    padded_tokens = tokens.clone().requires_grad_()
    packed_tokens = tokens[mask].clone().requires_grad_()
    padded, padded_weights = fusion(q, padded_tokens, mask, return_attention=True)
    packed, packed_weights = fusion(q, packed_tokens, mask, return_attention=True)
    torch.testing.assert_close(packed, padded)
    torch.testing.assert_close(packed_weights, padded_weights)
    padded.sum().backward()
    packed.sum().backward()
    torch.testing.assert_close(packed_tokens.grad, padded_tokens.grad[mask])
    assert padded_tokens.grad[~mask].abs().max() == 0  # padding never influences the result
    with pytest.raises(ValueError, match="fusion inputs disagree"):
        fusion(q, packed_tokens[:-1], mask)


@pytest.mark.parametrize("queries, norm", [(1, "post"), (2, "post"), (2, "pre")])
def test_linear_tokens_give_the_explicit_attention_and_gradients(queries, norm):
    # The factored path (key/value maps folded around the frozen base states) must equal attention
    # over the explicit tokens linear(base), given padded or packed, forward and backward, dropout on.
    generator = torch.Generator().manual_seed(0)
    n, length, base_dim, dim = 6, 5, 4, 8
    mask = torch.arange(length)[None, :] < torch.tensor([5, 3, 1, 0, 2, 4])[:, None]  # item 3: no tokens
    base = torch.randn(n, length, base_dim, generator=generator, dtype=torch.float64) * mask[..., None]
    q = torch.randn(n, queries, dim, generator=generator, dtype=torch.float64)
    results = {}
    for form in ("factored", "padded", "packed"):
        torch.manual_seed(1)
        fusion = CrossAttentionFusion(dim=dim, num_heads=2, dropout=0.3, norm=norm).double().train()
        linear = torch.nn.Linear(base_dim, dim).double()
        tokens = LinearTokens(base, linear)
        given = {"factored": tokens, "padded": tokens.materialise(), "packed": tokens.materialise()[mask]}[form]
        torch.manual_seed(2)  # the same dropout draws
        fused, weights = fusion(q, given, mask, return_attention=True)
        (fused.square().sum() + fused.sum()).backward()
        results[form] = (fused, weights, *(p.grad for p in [*fusion.parameters(), *linear.parameters()]))
    for form in ("padded", "packed"):
        for factored, explicit in zip(results["factored"], results[form]):
            torch.testing.assert_close(factored, explicit)
    assert results["factored"][1][3].abs().sum() == 0  # the item without tokens attends to nothing


def test_attention_dropout_draws_its_masks_in_token_before_head_order():
    # Weights are laid out [N, Q, H, L]; the mask is drawn as for [N, Q, L, H] (the layout runs were
    # trained with), so a seeded training run keeps its dropout masks.
    fusion = CrossAttentionFusion(dim=8, num_heads=2, dropout=0.4).train()
    weights = torch.rand(5, 2, 2, 7)
    torch.manual_seed(3)
    dropped = fusion._drop_attention(weights)
    torch.manual_seed(3)
    expected = torch.nn.functional.dropout(weights.transpose(2, 3).contiguous(), 0.4).transpose(2, 3)
    assert torch.equal(dropped, expected)
    assert torch.equal(fusion.eval()._drop_attention(weights), weights)
