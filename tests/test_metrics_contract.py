"""Every metric follows the one accumulator contract (`samtasks.metrics.base.Metric`): `image_stats` adds
nothing, `update` adds exactly `image_stats`, stats survive a JSON round trip with the same `compute()`,
`reset` forgets everything."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from samtasks.metrics import Metric
from samtasks.metrics.bsds import BoundaryMetrics
from samtasks.metrics.coco import CocoMaskAP, LvisMaskAP
from samtasks.metrics.proposals import coco_proposal_recall, lvis_proposal_recall
from samtasks.metrics.single_point import ClickMetrics
from samtasks.metrics.text import TextMetrics
from samtasks.structures import Sample
from samtasks.utils.masks import encode_rle

from .synthetic import write_dataset


def _rect(y0, y1, x0, x1, shape=(40, 50)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _proposal_images(tmp_path):
    """Two images: one proposal exact and one half on the first, none on the second."""
    a, b = _rect(2, 12, 2, 12), _rect(20, 36, 20, 46)
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": r, "area": int(m.sum()), "iscrowd": 0}
        for i, (m, r) in enumerate(zip((a, b), encode_rle(np.stack([a, b])), strict=True))
    ]
    sample = Sample(1, path=None, height=40, width=50, annotations=tuple(anns))
    other = Sample(2, path=None, height=40, width=50, annotations=tuple({**x, "image_id": 2} for x in anns[:1]))
    half = _rect(20, 28, 20, 46)
    props = [{"segmentation": r, "score": s} for r, s in zip(encode_rle(np.stack([a, half])), (0.9, 0.8), strict=True)]
    return None, [(props, sample), ([], other)]


def _mask_ap_images(tmp_path, lvis: bool):
    path = write_dataset(tmp_path / ("lvis" if lvis else "coco"), 2, lvis=lvis)
    anns = json.loads(path.read_text())["annotations"]
    ids = sorted({a["image_id"] for a in anns})
    results = [{**a, "score": 1.0 - 0.1 * i} for i, a in enumerate(anns)]
    # The first image gets its own objects as results, the second none.
    return path, [([r for r in results if r["image_id"] == ids[0]], ids[0]), ([], ids[1])]


def _coco_images(tmp_path):
    return _mask_ap_images(tmp_path, False)


def _lvis_images(tmp_path):
    return _mask_ap_images(tmp_path, True)


def _click_images(tmp_path):
    rng = np.random.default_rng(0)
    return None, [(SimpleNamespace(ious=rng.random((k, 20)), oracle_iou=rng.random(k)), None) for k in (3, 0, 2)]


def _boundary_images(tmp_path):
    rng = np.random.default_rng(0)
    boundary = _rect(10, 11, 5, 45)
    prob = np.clip(boundary * 0.8 + rng.random(boundary.shape) * 0.3, 0, 1)
    return None, [(prob, [boundary, _rect(12, 13, 5, 45)]), (rng.random(boundary.shape) * 0.5, [boundary])]


def _text_images(tmp_path):
    a, b = _rect(2, 12, 2, 12), _rect(20, 36, 20, 46)
    return None, [
        ({"cat": a, "dog": _rect(20, 28, 20, 46)}, {"cat": [a], "dog": [a, b]}),
        ({"cat": None}, {"cat": [b]}),
    ]


# name -> (metric from the ground-truth file or None, tmp_path -> (ground-truth file or None, [(pred, gt)]))
CASES = {
    "coco-proposal-recall": (lambda p: coco_proposal_recall((1, 10)), _proposal_images),
    "lvis-proposal-recall": (lambda p: lvis_proposal_recall(lambda c: "f", (1, 10)), _proposal_images),
    "coco-mask-ap": (lambda p: CocoMaskAP(p), _coco_images),
    "lvis-mask-ap": (lambda p: LvisMaskAP(p), _lvis_images),
    "click-metrics": (lambda p: ClickMetrics(clicks_at=(1, 5)), _click_images),
    "boundary-metrics": (lambda p: BoundaryMetrics(n_thresholds=5), _boundary_images),
    "text-metrics": (lambda p: TextMetrics(), _text_images),
}


def _result(metric: Metric):
    """`compute()`, or the error it raises (a metric may refuse to summarize no image)."""
    try:
        return metric.compute()
    except ValueError as err:
        return f"ValueError: {err}"


@pytest.mark.parametrize("name", list(CASES))
def test_metric_follows_the_contract(tmp_path, name):
    make, images = CASES[name]
    annotations, pairs = images(tmp_path)
    metric = make(annotations)
    assert isinstance(metric, Metric)
    empty = _result(make(annotations))

    stats = [metric.image_stats(pred, gt) for pred, gt in pairs]
    assert _result(metric) == empty  # image_stats adds nothing
    assert [metric.update(pred, gt) for pred, gt in pairs] == stats
    expected = _result(metric)
    assert isinstance(expected, dict) and expected != empty

    stored = json.loads(json.dumps(stats))  # what the runner's records hold
    replayed = make(annotations)
    for s in stored:
        replayed.add(s)
    assert replayed.compute() == expected

    metric.reset()
    assert _result(metric) == empty
    for s in stored:
        metric.add(s)
    assert metric.compute() == expected  # reset left nothing behind to double-count
