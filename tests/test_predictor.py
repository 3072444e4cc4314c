"""SamPredictor contracts: shapes, dtypes, frames, batching, multi-image batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam

from .conftest import random_image


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    p = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu", prompt_batch_size=2)
    p.set_image(random_image(np.random.default_rng(5), 70, 110))
    return p


def test_shapes_and_dtypes(predictor):
    out = predictor.predict(points=[[[10, 20]], [[50, 60]], [[100, 5]]], labels=[[1], [1], [0]])
    assert out.masks.shape == (3, 3, 70, 110) and out.masks.dtype == bool
    assert out.iou_scores.shape == (3, 3) and out.iou_scores.dtype == np.float32
    assert out.low_res_logits.shape == (3, 3, 32, 32) and out.low_res_logits.dtype == np.float32
    single = predictor.predict(boxes=[10, 10, 60, 50], multimask=False)
    assert single.masks.shape == (1, 1, 70, 110)
    assert single.best().tolist() == [0]


def test_single_prompt_forms_equal_batched(predictor):
    a = predictor.predict(points=[[30, 40], [80, 10]], labels=[1, 0])
    b = predictor.predict(points=[[[30, 40], [80, 10]]], labels=[[1, 0]])
    np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)


def test_labels_default_to_foreground(predictor):
    a = predictor.predict(points=[[30, 40]])
    b = predictor.predict(points=[[30, 40]], labels=[1])
    np.testing.assert_array_equal(a.low_res_logits, b.low_res_logits)


def test_batch_equals_one_by_one(predictor):
    points = np.array([[[5, 5], [60, 30]], [[100, 60], [20, 60]], [[55, 35], [1, 1]]], np.float32)
    labels = np.array([[1, 0], [1, 1], [1, -1]])
    boxes = np.array([[0, 0, 50, 40], [20, 10, 109, 69], [40, 30, 70, 50]], np.float32)
    batched = predictor.predict(points=points, labels=labels, boxes=boxes)  # 2 decoder calls (batch size 2)
    for i in range(3):
        alone = predictor.predict(points=points[i], labels=labels[i], boxes=boxes[i])
        np.testing.assert_allclose(batched.low_res_logits[i], alone.low_res_logits[0], atol=1e-5)
        np.testing.assert_allclose(batched.iou_scores[i], alone.iou_scores[0], atol=1e-5)


def test_point_frame_matches_mask_frame(tiny_checkpoint):
    """Points are (x, y) = (column, row) and boxes XYXY, scaled into the resized input frame (the
    official predictor's outputs for the same prompts are checked in test_equivalence)."""
    model = build_sam("tiny", tiny_checkpoint)
    predictor = SamPredictor(model, device="cpu")
    predictor.set_image(np.zeros((50, 200, 3), np.uint8))  # resized to 32 x 128 inside a 128 x 128 input
    seen = {}
    original = model.prompt_encoder.forward

    def spy(points, boxes, masks, **kwargs):
        seen["points"], seen["boxes"] = points, boxes
        return original(points, boxes, masks, **kwargs)

    model.prompt_encoder.forward = spy
    try:
        predictor.predict(points=[[100.0, 25.0]], boxes=[0.0, 0.0, 200.0, 50.0])
    finally:
        model.prompt_encoder.forward = original
    np.testing.assert_allclose(seen["points"][0].numpy(), [[[64.0, 16.0]]])
    np.testing.assert_allclose(seen["boxes"].numpy(), [[0.0, 0.0, 128.0, 32.0]])


def test_set_images_batch_equals_single(tiny_checkpoint):
    model = build_sam("tiny", tiny_checkpoint)
    images = [random_image(np.random.default_rng(i), 60 + 10 * i, 90) for i in range(3)]
    many = SamPredictor(model, device="cpu")
    many.set_images(images)
    one = SamPredictor(model, device="cpu")
    for i, image in enumerate(images):
        one.set_image(image)
        a = many.predict(points=[[20, 30]], image_index=i)
        b = one.predict(points=[[20, 30]])
        np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=1e-5)
        assert a.masks.shape == b.masks.shape == (1, 3, 60 + 10 * i, 90)


def test_predict_torch_takes_any_dtype_and_equals_predict(predictor):
    """The tensor path with float64 points and int32 labels gives `predict`'s numbers as tensors (that
    they stay on the predictor's device needs a second device: `test_predict_torch_stays_on_cuda`)."""
    points, labels = [[[10.25, 10.5], [60.75, 30.0]]], [[1, 0]]
    expected = predictor.predict(points=points, labels=labels)
    out = predictor.predict_torch(
        torch.tensor(points, dtype=torch.float64), torch.tensor(labels, dtype=torch.int32), return_masks=False
    )
    assert out.masks is None and out.low_res_logits.dtype == torch.float32
    np.testing.assert_array_equal(out.low_res_logits.numpy(), expected.low_res_logits)
    np.testing.assert_array_equal(out.iou_scores.numpy(), expected.iou_scores)


