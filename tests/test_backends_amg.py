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


@pytest.mark.parametrize("extra", [{}, CROPS], ids=["full image", "crops"])
def test_sam2_matches_official_generator(tmp_path, extra):
    pytest.importorskip("sam2")
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from .official_sam2 import build_official_sam2

    model = randomize(build_official_sam2(MODEL_SPECS["test_sam2"]), seed=0)
    path = tmp_path / "sam2.pt"
    torch.save({"model": model.state_dict()}, path)
    settings = {**LOWERED, **extra}
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    side = model.image_size // 4  # the official predictor assumes 1024 px
    generator.predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    _compare(generator, "test_sam2", path, settings, random_image(np.random.default_rng(3), 96, 128))
