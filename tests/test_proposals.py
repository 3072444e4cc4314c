"""Object proposals: ranking, cut, presets, and the generator on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from samtasks import SamPredictor, build_sam
from samtasks.structures import GeneratedMasks
from samtasks.tasks.proposals import PRESETS, ProposalGenerator, ProposalSettings, rank_masks
from samtasks.utils.masks import encode_rle

from .conftest import random_image


def _masks(n: int) -> GeneratedMasks:
    rng = np.random.default_rng(0)
    return GeneratedMasks(
        image_size=(8, 8),
        rles=encode_rle(rng.random((n, 8, 8)) > 0.5),
        boxes=np.zeros((n, 4), np.float32),
        predicted_iou=rng.random(n).astype(np.float32),
        stability_score=rng.random(n).astype(np.float32),
        points=np.zeros((n, 2), np.float32),
        crop_boxes=np.zeros((n, 4), np.int64),
    )


def test_quality_ranking_is_mean_of_iou_and_stability_and_cut():
    masks = _masks(30)
    out = rank_masks(masks, ProposalSettings(max_proposals=10))
    quality = (masks.predicted_iou.astype(np.float64) + masks.stability_score) / 2
    expected = np.argsort(-quality)[:10]
    assert len(out) == 10
    np.testing.assert_allclose(out.scores, quality[expected], rtol=1e-6)
    assert out.masks.rles == [masks.rles[i] for i in expected]
    assert np.all(np.diff(out.scores) <= 0)


def test_random_ranking_is_seeded():
    masks = _masks(30)
    a = rank_masks(masks, ProposalSettings(ranking="random", seed=3, max_proposals=5))
    b = rank_masks(masks, ProposalSettings(ranking="random", seed=3, max_proposals=5))
    c = rank_masks(masks, ProposalSettings(ranking="random", seed=4, max_proposals=5))
    assert a.masks.rles == b.masks.rles and a.masks.rles != c.masks.rles


def test_presets_follow_the_paper():
    lvis = PRESETS["proposals-lvis"].amg_settings()
    assert (lvis.points_per_side, lvis.box_nms_thresh, lvis.crop_n_layers) == (64, 0.9, 0)
    assert lvis.pred_iou_thresh == 0 and lvis.stability_score_thresh == 0
    single = PRESETS["proposals-single-output"]
    amg = single.amg_settings()
    assert (amg.points_per_side, amg.box_nms_thresh, amg.multimask_output) == (128, 0.95, False)
    assert single.ranking == "random" and single.max_proposals == 1000


def test_settings_errors_name_the_knob():
    with pytest.raises(ValueError, match="points_per_sid"):
        ProposalSettings(amg={"points_per_sid": 3})
    with pytest.raises(ValueError, match="ranking"):
        ProposalSettings(ranking="best")
    with pytest.raises(ValueError, match="unknown ProposalSettings preset"):
        ProposalGenerator.from_preset(None, "nope")


def test_generator_end_to_end(tiny_checkpoint, rng):
    predictor = SamPredictor(build_sam("tiny", tiny_checkpoint))
    image = random_image(rng, 90, 120)
    multi = ProposalGenerator.from_preset(
        predictor, "proposals-lvis", amg={"points_per_side": 4, "box_nms_thresh": 1.0}
    )
    out = multi.generate(image)
    assert 0 < len(out) <= 48 and np.all(np.diff(out.scores) <= 0)
    results = out.results(image_id=7)
    assert results[0]["image_id"] == 7 and results[0]["segmentation"]["size"] == [90, 120]
    # The single-output preset's override merges into its AMG settings: one mask per point.
    single = ProposalGenerator.from_preset(
        predictor, "proposals-single-output", amg={"points_per_side": 4, "box_nms_thresh": 1.0}, max_proposals=5
    )
    assert single.settings.amg["multimask_output"] is False
    out = single.generate(image)
    assert len(out) == 5
    assert len(single.generator.generate(image)) <= 16
