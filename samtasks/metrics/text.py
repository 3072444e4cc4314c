"""Text-to-mask metric (ours; the paper reports no number, PAPER.md section 6).

A query is a phrase with its target instances (on COCO: a category present in the image, every
instance of it). Its score is the IoU of the answer with the best-matching target. With the point
fix, the query is asked again with one positive click at the centre of `point_fix_target`, the
instance a user would click (the one the answer overlaps most, the largest when it overlaps none),
and the new answer is scored the same way. A missing answer is an empty mask.

Keys: `queries`, `mIoU` over queries, `mIoU_point` with the point fix (when the queries have it) and,
per query key, `mIoU/<key>`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from samtasks.metrics.base import Metric
from samtasks.utils.masks import mask_iou


def _ious(mask: np.ndarray | None, targets: Sequence[np.ndarray]) -> list[float]:
    if mask is None:
        mask = np.zeros_like(targets[0], dtype=bool)
    return [mask_iou(mask, t) for t in targets]


def best_iou(mask: np.ndarray | None, targets: Sequence[np.ndarray]) -> float:
    """IoU of `mask` (`bool [H, W]`, None: no answer) with the target it matches best."""
    return max(_ious(mask, targets))


def point_fix_target(mask: np.ndarray | None, targets: Sequence[np.ndarray]) -> np.ndarray:
    """The target a user would click to fix the answer `mask`: the one it overlaps most (highest IoU,
    the first of equals), or the largest (first of equals) when it overlaps none."""
    ious = _ious(mask, targets)
    if max(ious) > 0:
        return targets[int(np.argmax(ious))]
    return max(targets, key=np.count_nonzero)


class TextMetrics(Metric):
    """Accumulates per-query IoUs (the `Metric` contract).

    Args:
        per_key: also report `mIoU/<key>` per query key (on COCO the category name).
    """

    def __init__(self, *, per_key: bool = True) -> None:
        self.per_key = per_key
        self.reset()

    def reset(self) -> None:
        self.keys: list[str] = []
        self.ious: list[float] = []
        self.point_ious: list[float] = []

    def image_stats(
        self,
        pred: Mapping[str, np.ndarray | None],
        gt: Mapping[str, Sequence[np.ndarray]],
        pred_point: Mapping[str, np.ndarray | None] | None = None,
    ) -> dict:
        """`{"queries": [{"key", "iou"[, "iou_point"]}, ...]}`, one entry per query of `gt`, in its order.

        Args:
            pred: query key -> the answer, `bool [H, W]` (None: no answer).
            gt: query key -> the target instances, `bool [H, W]` each (at least one).
            pred_point: query key -> the answer with the point fix at `point_fix_target`; None: no fix.
        """
        queries = []
        for key, targets in gt.items():
            entry = {"key": key, "iou": best_iou(pred[key], targets)}
            if pred_point is not None:
                entry["iou_point"] = best_iou(pred_point[key], targets)
            queries.append(entry)
        return {"queries": queries}

    def update(
        self,
        pred: Mapping[str, np.ndarray | None],
        gt: Mapping[str, Sequence[np.ndarray]],
        pred_point: Mapping[str, np.ndarray | None] | None = None,
    ) -> dict:
        stats = self.image_stats(pred, gt, pred_point)
        self.add(stats)
        return stats

    def add(self, stats: dict) -> None:
        for query in stats["queries"]:
            self.keys.append(query["key"])
            self.ious.append(query["iou"])
            if "iou_point" in query:
                self.point_ious.append(query["iou_point"])

    def compute(self) -> dict[str, float]:
        if not self.ious:
            return {"queries": 0}
        metrics: dict[str, float] = {"queries": len(self.ious), "mIoU": _mean(self.ious)}
        if self.point_ious:
            if len(self.point_ious) != len(self.ious):
                raise ValueError(f"{len(self.point_ious)} of {len(self.ious)} queries have a point-fix IoU")
            metrics["mIoU_point"] = _mean(self.point_ious)
        if self.per_key:
            by_key: dict[str, list[float]] = defaultdict(list)
            for key, iou in zip(self.keys, self.ious, strict=True):
                by_key[key].append(iou)
            for key, values in sorted(by_key.items()):
                metrics[f"mIoU/{key}"] = _mean(values)
        return metrics


def _mean(values: Sequence[float]) -> float:
    """Exactly rounded: the same mean in any record order, however the run was sharded."""
    return math.fsum(values) / len(values)
