"""EfficientViT-SAM against the official implementation on the same random weights (float32, CPU).

The oracle is PyPI `efficientsam` 1.0.0, a repackaging of mit-han-lab/efficientvit. Before trusting
it, its model code was diffed against upstream (github.com/mit-han-lab/efficientvit at de7d773,
2025-09-05) after renaming the package prefix `efficientsam.` to `efficientvit.`:

- `models/efficientvit/backbone.py`, `models/nn/ops.py`, `models/nn/act.py`, `models/utils/list.py`,
  `models/utils/network.py`: identical.
- `models/efficientvit/sam.py`: identical but for the imports (upstream imports the official
  `segment_anything`; the package vendors a copy as `efficientsam.segment_anything`) and the line
  wrapping of one assert.
- `models/nn/norm.py`: lacks upstream's Triton RMS norm and `reset_bn` (neither is used by SAM).
- `sam_model_zoo.py`: the same builders and norm eps (1e-6); only the default local checkpoint
  paths differ.

The vendored `efficientsam.segment_anything` was diffed against the `segment-anything` 1.0 package:
`modeling/` is identical but for comments; elsewhere the differences are type annotations, the AMG's
category tensors created on the boxes' device, and a shape-index fix in the unused
`apply_image_torch`. So the oracle's network, preprocessing and postprocessing are upstream's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS

from .conftest import random_image, randomize

pytest.importorskip("efficientsam")

from efficientsam.models.efficientvit import sam as evit
from efficientsam.models.utils import load_state_dict_from_file
from efficientsam.sam_model_zoo import create_efficientvit_sam_model

from .official_efficientvit import build_official

TOL = 1e-4
OFFICIAL = [name for name in MODEL_SPECS if name.startswith("efficientvit_sam_")]
TINY = MODEL_SPECS["test_efficientvit_sam"]
# An XL-style tiny network (six stages, 3x3 aggregation, fused blocks in stage 3, encoder and prompt
# frames equal); its stage 4 takes the official linear attention form, stage 5 the quadratic one.
TINY_XL = dataclasses.replace(
    TINY,
    width_list=(8, 8, 16, 16, 32, 64),
    depth_list=(0, 1, 1, 1, 1, 1),
    block_list=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
    expand_list=(1, 4, 4, 4, 4, 6),
    fewer_norm_list=(False, False, False, False, True, True),
    neck_stages=(5, 4, 3),
    neck_expand_ratio=4,
    encoder_size=256,
)


def _manifest(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


@pytest.mark.parametrize("name", OFFICIAL)
def test_spec_equals_official_builder(name):
    """Our spec's network has the key -> shape manifest, frame sizes and norm eps of the official
    zoo's model of the same name."""
    spec = MODEL_SPECS[name]
    with torch.device("meta"):
        ours = spec.build()
        official = create_efficientvit_sam_model(name.replace("_", "-"), pretrained=False)
    assert _manifest(ours.state_dict()) == _manifest(official.state_dict())
    assert (spec.prompt_size, spec.encoder_size) == official.image_size
    ours_modules = dict(ours.named_modules())
    eps = {n: m.eps for n, m in official.named_modules() if hasattr(m, "eps")}
    assert eps == {n: ours_modules[n].eps for n in eps}


@pytest.mark.parametrize(
    "spec", [TINY, TINY_XL, *(MODEL_SPECS[n] for n in OFFICIAL)], ids=["tiny", "tiny_xl", *OFFICIAL]
)
def test_manifest_equals_official(spec):
    with torch.device("meta"):
        ours = spec.build().state_dict()
        official = build_official(spec).state_dict()
    assert _manifest(ours) == _manifest(official)


@pytest.mark.parametrize("name", ["efficientvit_sam_l0", "efficientvit_sam_xl0"])
@pytest.mark.parametrize("shape", [(300, 200), (512, 300), (1024, 1024), (37, 1500)])
def test_encoder_input_matches_official_transform(name, shape):
    """The official transform (torchvision resize of a PIL image, ToTensor, Normalize, SamPad),
    including images whose long side already is the encoder size (not resized there)."""
    spec = MODEL_SPECS[name]
    with torch.device("meta"):
        official = create_efficientvit_sam_model(name.replace("_", "-"), pretrained=False)
    image = random_image(np.random.default_rng(3), *shape)
    expected = official.transform(image)
    actual = spec.frame.encoder_input(image, torch.device("cpu"))
    assert actual.shape == expected.shape == (3, spec.encoder_size, spec.encoder_size)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=0)


def _checkpoint(model: torch.nn.Module, path):
    """Saves `model` as the official trainer does (`{"state_dict": ...}`)."""
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def _pair(spec, name: str | None, seed: int, image: np.ndarray, tmp_path):
    """(official predictor, our predictor) on `image`, with the same seeded random weights read from
    one official-format file by each side's own loader."""
    path = _checkpoint(randomize(build_official(spec), seed=seed), tmp_path / "evit.pt")
    official = build_official(spec)
    official.load_state_dict(load_state_dict_from_file(str(path)))
    reference = evit.EfficientViTSamPredictor(official)
    reference.set_image(image)
    if name is None:
        model = spec.build()
        model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    else:
        model = build_sam(name, path)
    ours = SamPredictor(model, device="cpu")
    ours.set_image(image)
    return reference, ours


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    image = random_image(np.random.default_rng(1), 90, 150)
    return _pair(TINY, "test_efficientvit_sam", 0, image, tmp_path_factory.mktemp("evit"))


