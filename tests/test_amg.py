"""Automatic mask generation: equality with the official generator, and each rule on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.structures import MaskPrediction
from samtasks.tasks.amg import (
    PRESETS,
    AutomaticMaskGenerator,
    crop_boxes,
    near_crop_edge,
    point_grid,
    stability_score,
)
from samtasks.utils.masks import decode_rle, masks_to_boxes, remove_small_regions

from .conftest import random_image

sa = pytest.importorskip("segment_anything")

# Random weights make masks that barely depend on the point, so box NMS would merge them all:
# thresholds are lowered and NMS is off (1.0) so that every filter's decisions are compared.
LOWERED = dict(
    points_per_side=8,
    points_per_batch=24,
    pred_iou_thresh=0.01,
    stability_score_thresh=0.3,
    stability_score_offset=0.05,
    box_nms_thresh=1.0,
    crop_nms_thresh=1.0,
)


def _official_masks(model, image, **settings) -> np.ndarray:
    generator = sa.SamAutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    return np.stack([r["segmentation"] for r in generator.generate(image)])


def _match(ours: np.ndarray, ref: np.ndarray) -> list[float]:
    """Best IoU of each of our masks against an unused official one (greedy, one-to-one)."""
    a = ours.reshape(len(ours), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    iou = inter / np.maximum(union, 1)
    used, best = set(), []
    for i in np.argsort(-iou.max(1)):
        order = [j for j in np.argsort(-iou[i]) if j not in used]
        used.add(order[0])
        best.append(iou[i, order[0]])
    return best


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"crop_n_layers": 1, "crop_n_points_downscale_factor": 2, "min_mask_region_area": 30},
    ],
    ids=["full image", "crops and clean-up"],
)
def test_official_preset_matches_official_generator(tiny_official, tiny_checkpoint, extra):
    image = random_image(np.random.default_rng(3), 96, 128)
    settings = {**LOWERED, **extra}
    ref = _official_masks(tiny_official, image, **settings)
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    ours = AutomaticMaskGenerator.from_preset(predictor, "official", **settings).generate(image)
    assert len(ref) > 3
    assert len(ours) == len(ref)
    assert min(_match(ours.masks(), ref)) >= 0.99


def test_records_and_logits(tiny_checkpoint):
    image = random_image(np.random.default_rng(4), 80, 100)
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    result = AutomaticMaskGenerator.from_preset(predictor, "edges-bsds", points_per_side=4, keep_logits=True).generate(
        image
    )
    assert len(result) > 0
    assert result.low_res_logits.shape == (len(result), 32, 32)
    masks = result.masks()
    predictor.set_image(image)  # the generator resets it; re-encode to upsample the kept logits
    for record, mask, logits in zip(result.records(), masks, result.low_res_logits, strict=True):
        assert record["area"] == int(mask.sum())
        x, y, bw, bh = record["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert record["crop_box"] == [0, 0, 100, 80]
        recomputed = predictor.upsample(torch.as_tensor(logits)[None, None])[0, 0] > 0
        np.testing.assert_array_equal(recomputed.numpy(), mask)


def test_presets_follow_the_paper():
    assert PRESETS["sa1b"].crop_n_layers == 2 and PRESETS["sa1b"].max_area_fraction == 0.95
    assert PRESETS["amg-lvis"].points_per_side == 64 and PRESETS["amg-lvis"].box_nms_thresh == 0.9
    assert PRESETS["edges-bsds"].points_per_side == 16 and PRESETS["edges-bsds"].pred_iou_thresh == 0.0
    with pytest.raises(ValueError, match="unknown AmgSettings preset 'nope'; choose one of official, sa1b"):
        AutomaticMaskGenerator.from_preset(None, "nope")


def test_point_grid_and_crops():
    grid = point_grid(2)
    np.testing.assert_allclose(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    boxes = crop_boxes((100, 200), 1, 512 / 1500)
    assert boxes[0] == ([0, 0, 200, 100], 0) and len(boxes) == 5
    overlap = int(512 / 1500 * 100)  # 34
    assert boxes[1] == ([0, 0, 117, 67], 1)  # ceil((34 + 200) / 2), ceil((34 + 100) / 2)
    assert boxes[4] == ([117 - overlap, 67 - overlap, 200, 100], 1)


def test_stability_score_hand_computed():
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]]])  # > 1: 1 pixel, > -1: 3 pixels
    assert stability_score(logits, 0.0, 1.0).item() == pytest.approx(1 / 3)


def test_crop_edge_rule():
    crop, image = [0, 0, 50, 50], [0, 0, 100, 100]
    boxes = torch.tensor([[5.0, 5.0, 45.0, 20.0], [5.0, 5.0, 20.0, 20.0], [60.0, 60.0, 99.0, 99.0]])
    # Box 0 ends 5 px from the crop's inner right edge (dropped); box 1 touches no inner edge; box 2
    # lies outside this crop near the image's own edges (kept).
    assert near_crop_edge(boxes, crop, image, 20.0).tolist() == [True, False, False]


def test_masks_to_boxes_inclusive():
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert masks_to_boxes(masks).tolist() == [[2.0, 1.0, 4.0, 2.0], [0.0, 0.0, 0.0, 0.0]]


def test_small_region_rules():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # 1-px hole
    mask[17, 17] = True  # 1-px island
    cleaned, changed = remove_small_regions(mask, 4, rule="paper")
    assert changed and cleaned[5, 5] and not cleaned[17, 17] and cleaned.sum() == 100
    tiny = np.zeros((20, 20), bool)
    tiny[0:2, 0:2] = True
    tiny[10, 10] = True
    assert remove_small_regions(tiny, 10, rule="paper") == (None, True)
    kept, changed = remove_small_regions(tiny, 10, rule="official")
    assert changed and kept.sum() == 4  # the largest island survives
    _, changed = remove_small_regions(np.ones((10, 10), bool), 4, rule="paper")
    assert not changed


def test_max_area_filter(tiny_checkpoint):
    image = random_image(np.random.default_rng(6), 64, 64)
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    base = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    everything = AutomaticMaskGenerator(predictor, **base).generate(image)
    filtered = AutomaticMaskGenerator(predictor, max_area_fraction=0.5, **base).generate(image)
    fractions = everything.areas / (64 * 64)
    assert (fractions >= 0.5).any() and (fractions < 0.5).any()
    assert len(filtered) == int((fractions < 0.5).sum())
    assert all(decode_rle(r).mean() < 0.5 for r in filtered.rles)


def test_batch_nms_stages_the_suppression(tiny_checkpoint, monkeypatch):
    """Box NMS per batch of points, then per crop (the edge re-implementation's staging), on hand-made
    masks: boxes A ~ B ~ C overlap in a chain (IoU 0.81) while A and C do not (0.65). Once over the image,
    A suppresses B, so C survives; per batch, B (batch 1, with C) suppresses C first, then A suppresses B."""
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    # 64x64 image, 2x2 grid: points (16, 16), (48, 16) form batch 1, (16, 48), (48, 48) batch 2. The
    # low-res frame has 32x32 cells of 2x2 pixels; each point gets one mask: B, C, A, D.
    cells = {(16, 16): (0, 10, 1, 11), (48, 16): (0, 10, 2, 12), (16, 48): (0, 10, 0, 10), (48, 48): (20, 30, 20, 30)}
    scores = {(16, 16): 0.8, (48, 16): 0.7, (16, 48): 0.9, (48, 48): 0.6}

    def predict_torch(points, labels, *, multimask, return_masks, **kwargs):
        logits = torch.full((len(points), 1, 32, 32), -10.0)
        iou = torch.zeros(len(points), 1)
        for i, (x, y) in enumerate(points[:, 0].round().int().tolist()):
            r0, r1, c0, c1 = cells[(x, y)]
            logits[i, 0, r0:r1, c0:c1] = 10.0
            iou[i, 0] = scores[(x, y)]
        return MaskPrediction(masks=None, iou_scores=iou, low_res_logits=logits)

    monkeypatch.setattr(predictor, "predict_torch", predict_torch)
    image = np.zeros((64, 64, 3), np.uint8)
    base = dict(points_per_side=2, points_per_batch=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    once = AutomaticMaskGenerator(predictor, **base).generate(image)
    staged = AutomaticMaskGenerator(predictor, batch_nms_thresh=0.7, **base).generate(image)
    assert once.predicted_iou.tolist() == pytest.approx([0.9, 0.7, 0.6])  # A, C, D
    assert staged.predicted_iou.tolist() == pytest.approx([0.9, 0.6])  # A, D
    assert once.boxes[:2].tolist() == [[0, 0, 19, 19], [4, 0, 23, 19]]
    # C's mask was dropped when B suppressed it in its batch, and decoded again once A suppressed B.
    c_mask = np.zeros((64, 64), bool)
    c_mask[0:20, 4:24] = True
    np.testing.assert_array_equal(once.masks()[1], c_mask)
    with_logits = AutomaticMaskGenerator(predictor, keep_logits=True, **base).generate(image)
    assert (with_logits.low_res_logits[1] > 0).sum() == 100 and with_logits.low_res_logits[1][5, 6] > 0

    def alone_scores_lower(points, labels, **kwargs):
        out = predict_torch(points, labels, **kwargs)
        if len(points) == 1:  # the lone re-decode of C: its IoU now falls below the threshold
            out.iou_scores -= 0.1
        return out

    monkeypatch.setattr(predictor, "predict_torch", alone_scores_lower)
    strict = AutomaticMaskGenerator(predictor, **{**base, "pred_iou_thresh": 0.65}).generate(image)
    assert strict.predicted_iou.tolist() == pytest.approx([0.9, 0.7])  # A, C (D filtered)
    np.testing.assert_array_equal(strict.masks()[1], c_mask)


def test_small_pixel_chunks_give_the_same_masks(tiny_checkpoint, monkeypatch):
    """Large photos are processed a few masks (and padded crops) at a time; the masks are the same."""
    import samtasks.tasks.amg as amg

    image = random_image(np.random.default_rng(3), 96, 128)
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    settings = {**LOWERED, "crop_n_layers": 1, "min_mask_region_area": 30}
    generator = AutomaticMaskGenerator.from_preset(predictor, "official", **settings)
    whole = generator.generate(image)
    monkeypatch.setattr(amg, "CHUNK_PIXELS", 96 * 128 // 3)  # fewer pixels than one image-size mask
    chunked = generator.generate(image)
    assert len(whole) > 3
    assert chunked.rles == whole.rles
    np.testing.assert_array_equal(chunked.boxes, whole.boxes)
    np.testing.assert_array_equal(chunked.stability_score, whole.stability_score)
