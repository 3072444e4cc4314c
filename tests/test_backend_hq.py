"""SAM-HQ (`hq_vit_b/l/h`, Light HQ-SAM `hq_vit_tiny`, `test_hq`, `test_hq_tiny`) against the official
model on the same random weights (float32, CPU).

The oracle is PyPI `segment-anything-hq` 0.3 (module `segment_anything_hq`), published by the authors
from github.com/SysCV/sam-hq. Before trusting it, every file of the installed package was compared
with `diff` against the same path under `segment_anything/` in the upstream repository at its newest
commit fb181f8 (2025-06-30): all byte-identical except `build_sam.py`, which equals upstream's
f9bf891 (2023-07-16, "Light HQ-SAM"); the two later upstream commits to it (ebd8eea, 3cc639a) only
pass `map_location` to `torch.load` when reading a checkpoint. The model code is upstream's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS
from samtasks.modeling.mobile_sam import MobileSamSpec

from .conftest import random_image, randomize
from .official_hq import PROMPT_CASES, build_official_hq, official_predict, official_predictor, official_sizes

pytest.importorskip("segment_anything_hq")

TOL = 1e-4


def _manifest(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_tiny", "test_hq", "test_hq_tiny"])
def test_manifest_equals_official(name):
    spec = official_sizes(MODEL_SPECS[name])
    with torch.device("meta"):
        ours = _manifest(spec.build())
    on_meta = not isinstance(spec.sam, MobileSamSpec)  # TinyViT does not build on meta
    with torch.device("meta" if on_meta else "cpu"):
        official = _manifest(build_official_hq(spec))
    kept = {k: v for k, v in official.items() if not k.startswith(spec.ignored_keys)}
    assert len(official) - len(kept) == (0 if on_meta else 4)  # TinyViT's norm_head and head
    assert ours == kept


def test_checkpoint_with_pixel_statistics_loads(tmp_path):
    official = build_official_hq(MODEL_SPECS["test_hq"])
    state = official.state_dict() | {"pixel_mean": torch.zeros(3, 1, 1), "pixel_std": torch.ones(3, 1, 1)}
    torch.save(state, tmp_path / "sam_hq.pth")
    model = build_sam("test_hq", tmp_path / "sam_hq.pth")
    assert torch.equal(model.mask_decoder.hf_token.weight, state["mask_decoder.hf_token.weight"])


def _pair(name: str, seed: int, tmp_path, image: np.ndarray):
    """(official predictor, our predictor) on `image` for spec `name` at `official_sizes`, our model
    loaded by `build_sam` from the official model's random weights saved as a plain state dict (the
    format of `sam_hq_vit_*.pth`)."""
    spec = official_sizes(MODEL_SPECS[name])
    official = randomize(build_official_hq(spec), seed=seed)
    path = tmp_path / f"{name}.pth"
    torch.save(official.state_dict(), path)
    reference = official_predictor(official)
    reference.set_image(image)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODEL_SPECS, name, spec)
        ours = SamPredictor(build_sam(name, path), device="cpu")
    ours.set_image(image)
    return reference, ours


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """SAM-HQ on a small ViT (every case runs on it)."""
    return _pair("test_hq", 0, tmp_path_factory.mktemp("hq"), random_image(np.random.default_rng(1), 90, 150))


def _check(official, ours, prompts, multimask, hq_token_only):
    ours.model.hq_token_only = hq_token_only
    _, iou_ref, low_ref = official_predict(official, multimask=multimask, hq_token_only=hq_token_only, **prompts)
    out = ours.predict(**prompts, multimask=multimask, return_masks=False)
    assert out.low_res_logits.shape == low_ref.shape == (len(iou_ref), 1, *ours.mask_input_size)
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)


def test_image_embedding_matches_official(pair):
    official, ours = pair
    np.testing.assert_allclose(ours.features.numpy(), official.features.numpy(), atol=TOL, rtol=0)
    assert ours.num_multimask_outputs == 1


@pytest.mark.parametrize("hq_token_only", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_matches_official(pair, case, multimask, hq_token_only):
    _check(*pair, PROMPT_CASES[case], multimask, hq_token_only)


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_mask_input_matches_official(pair, hq_token_only):
    official, ours = pair
    ours.model.hq_token_only = False
    first = ours.predict(points=[[60.0, 40.0]], labels=[1], return_masks=False)
    prompts = dict(points=[[[60.0, 40.0], [20.0, 70.0]]], labels=[[1, 0]], mask_input=first.low_res_logits)
    for multimask in (True, False):
        _check(official, ours, prompts, multimask, hq_token_only)


def test_light_hq_matches_official(tmp_path):
    """Light HQ-SAM's path (TinyViT's early feature) on a small TinyViT: fewer cases, its decoder is
    256 wide at a 64x64 grid, as the official TinyViT requires."""
    official, ours = _pair("test_hq_tiny", 1, tmp_path, random_image(np.random.default_rng(1), 90, 150))
    np.testing.assert_allclose(ours.features.numpy(), official.features.numpy(), atol=TOL, rtol=0)
    for multimask, hq_token_only in ((True, False), (False, True)):  # all four on the small grid: test_matches_official
        _check(official, ours, PROMPT_CASES["box and points"], multimask, hq_token_only)
    first = ours.predict(**PROMPT_CASES["box"], return_masks=False)
    _check(official, ours, dict(**PROMPT_CASES["box"], mask_input=first.low_res_logits), True, False)


def test_light_hq_tiny_spec_runs_small():
    model = build_sam("test_hq_tiny")
    with torch.inference_mode():
        features = model.encode(torch.zeros(2, 3, 128, 128))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "image_embeddings": (2, 32, 8, 8),
        "hq_features": (2, 4, 32, 32),
    }
    predictor = SamPredictor(model, device="cpu")
    predictor.set_image(random_image(np.random.default_rng(0), 90, 150))
    out = predictor.predict(**PROMPT_CASES["box and points"])
    assert out.low_res_logits.shape == (1, 1, 32, 32) and out.masks.shape == (1, 1, 90, 150)


def test_hq_token_only_and_multimask_change_the_mask(pair):
    """The knobs reach the decoder: the HQ mask alone differs from the fused one, and the fused
    multimask mask (best of SAM's tokens 1..3) from the single-mask one (token 0)."""
    _, ours = pair
    outputs = {}
    for hq_token_only in (False, True):
        ours.model.hq_token_only = hq_token_only
        for multimask in (False, True):
            out = ours.predict(**PROMPT_CASES["box and points"], multimask=multimask, return_masks=False)
            outputs[hq_token_only, multimask] = out.low_res_logits
    ours.model.hq_token_only = False
    assert not np.allclose(outputs[False, False], outputs[True, False], atol=1e-3)
    assert not np.allclose(outputs[False, False], outputs[False, True], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hq_vit_b", "hq_vit_tiny"])
def test_full_size_matches_official(name, tmp_path):
    """Official architectures (ViT-B, about a minute on CPU; TinyViT): encoder at 1024 px, a few prompts."""
    official, ours = _pair(name, 3, tmp_path, random_image(np.random.default_rng(2), 300, 200))
    np.testing.assert_allclose(ours.features.numpy(), official.features.numpy(), atol=TOL, rtol=0)
    prompts = dict(points=[[[50.0, 60.0], [150.0, 250.0]]], labels=[[1, 0]], boxes=[[10.0, 20.0, 180.0, 290.0]])
    for multimask in (True, False):
        _check(official, ours, prompts, multimask, hq_token_only=False)
    _check(official, ours, prompts, True, hq_token_only=True)