@pytest.mark.gpu
def test_predict_torch_stays_on_cuda(tiny_checkpoint):
    """Prompts on the CPU, predictor on CUDA: every output on CUDA, equal to the CPU predictor's."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    image = random_image(np.random.default_rng(5), 70, 110)
    results = {}
    for device in ("cpu", "cuda"):
        predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device=device)
        predictor.set_image(image)
        results[device] = predictor.predict_torch(torch.tensor([[[10.0, 10.0]]]), torch.tensor([[1]]))
    cpu, cuda = results["cpu"], results["cuda"]
    assert {t.device.type for t in (cuda.masks, cuda.iou_scores, cuda.low_res_logits)} == {"cuda"}
    torch.testing.assert_close(cuda.low_res_logits.cpu(), cpu.low_res_logits, atol=1e-3, rtol=0)


def test_upsample_threshold_equals_logits(predictor):
    out = predictor.predict(points=[[33, 44]])
    logits = predictor.upsample(torch.as_tensor(out.low_res_logits))
    np.testing.assert_array_equal(out.masks, (logits > 0).numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no prompt"),
        ({"points": np.zeros((0, 2))}, "empty"),
        ({"points": [[[1, 2, 3]]]}, r"\[P, N, 2\]"),
        ({"points": [[500, 10]]}, r"outside the 110x70 image"),
        ({"points": [[-1, 10]]}, "outside"),
        ({"points": [[np.nan, 10]]}, "NaN"),
        ({"points": [[1, 1]], "labels": [2]}, "labels must be"),
        ({"points": [[[1, 1], [2, 2]]], "labels": [[1]]}, r"labels must be \[P, N\]"),
        ({"labels": [1]}, "labels given without points"),
        ({"boxes": [10, 10, 5, 20]}, "empty"),
        ({"boxes": [10, 10, 200, 20]}, "outside"),
        ({"boxes": [[1, 2, 3]]}, r"\[P, 4\]"),
        ({"points": [[[1, 1]], [[2, 2]]], "boxes": [[0, 0, 5, 5]]}, "disagree"),
        ({"mask_input": np.zeros((1, 1, 64, 64))}, r"\[P, 1, 32, 32\]"),
        ({"mask_input": np.full((1, 1, 32, 32), np.nan)}, "mask_input contains NaN"),
    ],
)
def test_bad_prompts_raise(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_no_image_and_bad_index(tiny_checkpoint, predictor):
    fresh = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu")
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(points=[[1, 1]])
    with pytest.raises(ValueError, match="image_index 3"):
        predictor.predict(points=[[1, 1]], image_index=3)


def test_bad_options(tiny_checkpoint):
    model = build_sam("tiny", tiny_checkpoint)
    with pytest.raises(ValueError, match="dtype"):
        SamPredictor(model, dtype="int8")
    with pytest.raises(ValueError, match="float16 needs a CUDA"):
        SamPredictor(model, device="cpu", dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            SamPredictor(model, device="cuda")


def test_bfloat16_autocast_on_cpu_is_close_to_float32(tiny_checkpoint):
    image = random_image(np.random.default_rng(0), 40, 40)
    out = {}
    for dtype in ("float32", "bfloat16"):
        predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu", dtype=dtype)
        predictor.set_image(image)
        out[dtype] = predictor.predict(points=[[20, 20], [5, 30]], labels=[1, 0])
    full, half = out["float32"], out["bfloat16"]
    assert half.low_res_logits.dtype == np.float32
    error = np.abs(half.low_res_logits - full.low_res_logits).max()
    assert 0 < error < 0.05 * np.abs(full.low_res_logits).max()  # bfloat16 ran, to its ~3 digits
    np.testing.assert_allclose(half.iou_scores, full.iou_scores, atol=0.02, rtol=0)
    iou = (half.masks & full.masks).sum((2, 3)) / (half.masks | full.masks).sum((2, 3))  # [1, 3]
    assert iou.min() > 0.95


@pytest.mark.slow
def test_compiled_encoder_matches_eager(tiny_checkpoint):
    """`compile=True` (torch.compile of the encoder: about 20 s of compiling here, hence slow) traces
    the windowed attention with its padding and the global one, and gives the eager features."""
    image = random_image(np.random.default_rng(1), 50, 70)
    features = {}
    for compiled in (False, True):
        predictor = SamPredictor(build_sam("tiny", tiny_checkpoint), device="cpu", compile=compiled)
        predictor.set_image(image)
        features[compiled] = predictor.features
    torch.testing.assert_close(features[True], features[False], atol=1e-5, rtol=0)
