"""The mask decoder's fast paths against the plain computations they replace (float32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtasks.modeling import mask_decoder
from samtasks.modeling.common import LayerNorm2d
from samtasks.modeling.low_rank import DenseFactors, LowRankTokens
from samtasks.modeling.mask_decoder import MaskDecoder
from samtasks.modeling.prompt_encoder import PromptEncoder
from samtasks.modeling.sam2 import Sam2MaskDecoder
from samtasks.modeling.transformer import Attention, TwoWayTransformer

from .test_equivalence import TOL, _official, pair  # noqa: F401 (pair is a fixture)


def _randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) / max(1, param.shape[-1]) ** 0.5)
    return module.eval()


@pytest.mark.parametrize("tokens", [5, 7, 15])
def test_folded_attention_matches_projected(tokens):
    """ViT-B's decoder widths (256 channels, 8 heads, 128 internal): both folded forms equal `forward`."""
    attn = _randomized(Attention(256, 8, downsample_rate=2), seed=0)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(3, tokens, 256, generator=gen)
    image = torch.randn(3, 300, 256, generator=gen)
    pe = torch.randn(1, 300, 256, generator=gen)
    assert attn.folds(tokens) == (8 * tokens < 128)
    with torch.inference_mode():
        expected = attn(q, image + pe, image)
        torch.testing.assert_close(attn.tokens_to_image(q, image + pe, image), expected, atol=1e-5, rtol=0)
        for x in (image[:1], image):  # image queries shared by every prompt, and per prompt
            expected = x + attn(x, q, q * 0.5)
            torch.testing.assert_close(attn.image_to_tokens(x, q, q * 0.5, residual=x), expected, atol=1e-5, rtol=0)
        # The image->token update's rows times the centred image, through the output projection's
        # head blocks.
        _, projected = attn.image_to_tokens_update(image[:1], q, q * 0.5)
        tokens = LowRankTokens.update(image[0], image.new_empty(3, 0, 300), image.new_empty(3, 0, 256))
        centred = image[0] - image[0].mean(1, keepdim=True)
        torch.testing.assert_close(attn.output_cross(q * 0.5, tokens), projected @ centred.T, atol=1e-4, rtol=0)


