"""SAM 2 / 2.1 against the official `sam2` package: manifests, loading, and predictor outputs on the
same random weights (float32, CPU)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from samtasks import CheckpointError, SamPredictor, build_sam
from samtasks.build import MODEL_SPECS

from .conftest import random_image, randomize
from .official_sam2 import build_official_sam2, official_predictor

sam2 = pytest.importorskip("sam2")

TOL = 1e-4
# The official configs of our full-size names.
CONFIGS = {
    f"{prefix}{size}": f"{folder}/{prefix}{short}.yaml"
    for prefix, folder in (("sam2.1_hiera_", "sam2.1"), ("sam2_hiera_", "sam2"))
    for size, short in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
}


def _manifest(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("name", [*CONFIGS, "test_sam2"])
def test_manifest_equals_official(name, monkeypatch):
    """Our keys and shapes are the official model's, less the video modules, and every official
    key we do not have is one of those."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    spec = MODEL_SPECS[name]
    # Hiera computes its drop-path rates with `.item()`, which the meta device cannot do.
    monkeypatch.setattr(torch, "linspace", functools.partial(torch.linspace, device="cpu"))
    with torch.device("meta"):
        ours = _manifest(spec.build().state_dict())
        if name == "test_sam2":
            official = build_official_sam2(spec)
        else:
            official = instantiate(OmegaConf.load(Path(sam2.__file__).parent / "configs" / CONFIGS[name]).model)
        official = _manifest(official.state_dict())
    assert ours == {k: v for k, v in official.items() if not k.startswith(spec.ignored_keys)}
    assert set(official) - set(ours)  # the official file does carry video keys


def _sharpen_single_mask_token(model: torch.nn.Module) -> torch.nn.Module:
    """Scales the single-mask token's hypernetwork output 50x: its logits then pass the +-32 clamp
    and its stability straddles the 0.98 threshold, so the dynamic fallback to the multimask
    outputs is taken for some prompts and not for others (`test_dynamic_multimask`)."""
    with torch.no_grad():
        last = model.sam_mask_decoder.output_hypernetworks_mlps[0].layers[-1]
        last.weight.mul_(50.0)
        last.bias.mul_(50.0)
    return model


@pytest.fixture(scope="module")
def official_model():
    return _sharpen_single_mask_token(randomize(build_official_sam2(MODEL_SPECS["test_sam2"]), seed=0))