def _official(predictor, points=None, labels=None, boxes=None, mask_input=None, multimask=True):
    """The official predictor on a batch of prompts, through its `predict_torch` path."""
    kwargs = {}
    if points is not None:
        kwargs["point_coords"] = torch.as_tensor(predictor.apply_coords(np.asarray(points)), dtype=torch.float)
        kwargs["point_labels"] = torch.as_tensor(np.asarray(labels), dtype=torch.int)
    if boxes is not None:
        kwargs["boxes"] = torch.as_tensor(predictor.apply_boxes(np.asarray(boxes)), dtype=torch.float)
    if mask_input is not None:
        kwargs["mask_input"] = torch.as_tensor(mask_input, dtype=torch.float)
    masks, iou, low = predictor.predict_torch(multimask_output=multimask, return_logits=True, **kwargs)
    return masks.numpy(), iou.numpy(), low.numpy()


def _assert_matches(reference, ours, prompts, multimask):
    masks_ref, iou_ref, low_ref = _official(reference, multimask=multimask, **prompts)
    out = ours.predict(**prompts, multimask=multimask)
    assert out.low_res_logits.shape == low_ref.shape
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(ours.upsample(torch.as_tensor(low_ref)).numpy(), masks_ref, atol=TOL, rtol=0)
    confident = np.abs(masks_ref) >= 1e-3
    np.testing.assert_array_equal(out.masks[confident], masks_ref[confident] > 0)


CASES = {
    "one point": dict(points=[[[40.0, 30.0]]], labels=[[1]]),
    "box": dict(boxes=[[20.0, 10.0, 120.0, 80.0]]),
    "box and points": dict(points=[[[60.0, 40.0], [30.0, 20.0]]], labels=[[1, 0]], boxes=[[20.0, 10.0, 120.0, 80.0]]),
    "batch of points": dict(
        points=[[[5.0, 5.0], [50.0, 60.0]], [[140.0, 80.0], [70.0, 10.0]], [[75.0, 45.0], [0.0, 0.0]]],
        labels=[[1, 0], [1, 1], [1, -1]],
    ),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_official(pair, case, multimask):
    _assert_matches(*pair, CASES[case], multimask)


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_input_matches_official(pair, multimask):
    reference, ours = pair
    first = ours.predict(points=[[60.0, 40.0]], labels=[1])
    best = first.low_res_logits[:, first.best()[0]][:, None]  # [1, 1, S, S]
    prompts = dict(points=[[[60.0, 40.0], [20.0, 70.0]]], labels=[[1, 0]], mask_input=best)
    _assert_matches(reference, ours, prompts, multimask)


def test_image_embedding_matches_official(pair):
    reference, ours = pair
    assert ours.features.shape == (1, TINY.prompt_embed_dim, TINY.embedding_size, TINY.embedding_size)
    np.testing.assert_allclose(ours.features.numpy(), reference.features.numpy(), atol=TOL, rtol=0)


def test_frames_of_tiny_spec(pair):
    """Encoder input at 128 px, prompts and masks in the 256 frame, as the official model sees them."""
    reference, ours = pair
    assert TINY.encoder_size < TINY.prompt_size
    assert ours.frame.resized_shape((90, 150), ours.frame.prompt_size) == reference.input_size
    assert ours.mask_input_size == (TINY.low_res_size, TINY.low_res_size)


def test_tiny_xl_matches_official(tmp_path):
    image = random_image(np.random.default_rng(4), 120, 70)
    reference, ours = _pair(TINY_XL, None, 5, image, tmp_path)
    np.testing.assert_allclose(ours.features.numpy(), reference.features.numpy(), atol=TOL, rtol=0)
    _assert_matches(reference, ours, dict(points=[[[30.0, 50.0], [10.0, 100.0]]], labels=[[1, 0]]), True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientvit_sam_l0", "efficientvit_sam_xl0"])
def test_full_size_matches_official(name, tmp_path):
    """Full-size L0 (512 px encoder) and XL0 (1024 px) through the official zoo's model."""
    spec = MODEL_SPECS[name]
    official = randomize(create_efficientvit_sam_model(name.replace("_", "-"), pretrained=False), seed=6)
    path = _checkpoint(official, tmp_path / f"{name}.pt")
    image = random_image(np.random.default_rng(7), 300, 420)
    reference = evit.EfficientViTSamPredictor(official.eval())
    reference.set_image(image)
    ours = SamPredictor(build_sam(name, path), device="cpu")
    ours.set_image(image)
    assert ours.features.shape == (1, 256, spec.embedding_size, spec.embedding_size)
    np.testing.assert_allclose(ours.features.numpy(), reference.features.numpy(), atol=TOL, rtol=0)
    prompts = dict(points=[[[50.0, 60.0], [350.0, 250.0]]], labels=[[1, 0]], boxes=[[10.0, 20.0, 380.0, 290.0]])
    for multimask in (True, False):
        _assert_matches(reference, ours, prompts, multimask)