def test_transformer_shared_and_per_prompt_image_agree():
    """Prompts against one shared image equal the same prompts against per-prompt copies of it (the
    shared path merges prompts into one query sequence; the per-prompt path folds projections)."""
    transformer = _randomized(TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=512), seed=2)
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(1, 256, 12, 10, generator=gen)
    pe = torch.randn(1, 256, 12, 10, generator=gen)
    tokens = torch.randn(4, 7, 256, generator=gen)
    with torch.inference_mode():
        shared = transformer(image, pe, tokens)
        per_prompt = transformer(image.expand(4, -1, -1, -1).contiguous(), pe, tokens)
        # The plain computation: every attention through `forward`.
        folds = Attention.folds
        Attention.folds = lambda self, tokens: False
        try:
            plain = transformer(image.expand(4, -1, -1, -1).contiguous(), pe, tokens)
        finally:
            Attention.folds = folds
    for ours in (shared, per_prompt):
        torch.testing.assert_close(ours[0], plain[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours[1].expand_as(plain[1]), plain[1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("grid", [(64, 64), (5, 3)])
def test_upscale_matches_module(grid):
    """Token-layout upscaling and the hypernetwork product equal `output_upscaling` on NCHW maps."""
    transformer = TwoWayTransformer(depth=1, embedding_dim=256, num_heads=8, mlp_dim=64)
    decoder = _randomized(MaskDecoder(transformer_dim=256, transformer=transformer, iou_head_hidden_dim=32), seed=4)
    assert isinstance(decoder.output_upscaling[1], LayerNorm2d)
    h, w = grid
    gen = torch.Generator().manual_seed(5)
    src = torch.randn(2, h * w, 256, generator=gen)
    hyper_in = torch.randn(2, 3, 32, generator=gen)
    with torch.inference_mode():
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(2, 256, h, w))  # [2, 32, 4h, 4w]
        expected = (hyper_in @ upscaled.flatten(2)).view(2, 3, 4 * h, 4 * w)
        ours = decoder.upscale_and_project(src, hyper_in, grid)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_single_points_with_mask_inputs_match_official(pair):  # noqa: F811
    """Per-prompt dense embeddings (mask inputs) with one point each: the folded paths on every layer."""
    official, ours = pair
    first = ours.predict(points=[[[40.0, 30.0]], [[100.0, 70.0]], [[10.0, 80.0]]], labels=[[1], [1], [1]])
    assert ours.model.mask_decoder.transformer.layers[0].cross_attn_image_to_token.folds(7)
    prompts = dict(
        points=[[[60.0, 40.0]], [[20.0, 70.0]], [[130.0, 20.0]]],
        labels=[[1], [1], [0]],
        mask_input=first.low_res_logits[:, :1],
    )
    _, iou_ref, low_ref = _official(official, multimask=True, **prompts)
    out = ours.predict(**prompts)
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)


def test_min_iou_skips_only_prompts_the_filter_drops(pair):  # noqa: F811
    _, ours = pair
    points = torch.tensor([[[x, y]] for x in (10.0, 60.0, 110.0) for y in (15.0, 45.0, 75.0)])  # [9, 1, 2]
    labels = torch.ones(9, 1, dtype=torch.int64)
    full = ours.predict_torch(points, labels, return_masks=False)
    best = full.iou_scores.max(1).values
    threshold = float(best.median())
    out = ours.predict_torch(points, labels, return_masks=False, min_iou=threshold)
    kept = best > threshold
    assert 0 < int(kept.sum()) < 9
    torch.testing.assert_close(out.iou_scores, full.iou_scores, atol=0, rtol=0)
    torch.testing.assert_close(out.low_res_logits[kept], full.low_res_logits[kept], atol=1e-6, rtol=0)
    assert torch.isneginf(out.low_res_logits[~kept]).all()


def _low_rank(seed: int, prompts: int = 3, tokens: int = 50, channels: int = 32, rank: int = 5) -> LowRankTokens:
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(tokens, channels, generator=gen)
    left = torch.rand(prompts, rank, tokens, generator=gen)
    return LowRankTokens.update(shared, left, torch.randn(prompts, rank, channels, generator=gen))


def test_low_rank_tokens_match_their_dense_form():
    """Every operation on `LowRankTokens` equals the same operation on the materialized tokens,
    through two LayerNorms (whose statistics are carried, not recomputed from dense tokens)."""
    image = _low_rank(seed=6)
    dense = image.shared + image.left.transpose(1, 2) @ image.right
    torch.testing.assert_close(image.dense(), dense, atol=1e-5, rtol=0)
    gen = torch.Generator().manual_seed(7)
    norm = _randomized(torch.nn.LayerNorm(32), seed=8)
    with torch.no_grad():
        norm.weight.add_(1.0)
    extra_left, extra_right = torch.rand(3, 4, 50, generator=gen), torch.randn(3, 4, 32, generator=gen)
    with torch.inference_mode():
        image = image.layer_norm(norm)
        dense = norm(dense)
        torch.testing.assert_close(image.dense(), dense, atol=1e-5, rtol=0)
        image = image.layer_norm(norm, (extra_left, extra_right, None))
        dense = norm(dense + extra_left.transpose(1, 2) @ extra_right)
        torch.testing.assert_close(image.dense(), dense, atol=1e-5, rtol=0)
        # Two heads of 16 channels: per-head products and pooling.
        rows, pe = torch.randn(3, 2, 6, 16, generator=gen), torch.randn(50, 32, generator=gen)
        by_head = (dense + pe).view(3, 50, 2, 16).permute(0, 2, 3, 1)  # [P, heads, d, N]
        torch.testing.assert_close(image.head_logits(rows, pe), rows @ by_head, atol=1e-4, rtol=0)
        weights = torch.randn(3, 2, 6, 50, generator=gen).softmax(-1)
        pooled = (weights @ dense.view(3, 50, 2, 16).transpose(1, 2)).transpose(1, 2)  # [P, T, heads, d]
        torch.testing.assert_close(image.head_pool(weights), pooled, atol=1e-5, rtol=0)
        weight, bias = torch.randn(32, 16, generator=gen), torch.randn(16, generator=gen)
        projected = image.project(weight)
        torch.testing.assert_close(projected.rows(1, 10, 30, bias), dense[1, 10:30] @ weight + bias, atol=1e-4, rtol=0)


def test_transformer_low_rank_matches_forward():
    """`forward_low_rank` (image tokens carried as shared + rank-r per prompt) equals `forward`."""
    transformer = _randomized(TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=512), seed=9)
    for layer in [*transformer.layers, transformer]:
        for norm in layer.modules():
            if isinstance(norm, torch.nn.LayerNorm):
                with torch.no_grad():
                    norm.weight.add_(1.0)
    gen = torch.Generator().manual_seed(10)
    image = torch.randn(1, 256, 12, 10, generator=gen)
    pe = torch.randn(1, 256, 12, 10, generator=gen)
    tokens = torch.randn(4, 7, 256, generator=gen)
    assert transformer.folds(7) and not transformer.folds(16)
    with torch.inference_mode():
        queries, keys = transformer(image, pe, tokens)
        low_queries, low_keys = transformer.forward_low_rank(image, pe, tokens)
    torch.testing.assert_close(low_queries, queries, atol=1e-4, rtol=0)
    torch.testing.assert_close(low_keys.dense(), keys.expand(4, -1, -1), atol=1e-4, rtol=0)