@pytest.fixture(scope="module")
def checkpoint(official_model, tmp_path_factory) -> Path:
    """The official model's weights (video modules included) in the official `{"model": ...}` file format."""
    path = tmp_path_factory.mktemp("ckpt") / "sam2_test.pt"
    torch.save({"model": official_model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def pair(official_model, checkpoint):
    """(official predictor, our predictor) on one non-square image, and the official decoder's
    last object scores (the official predictor does not return them)."""
    image = random_image(np.random.default_rng(1), 90, 150)
    official = official_predictor(official_model)
    official.set_image(image)
    captured = {}
    official_model.sam_mask_decoder.register_forward_hook(lambda m, i, out: captured.update(object_scores=out[3]))
    ours = SamPredictor(build_sam("test_sam2", checkpoint), device="cpu")
    ours.set_image(image)
    return official, ours, captured


def _official(pair, points=None, labels=None, boxes=None, mask_input=None, multimask=True):
    """The official predictor on a batch of prompts (its `predict` path, batch dimension kept):
    upsampled logits, IoU, low-res logits and object scores."""
    official, _, captured = pair
    mask_input, coords, labels, boxes = official._prep_prompts(points, labels, boxes, mask_input, True)
    masks, iou, low = official._predict(coords, labels, boxes, mask_input, multimask, return_logits=True)
    return masks.numpy(), iou.numpy(), low.numpy(), captured["object_scores"][:, 0].numpy()


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


def _check(pair, prompts, multimask):
    """Ours against the official on `prompts`: low-res logits, IoU, object scores, upsampling, masks."""
    official, ours, _ = pair
    masks_ref, iou_ref, low_ref, obj_ref = _official(pair, multimask=multimask, **prompts)
    out = ours.predict(**prompts, multimask=multimask)
    assert out.low_res_logits.shape == low_ref.shape
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.object_scores, obj_ref, atol=TOL, rtol=0)
    # The same upsampling of the same logits, to compare the postprocessing alone (float32
    # rounding of logits up to 32 in magnitude: relative).
    upsampled = ours.upsample(torch.as_tensor(low_ref))
    expected = official._transforms.postprocess_masks(torch.as_tensor(low_ref), official._orig_hw[-1])
    np.testing.assert_allclose(upsampled.numpy(), expected.numpy(), atol=TOL, rtol=TOL)
    confident = np.abs(masks_ref) >= 1e-3
    np.testing.assert_array_equal(out.masks[confident], masks_ref[confident] > 0)
    return out, low_ref


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_official(pair, case, multimask):
    out, _ = _check(pair, CASES[case], multimask)
    fraction_on = out.masks.mean(axis=(2, 3))
    assert ((fraction_on > 0.05) & (fraction_on < 0.95)).any()  # the weights give real masks


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_input_matches_official(pair, multimask):
    _, ours, _ = pair
    first = ours.predict(points=[[60.0, 40.0]], labels=[1])
    best = first.low_res_logits[:, first.best()[0]][:, None]  # [1, 1, S, S]
    _check(pair, dict(points=[[[60.0, 40.0], [20.0, 70.0]]], labels=[[1, 0]], mask_input=best), multimask)
    _check(pair, dict(mask_input=best), multimask)


def test_dynamic_multimask(pair):
    """Single-mask output: token 0 where its mask is stable, else the best multimask output; both
    happen among these prompts."""
    official = pair[0]
    rng = np.random.default_rng(0)
    prompts = dict(points=np.stack([rng.uniform(0, 150, 8), rng.uniform(0, 90, 8)], 1)[:, None], labels=np.ones((8, 1)))
    _, low_ref = _check(pair, prompts, multimask=False)
    decoder = official.model.sam_mask_decoder
    decoder.dynamic_multimask_via_stability = False
    try:
        _, _, token0, _ = _official(pair, multimask=False, **prompts)
    finally:
        decoder.dynamic_multimask_via_stability = True
    fell_back = np.abs(token0 - low_ref).max(axis=(1, 2, 3)) > 0
    assert fell_back.any() and not fell_back.all()


def test_low_res_logits_clamped(pair):
    """Logits past +-32 are clamped in `low_res_logits`, as the official predictor does, while the
    masks come from the unclamped logits (also as it does)."""
    official, ours, _ = pair
    layers = [m.sam_mask_decoder.output_hypernetworks_mlps[0].layers[-1] for m in (official.model, ours.model)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(4.0)
            layer.bias.mul_(4.0)
    try:
        out, low_ref = _check(pair, CASES["batch of points"], multimask=False)
    finally:
        with torch.no_grad():
            for layer in layers:
                layer.weight.div_(4.0)
                layer.bias.div_(4.0)
    assert np.abs(low_ref).max() == 32.0 and np.abs(out.low_res_logits).max() == 32.0


def test_encoder_input_matches_official(pair):
    official, ours, _ = pair
    image = random_image(np.random.default_rng(4), 70, 40)
    ours_input = ours.frame.encoder_input(image, torch.device("cpu"))
    np.testing.assert_allclose(ours_input.numpy(), official._transforms(image).numpy(), atol=1e-6, rtol=0)


def test_features_match_official(pair):
    official, ours, _ = pair
    image = random_image(np.random.default_rng(1), 90, 150)  # the pair's image
    with torch.inference_mode():
        features = ours.model.encode(ours.frame.encoder_input(image, torch.device("cpu"))[None])
    np.testing.assert_allclose(ours.features.numpy(), official._features["image_embed"].numpy(), atol=TOL, rtol=0)
    s0, s1 = official._features["high_res_feats"]  # [1, C/8, 4h, 4w], [1, C/4, 2h, 2w]
    b, c8, h4, w4 = s0.shape
    h, w, c4 = h4 // 4, w4 // 4, s1.shape[1]
    # The decoder's token layouts: rows (r, c, i, j) for pixel (2r + i, 2c + j) of the 2h x 2w grid.
    s0 = s0.reshape(b, c8, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(b, -1, 2, 2, c8)
    s1 = s1.reshape(b, c4, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, c4)
    np.testing.assert_allclose(features["high_res_s0"].numpy(), s0.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(features["high_res_s1"].numpy(), s1.numpy(), atol=TOL)


def test_video_keys_ignored_image_keys_strict(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["model"]
    assert any(k.startswith("memory_attention.") for k in state)
    missing = {k: v for k, v in state.items() if k != "sam_mask_decoder.conv_s0.weight"}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"'test_sam2'.*missing keys: sam_mask_decoder\.conv_s0\.weight"):
        build_sam("test_sam2", tmp_path / "missing.pt")
    torch.save({"model": {**state, "extra.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        build_sam("test_sam2", tmp_path / "extra.pt")


def test_specs_have_official_urls():
    for name in CONFIGS:
        url = MODEL_SPECS[name].checkpoint.url
        date = "092824" if name.startswith("sam2.1") else "072824"
        assert url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{name}.pt"


@pytest.mark.slow
def test_full_size_matches_official(tmp_path):
    """sam2.1_hiera_tiny at 1024 px (a few seconds on CPU): features and a few prompts."""
    official_model = randomize(build_official_sam2(MODEL_SPECS["sam2.1_hiera_tiny"]), seed=3)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": official_model.state_dict()}, path)
    image = random_image(np.random.default_rng(2), 300, 200)
    official = official_predictor(official_model)
    official.set_image(image)
    captured = {}
    official_model.sam_mask_decoder.register_forward_hook(lambda m, i, out: captured.update(object_scores=out[3]))
    ours = SamPredictor(build_sam("sam2.1_hiera_tiny", path), device="cpu")
    ours.set_image(image)
    np.testing.assert_allclose(ours.features.numpy(), official._features["image_embed"].numpy(), atol=TOL, rtol=0)
    prompts = dict(points=[[[50.0, 60.0], [150.0, 250.0]]], labels=[[1, 0]], boxes=[[10.0, 20.0, 180.0, 290.0]])
    for multimask in (True, False):
        _, iou_ref, low_ref, obj_ref = _official((official, ours, captured), multimask=multimask, **prompts)
        out = ours.predict(**prompts, multimask=multimask)
        np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
        np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)
        np.testing.assert_allclose(out.object_scores, obj_ref, atol=TOL, rtol=0)
