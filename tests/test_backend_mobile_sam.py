"""MobileSAM (`mobile_sam`, `test_mobile_sam`) against the official model on the same random weights
(float32, CPU).

The oracle is PyPI `mobilesam-mirror` 1.0.0 (module `mobile_sam`), a packaging mirror of the official
repository github.com/ChaoningZhang/MobileSAM. Before trusting it, every file of the installed
package (`__init__`, `build_sam`, `predictor`, `automatic_mask_generator`, `modeling/*`, `utils/*`)
was compared with `diff` against the same path under `mobile_sam/` in the upstream repository at its
newest commit 34bbbfd (2024-11-20): all byte-identical, so the mirror's model code is upstream's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS

from .conftest import random_image, randomize
from .official_hq import (
    PROMPT_CASES,
    build_official_mobile_sam,
    official_predict,
    official_predictor,
    official_sizes,
)

pytest.importorskip("mobile_sam")

TOL = 1e-4


def _manifest(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["mobile_sam", "test_mobile_sam"])
def test_manifest_equals_official(name):
    spec = official_sizes(MODEL_SPECS[name])
    with torch.device("meta"):
        ours = _manifest(spec.build())
    official = _manifest(build_official_mobile_sam(spec))  # TinyViT does not build on meta
    ignored = {k for k in official if k.startswith(spec.ignored_keys)}
    assert ignored == {k for k in official if k.startswith(("image_encoder.norm_head", "image_encoder.head"))}
    assert ours == {k: v for k, v in official.items() if k not in ignored}


def _pair(name: str, seed: int, tmp_path, image: np.ndarray):
    """(official predictor, our predictor) on `image` for spec `name` at `official_sizes`, our model
    loaded by `build_sam` from the official model's random weights saved as a plain state dict (the
    format of `mobile_sam.pt`)."""
    spec = official_sizes(MODEL_SPECS[name])
    official = randomize(build_official_mobile_sam(spec), seed=seed)
    path = tmp_path / "mobile_sam.pt"
    torch.save(official.state_dict(), path)
    reference = official_predictor(official)
    reference.set_image(image)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODEL_SPECS, name, spec)
        ours = SamPredictor(build_sam(name, path), device="cpu")
    ours.set_image(image)
    return reference, ours


def test_tiny_spec_runs_small():
    predictor = SamPredictor(build_sam("test_mobile_sam"), device="cpu")
    predictor.set_image(random_image(np.random.default_rng(0), 90, 150))
    out = predictor.predict(**PROMPT_CASES["box and points"])
    assert predictor.features.shape == (1, 32, 8, 8)
    assert out.low_res_logits.shape == (1, 3, 32, 32) and out.masks.shape == (1, 3, 90, 150)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    image = random_image(np.random.default_rng(1), 90, 150)
    return _pair("test_mobile_sam", 0, tmp_path_factory.mktemp("mobile_sam"), image)


def test_image_embedding_matches_official(pair):
    official, ours = pair
    np.testing.assert_allclose(ours.features.numpy(), official.features.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_matches_official(pair, case, multimask):
    official, ours = pair
    prompts = PROMPT_CASES[case]
    _, iou_ref, low_ref = official_predict(official, multimask=multimask, **prompts)
    out = ours.predict(**prompts, multimask=multimask, return_masks=False)
    assert out.low_res_logits.shape == low_ref.shape == (len(iou_ref), 3 if multimask else 1, 256, 256)
    np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)


def test_mask_input_matches_official(pair):
    official, ours = pair
    first = ours.predict(points=[[60.0, 40.0]], labels=[1])
    best = first.low_res_logits[:, first.best()[0]][:, None]  # [1, 1, S, S]
    prompts = dict(points=[[[60.0, 40.0], [20.0, 70.0]]], labels=[[1, 0]], mask_input=best)
    for multimask in (True, False):
        _, iou_ref, low_ref = official_predict(official, multimask=multimask, **prompts)
        out = ours.predict(**prompts, multimask=multimask)
        np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
        np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)


@pytest.mark.slow
def test_full_size_matches_official(tmp_path):
    """The official MobileSAM architecture: encoder at 1024 px and a few prompts."""
    official, ours = _pair("mobile_sam", 3, tmp_path, random_image(np.random.default_rng(2), 300, 200))
    np.testing.assert_allclose(ours.features.numpy(), official.features.numpy(), atol=TOL, rtol=0)
    prompts = dict(points=[[[50.0, 60.0], [150.0, 250.0]]], labels=[[1, 0]], boxes=[[10.0, 20.0, 180.0, 290.0]])
    for multimask in (True, False):
        _, iou_ref, low_ref = official_predict(official, multimask=multimask, **prompts)
        out = ours.predict(**prompts, multimask=multimask)
        np.testing.assert_allclose(out.low_res_logits, low_ref, atol=TOL, rtol=0)
        np.testing.assert_allclose(out.iou_scores, iou_ref, atol=TOL, rtol=0)
