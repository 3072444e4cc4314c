"""Our automatic mask generator on each family against that family's official generator, same random
weights (float32, CPU): same masks, one to one.

Random weights make masks that barely depend on the point, so box NMS would merge them all: the
thresholds are lowered and NMS is off, as in `test_amg.py`, so that every filter's decisions are
compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtasks import SamPredictor, build_sam
from samtasks.build import MODEL_SPECS
from samtasks.tasks.amg import AutomaticMaskGenerator

from .conftest import random_image, randomize
from .test_amg import LOWERED, _match

CROPS = {"crop_n_layers": 1, "crop_n_points_downscale_factor": 2}


def _compare(official_generator, name: str, checkpoint, settings: dict, image: np.ndarray) -> None:
    ref = [r["segmentation"] for r in official_generator.generate(image)]
    predictor = SamPredictor(build_sam(name, checkpoint), device="cpu")
    ours = AutomaticMaskGenerator.from_preset(predictor, "official", **settings).generate(image)
    assert len(ref) > 3
    assert len(ours) == len(ref)
    assert min(_match(ours.masks(), np.stack(ref))) >= 0.99


def _saved(model: torch.nn.Module, path, wrap: str | None = None):
    state = model.state_dict()
    torch.save({wrap: state} if wrap else state, path)
    return path


@pytest.mark.parametrize("extra", [{}, CROPS], ids=["full image", "crops"])
def test_sam2_matches_official_generator(tmp_path, extra):
    pytest.importorskip("sam2")
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from .official_sam2 import build_official_sam2

    model = randomize(build_official_sam2(MODEL_SPECS["test_sam2"]), seed=0)
    path = _saved(model, tmp_path / "sam2.pt", wrap="model")
    settings = {**LOWERED, **extra}
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    side = model.image_size // 4  # the official predictor assumes 1024 px
    generator.predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    _compare(generator, "test_sam2", path, settings, random_image(np.random.default_rng(3), 96, 128))


@pytest.mark.slow  # the official TinyViT runs only at 1024 px; the generator is the one every family shares
def test_mobile_sam_matches_official_generator(tmp_path):
    mobile_sam = pytest.importorskip("mobile_sam")
    from .official_hq import build_official_mobile_sam, official_sizes

    spec = official_sizes(MODEL_SPECS["test_mobile_sam"])  # the official TinyViT's fixed sizes
    model = randomize(build_official_mobile_sam(spec), seed=0)
    generator = mobile_sam.SamAutomaticMaskGenerator(model, output_mode="binary_mask", **LOWERED)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODEL_SPECS, "test_mobile_sam", spec)
        image = random_image(np.random.default_rng(3), 96, 128)
        _compare(generator, "test_mobile_sam", _saved(model, tmp_path / "m.pt"), LOWERED, image)


@pytest.mark.parametrize("extra", [{}, CROPS], ids=["full image", "crops"])
def test_hq_matches_official_generator(tmp_path, extra):
    """SAM-HQ gives one fused mask per point with multimask output, in both generators."""
    sam_hq = pytest.importorskip("segment_anything_hq")
    from .official_hq import build_official_hq

    model = randomize(build_official_hq(MODEL_SPECS["test_hq"]), seed=0)
    settings = {**LOWERED, **extra}
    generator = sam_hq.SamAutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    image = random_image(np.random.default_rng(3), 96, 128)
    _compare(generator, "test_hq", _saved(model, tmp_path / "hq.pth"), settings, image)


def test_efficientvit_sam_matches_official_generator(tmp_path):
    pytest.importorskip("efficientsam")
    from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

    from .official_efficientvit import build_official

    model = randomize(build_official(MODEL_SPECS["test_efficientvit_sam"]), seed=0)
    generator = EfficientViTSamAutomaticMaskGenerator(model, output_mode="binary_mask", **LOWERED)
    path = _saved(model, tmp_path / "evit.pt", wrap="state_dict")
    _compare(generator, "test_efficientvit_sam", path, LOWERED, random_image(np.random.default_rng(3), 96, 128))
