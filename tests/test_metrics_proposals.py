"""Proposal AR: hand-computed cases, and equality with the official tools' global evaluation."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from samtasks.data import CocoDataset, LvisDataset
from samtasks.metrics.proposals import coco_proposal_recall, lvis_proposal_recall
from samtasks.structures import Sample
from samtasks.utils.masks import decode_rle, encode_rle

from .synthetic import write_dataset


def _rect(h, w, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _sample(masks: list[np.ndarray], categories=None, crowd=None) -> Sample:
    h, w = masks[0].shape
    anns = []
    for i, (m, rle) in enumerate(zip(masks, encode_rle(np.stack(masks)), strict=True)):
        anns.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": categories[i] if categories else 1,
                "segmentation": rle,
                "area": int(m.sum()),
                "bbox": [0, 0, 1, 1],
                "iscrowd": int(crowd[i]) if crowd else 0,
            }
        )
    return Sample(1, path=None, height=h, width=w, annotations=tuple(anns))


def _props(masks, scores):
    return [{"segmentation": r, "score": s} for r, s in zip(encode_rle(np.stack(masks)), scores, strict=True)]


def _both():
    return [coco_proposal_recall((1, 2, 100)), lvis_proposal_recall(lambda c: {1: "f", 2: "r"}[c], (1, 2, 100))]


@pytest.mark.parametrize("metric", _both(), ids=["coco", "lvis"])
def test_perfect_and_empty(metric):
    gt = [_rect(64, 64, 0, 20, 0, 20), _rect(64, 64, 30, 60, 30, 60)]
    sample = _sample(gt, categories=[1, 2])
    metric.update(_props(gt, [0.9, 0.8]), sample)
    assert metric.compute()["AR@100"] == 1.0
    assert metric.compute()["AR@1"] == 0.5  # the top proposal recalls one of two
    metric.reset()
    metric.update([], sample)
    values = metric.compute()
    assert values["AR@100"] == 0.0 and values["ARs@100"] == 0.0
    assert values["ARl@100"] == -1.0  # no large object to recall


@pytest.mark.parametrize("metric", _both(), ids=["coco", "lvis"])
def test_known_partial_overlaps(metric):
    # Object A: 20x20; its proposal covers 18 of 20 rows -> IoU 0.9, matched at 0.50..0.90 (9 of 10).
    # Object B: 20x25 = 500; its proposal 20x18 inside -> IoU 0.72, matched at 0.50..0.70 (5 of 10).
    a, b = _rect(64, 64, 0, 20, 0, 20), _rect(64, 64, 30, 50, 30, 55)
    pa, pb = _rect(64, 64, 0, 18, 0, 20), _rect(64, 64, 30, 50, 30, 48)
    sample = _sample([a, b], categories=[1, 2])
    metric.update(_props([pa, pb], [0.5, 0.6]), sample)
    values = metric.compute()
    assert values["AR@100"] == pytest.approx((0.9 + 0.5) / 2)
    assert values["AR@1"] == pytest.approx(0.5 / 2)  # only B's proposal (higher score) is in the top 1
    if "ARf@100" in values:  # LVIS groups: A is frequent, B rare
        assert values["ARf@100"] == pytest.approx(0.9)
        assert values["ARr@100"] == pytest.approx(0.5)
        assert values["ARc@100"] == -1.0


def test_coco_crowd_objects_are_not_counted():
    gt = [_rect(64, 64, 0, 20, 0, 20), _rect(64, 64, 30, 60, 30, 60)]
    metric = coco_proposal_recall((100,))
    metric.update(_props(gt[:1], [1.0]), _sample(gt, crowd=[0, 1]))
    assert metric.compute()["AR@100"] == 1.0


def _noisy_proposals(rng, dataset, count: int) -> list[dict]:
    """Per image: shifted and cropped copies of the objects plus random boxes, random scores."""
    results = []
    for sample in dataset:
        masks = [decode_rle(a["segmentation"]).astype(bool) for a in sample.annotations]
        for _ in range(count):
            if rng.random() < 0.6:
                m = np.roll(masks[rng.integers(len(masks))], tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
            else:
                y0, x0 = rng.integers(0, sample.height - 5), rng.integers(0, sample.width - 5)
                m = _rect(sample.height, sample.width, y0, y0 + rng.integers(3, 60), x0, x0 + rng.integers(3, 60))
            rle = encode_rle(m[None])[0]
            results.append({"image_id": sample.image_id, "segmentation": rle, "score": float(rng.random())})
    return results


def _ours(metric, dataset, results):
    for sample in dataset:
        mine = [r for r in results if r["image_id"] == sample.image_id]
        metric.update(mine, sample)
    return metric.compute()


def test_coco_equals_pycocotools_global(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = write_dataset(tmp_path, 5, seed=1)
    dataset = CocoDataset(ann, tmp_path / "val2017")
    results = _noisy_proposals(np.random.default_rng(0), dataset, 12)
    ours = _ours(coco_proposal_recall((1, 3, 10)), dataset, results)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        dt = gt.loadRes([{**copy.deepcopy(r), "category_id": 1} for r in results])
        ev = COCOeval(gt, dt, "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [1, 3, 10]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats[6:9] = AR@maxDets, stats[9:12] = AR small/medium/large at the largest maxDets
    expected = [ev.stats[6], ev.stats[7], ev.stats[8], ev.stats[9], ev.stats[10], ev.stats[11]]
    got = [ours["AR@1"], ours["AR@3"], ours["AR@10"], ours["ARs@10"], ours["ARm@10"], ours["ARl@10"]]
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 < ours["AR@10"] < 1.0


@pytest.mark.parametrize("k", [2, 8])
def test_lvis_equals_lvis_global_on_one_category(tmp_path, monkeypatch, k):
    """With a single (frequent) category, class-agnostic AR is the tool's own per-category AR."""
    from lvis import LVIS, LVISEval, LVISResults

    monkeypatch.setattr(np, "float", float, raising=False)  # lvis' accumulate() predates NumPy 2

    ann = write_dataset(tmp_path, 5, lvis=True, seed=2)
    data = json.loads(ann.read_text())
    for a in data["annotations"]:
        a["category_id"] = 1
    data["categories"] = [{"id": 1, "name": "thing", "frequency": "f"}]
    for image in data["images"]:
        image["neg_category_ids"] = [1]
    ann.write_text(json.dumps(data))
    dataset = LvisDataset(ann, tmp_path)
    results = _noisy_proposals(np.random.default_rng(3), dataset, 12)
    ours = _ours(lvis_proposal_recall(dataset.frequency, (k, 12)), dataset, results)
    gt = LVIS(str(ann))
    ev = LVISEval(gt, LVISResults(gt, [{**copy.deepcopy(r), "category_id": 1} for r in results], max_dets=k), "segm")
    ev.params.max_dets = k
    ev.run()
    assert ours[f"AR@{k}"] == pytest.approx(ev.results[f"AR@{k}"], abs=1e-12)
    assert ours[f"ARf@{k}"] == pytest.approx(ev.results[f"AR@{k}"], abs=1e-12)
    for area in "sml":
        assert ours[f"AR{area}@{k}"] == pytest.approx(ev.results[f"AR{area}@{k}"], abs=1e-12)
    assert ours["ARr@12"] == -1.0