def test_decoder_low_rank_path_matches_per_prompt_path(monkeypatch):
    """Shared dense embeddings take the low-rank path (here 2 prompts per pass); the same embeddings
    copied per prompt take the per-prompt path: same logits and IoU, with and without `min_iou`."""
    monkeypatch.setattr(mask_decoder, "_LOW_RANK_TOKENS", 2 * 6 * 5)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=64)
    decoder = _randomized(MaskDecoder(transformer_dim=256, transformer=transformer, iou_head_hidden_dim=32), seed=11)
    gen = torch.Generator().manual_seed(12)
    image = torch.randn(1, 256, 6, 5, generator=gen)
    pe = torch.randn(1, 256, 6, 5, generator=gen)
    sparse = torch.randn(5, 2, 256, generator=gen)
    dense = torch.randn(1, 256, 6, 5, generator=gen).expand(5, -1, -1, -1)
    with torch.inference_mode():
        for multimask in (True, False):
            masks, iou = decoder(image, pe, sparse, dense, multimask)
            ref_masks, ref_iou = decoder(image, pe, sparse, dense.contiguous(), multimask)
            torch.testing.assert_close(masks, ref_masks, atol=1e-4, rtol=0)
            torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=0)
        threshold = float(iou.median())
        masks, _ = decoder(image, pe, sparse, dense, False, min_iou=threshold)
        kept = iou[:, 0] > threshold
        assert 0 < int(kept.sum()) < 5
        torch.testing.assert_close(masks[kept], ref_masks[kept], atol=1e-4, rtol=0)
        assert torch.isneginf(masks[~kept]).all()


