"""Our SAM against the official package on the same random weights (float32, CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS

from .conftest import build_official, random_image, randomize

sa = pytest.importorskip("segment_anything")

TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tiny_official, tiny_checkpoint):
    """(official predictor, our predictor) on one non-square image."""
    image = random_image(np.random.default_rng(1), 90, 150)
    official = sa.SamPredictor(tiny_official)
    official.set_image(image)
    ours = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    ours.set_image(image)
    return official, ours


def _official(predictor, points=None, labels=None, boxes=None, mask_input=None, multimask=True):
    """The official predictor on a batch of prompts, through its documented `predict_torch` path."""
    h, w = predictor.original_size
    kwargs = {}
    if points is not None:
        pts = predictor.transform.apply_coords(np.asarray(points, np.float32), (h, w))
        kwargs["point_coords"] = torch.as_tensor(pts, dtype=torch.float)
        kwargs["point_labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.int)
    else:
        kwargs["point_coords"] = kwargs["point_labels"] = None
    if boxes is not None:
        kwargs["boxes"] = torch.as_tensor(predictor.transform.apply_boxes(np.asarray(boxes, np.float32), (h, w)))
    if mask_input is not None:
        kwargs["mask_input"] = torch.as_tensor(mask_input, dtype=torch.float)
    masks, iou, low = predictor.predict_torch(multimask_output=multimask, return_logits=True, **kwargs)
    return masks.numpy(), iou.numpy(), low.numpy()


CASES = {
    "one point": dict(points=[[[40.0, 30.0]]], labels=[[1]]),
    "mixed labels": dict(points=[[[40.0, 30.0], [100.0, 70.0], [10.0, 80.0]]], labels=[[1, 0, 1]]),
    "box": dict(boxes=[[20.0, 10.0, 120.0, 80.0]]),
    "box and points": dict(points=[[[60.0, 40.0], [30.0, 20.0]]], labels=[[1, 0]], boxes=[[20.0, 10.0, 120.0, 80.0]]),
    "batch of points": dict(
        points=[[[5.0, 5.0], [50.0, 60.0]], [[140.0, 80.0], [70.0, 10.0]], [[75.0, 45.0], [0.0, 0.0]]],
        labels=[[1, 0], [1, 1], [1, -1]],
    ),
    "batch of boxes": dict(boxes=[[0.0, 0.0, 150.0, 90.0], [30.5, 20.25, 31.5, 21.0], [100.0, 50.0, 149.0, 89.0]]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_official(pair, case, multimask):
    official, ours = pair
    prompts = CASES[case]
    masks_ref, iou_ref, low_ref = _official(official, multimask=multimask, **prompts)
    logits = ours.upsample(
        torch.as_tensor(low_ref)
    )  # the same postprocessing on the same logits, to compare upsampling alone
    out = ours.predict(**prompts, multimask=multimask)
    assert out.low_res_logits.shape == low_ref.shape
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(logits.numpy(), masks_ref, atol=TOL, rtol=0)
    confident = np.abs(masks_ref) >= 1e-3
    np.testing.assert_array_equal(out.masks[confident], masks_ref[confident] > 0)


def test_mask_input_matches_official(pair):
    official, ours = pair
    first = ours.predict(points=[[60.0, 40.0]], labels=[1])
    best = first.low_res_logits[:, first.best()[0]][:, None]  # [1, 1, S, S]
    prompts = dict(points=[[[60.0, 40.0], [20.0, 70.0]]], labels=[[1, 0]], mask_input=best)
    _, iou_ref, low_ref = _official(official, multimask=False, **prompts)
    out = ours.predict(**prompts, multimask=False)
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)


def test_image_embedding_matches_official(pair):
    official, ours = pair
    np.testing.assert_allclose(ours.features.numpy(), official.features.numpy(), atol=TOL, rtol=0)


# ViT-B's architecture at a small width, depth and input: its heads, patch and window sizes (the 32-token
# grid padded to 42 for 14-token windows), the full decoder, and global attention on a grid large enough
# that its relative-position bias is built in chunks of query rows (10, 10, 10, 2), as at full size.
VIT_B_SHAPED = dataclasses.replace(
    MODEL_SPECS["vit_b"], encoder_embed_dim=96, encoder_depth=4, encoder_global_attn_indexes=(1, 3), image_size=512
)


@pytest.mark.parametrize(
    "name",
    ["vit_b_shaped", pytest.param("vit_b", marks=pytest.mark.slow)],  # full size: about 30 s on CPU
)
def test_vit_b_matches_official(name, tmp_path, monkeypatch):
    """The encoder and a few prompts on ViT-B's code path, small by default; `pytest -m slow` runs it at
    full size (1024 px)."""
    spec = VIT_B_SHAPED if name == "vit_b_shaped" else MODEL_SPECS["vit_b"]
    monkeypatch.setitem(MODEL_SPECS, name, spec)
    official = randomize(build_official(spec), seed=3)
    path = tmp_path / f"{name}.pth"
    torch.save(official.state_dict(), path)
    image = random_image(np.random.default_rng(2), 300, 200)
    ref = sa.SamPredictor(official)
    ref.set_image(image)
    ours = SamPredictor(build_sam(name, path), device="cpu")
    ours.set_image(image)
    np.testing.assert_allclose(ours.features.numpy(), ref.features.numpy(), atol=TOL, rtol=0)
    prompts = dict(points=[[[50.0, 60.0], [150.0, 250.0]]], labels=[[1, 0]], boxes=[[10.0, 20.0, 180.0, 290.0]])
    _, iou_ref, low_ref = _official(ref, **prompts)
    out = ours.predict(**prompts)
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)
