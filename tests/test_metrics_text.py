"""The text-to-mask metric on hand-made masks: best-matching IoU, the point-fix target rule, the keys."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samtasks.metrics.text import TextMetrics, best_iou, point_fix_target


def _box(y0: int, x0: int, y1: int, x1: int, shape=(10, 10)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


SMALL = _box(0, 0, 2, 2)  # 4 px
LARGE = _box(4, 4, 8, 8)  # 16 px
HALF_LARGE = _box(4, 4, 6, 8)  # 8 px inside LARGE


def test_best_iou_takes_the_best_matching_target():
    assert best_iou(LARGE, [SMALL, LARGE]) == 1.0
    assert best_iou(HALF_LARGE, [SMALL, LARGE]) == 0.5  # 8 / 16
    assert best_iou(_box(0, 0, 2, 1), [SMALL, LARGE]) == 0.5  # 2 / 4 on the small one
    assert best_iou(None, [SMALL, LARGE]) == 0.0  # no answer: an empty mask
    assert best_iou(_box(9, 9, 10, 10), [SMALL, LARGE]) == 0.0


def test_point_fix_target_is_the_overlapped_instance_else_the_largest():
    # The answer overlaps SMALL (IoU 1/5) more than LARGE (IoU 1/17): SMALL is the click target.
    answer = _box(0, 0, 1, 1) | _box(4, 4, 5, 5)
    assert best_iou(answer, [SMALL]) == pytest.approx(1 / 5)
    assert point_fix_target(answer, [LARGE, SMALL]) is SMALL
    # No overlap at all, or no answer: the largest instance, whatever the order.
    assert point_fix_target(_box(9, 9, 10, 10), [SMALL, LARGE]) is LARGE
    assert point_fix_target(None, [LARGE, SMALL]) is LARGE
    # Equal overlaps: the first target; equal sizes: the first too.
    other = _box(0, 6, 2, 8)  # 4 px, the size of SMALL
    assert point_fix_target(_box(0, 0, 2, 8), [other, SMALL]) is other
    assert point_fix_target(None, [other, SMALL]) is other


def test_keys_means_and_per_key_values():
    metric = TextMetrics()
    metric.update({"cat": LARGE, "dog": HALF_LARGE}, {"cat": [LARGE], "dog": [SMALL, LARGE]})
    metric.update({"dog": None}, {"dog": [SMALL]})
    assert metric.compute() == {"queries": 3, "mIoU": 0.5, "mIoU/cat": 1.0, "mIoU/dog": 0.25}
    assert TextMetrics().compute() == {"queries": 0}
    assert list(TextMetrics(per_key=False).compute()) == ["queries"]


def test_point_fix_scores_the_second_answer():
    metric = TextMetrics(per_key=False)
    stats = metric.update({"q": HALF_LARGE}, {"q": [SMALL, LARGE]}, pred_point={"q": LARGE})
    assert stats == {"queries": [{"key": "q", "iou": 0.5, "iou_point": 1.0}]}
    metric.update({"r": None}, {"r": [SMALL]}, pred_point={"r": None})
    assert metric.compute() == {"queries": 2, "mIoU": 0.25, "mIoU_point": 0.5}
    metric.update({"s": SMALL}, {"s": [SMALL]})  # one query without the fix: no mean over a subset
    with pytest.raises(ValueError, match="2 of 3 queries"):
        metric.compute()


def test_stats_round_trip_and_reset():
    metric = TextMetrics()
    stats = metric.image_stats({"a": HALF_LARGE, "b": SMALL}, {"a": [LARGE], "b": [SMALL]}, {"a": LARGE, "b": None})
    assert metric.compute() == {"queries": 0}  # image_stats adds nothing
    metric.add(json.loads(json.dumps(stats)))
    direct = TextMetrics()
    direct.add(stats)
    assert (
        metric.compute()
        == direct.compute()
        == {
            "queries": 2,
            "mIoU": 0.75,
            "mIoU_point": 0.5,
            "mIoU/a": 0.5,
            "mIoU/b": 1.0,
        }
    )
    metric.reset()
    assert metric.compute() == {"queries": 0}