def test_decoder_mask_factors_match_their_dense_embedding(monkeypatch):
    """A mask input's embedding as `DenseFactors` (rank 16 per prompt from the first layer on, 2
    prompts per pass) gives the logits and IoU of the materialized embedding on the per-prompt path."""
    monkeypatch.setattr(mask_decoder, "_LOW_RANK_TOKENS", 2 * 6 * 5)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=64)
    decoder = _randomized(MaskDecoder(transformer_dim=256, transformer=transformer, iou_head_hidden_dim=32), seed=13)
    encoder = _randomized(
        PromptEncoder(embed_dim=256, image_embedding_size=(6, 5), input_image_size=(24, 20), mask_in_chans=16), seed=14
    )
    gen = torch.Generator().manual_seed(15)
    image = torch.randn(1, 256, 6, 5, generator=gen)
    boxes = torch.tensor([[1.0, 2.0, 15.0, 20.0], [4.0, 0.0, 9.0, 9.0], [0.0, 0.0, 20.0, 24.0]])
    logits = torch.randn(3, 1, 24, 20, generator=gen) * 4
    with torch.inference_mode():
        sparse, factors = encoder(None, boxes, logits, factored=True)
        _, dense = encoder(None, boxes, logits)
        assert isinstance(factors, DenseFactors) and factors.coefficients.shape == (3, 16, 6, 5)
        torch.testing.assert_close(factors.dense(), dense, atol=0, rtol=0)
        pe = encoder.get_dense_pe()
        for multimask in (True, False):
            masks, iou = decoder(image, pe, sparse, factors, multimask)
            ref_masks, ref_iou = decoder(image, pe, sparse, dense, multimask)
            torch.testing.assert_close(masks, ref_masks, atol=1e-4, rtol=0)
            torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=0)


def test_sam2_decoder_low_rank_path_matches_per_prompt_path(monkeypatch):
    """SAM 2's decoder (object-score token, high-res features in the upscaling, dynamic single mask)
    at its real width: shared image and mask factors on the low-rank path (2 prompts per pass)
    against the same embeddings materialized per prompt, with and without `min_iou`."""
    monkeypatch.setattr(mask_decoder, "_LOW_RANK_TOKENS", 2 * 6 * 5)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=64, mlp_names="layers")
    decoder = _randomized(Sam2MaskDecoder(transformer_dim=256, transformer=transformer, iou_head_hidden_dim=32), 16)
    encoder = _randomized(
        PromptEncoder(embed_dim=256, image_embedding_size=(6, 5), input_image_size=(24, 20), mask_in_chans=16), 17
    )
    gen = torch.Generator().manual_seed(18)
    image = torch.randn(1, 256, 6, 5, generator=gen)
    high_res = torch.randn(1, 120, 2, 2, 32, generator=gen), torch.randn(1, 120, 64, generator=gen)
    points = (torch.rand(5, 2, 2, generator=gen) * 20, torch.tensor([[1, -1], [1, -1], [0, 1], [1, 1], [2, 3]]))
    logits = torch.randn(5, 1, 24, 20, generator=gen) * 4
    with torch.inference_mode():
        pe = encoder.get_dense_pe()
        for masks_in in (None, logits):
            sparse, dense = encoder(points, None, masks_in, factored=True)
            reference = dense.dense() if masks_in is not None else dense.contiguous()
            assert transformer.folds(6 + sparse.shape[1])
            for multimask in (True, False):
                out = decoder(image, pe, sparse, dense, multimask, high_res)
                ref = decoder(image, pe, sparse, reference, multimask, high_res)
                torch.testing.assert_close(out.low_res_logits, ref.low_res_logits, atol=1e-4, rtol=0)
                torch.testing.assert_close(out.iou_scores, ref.iou_scores, atol=1e-5, rtol=0)
                torch.testing.assert_close(out.object_scores, ref.object_scores, atol=1e-5, rtol=0)
            ref = decoder(image, pe, sparse, reference, True, high_res)
            threshold = float(ref.iou_scores.max(1).values.median())
            out = decoder(image, pe, sparse, dense, True, high_res, min_iou=threshold)
            kept = (ref.iou_scores > threshold).any(1)
            assert 0 < int(kept.sum()) < 5
            torch.testing.assert_close(out.low_res_logits[kept], ref.low_res_logits[kept], atol=1e-4, rtol=0)
            assert torch.isneginf(out.low_res_logits[~kept]).all()
