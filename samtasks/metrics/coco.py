"""Mask AP on COCO (pycocotools) and LVIS (the `lvis` package), run unchanged on all results at once."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np

from samtasks.metrics.base import Metric
from samtasks.utils.optional import import_optional

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _segm_only(results: list[dict]) -> list[dict]:
    """The tools read a `bbox` key as a box result (box area, box IoU); keep only the mask."""
    keep = ("image_id", "category_id", "segmentation", "score")
    return [{k: copy.deepcopy(r[k]) for k in keep} for r in results]


class _MaskAP(Metric):
    """Collects results per image; `compute()` runs the official tool once on all of them (the `Metric`
    contract).

    Args:
        annotations: the ground-truth JSON.
        max_dets: detections per image the tool sees.
    """

    def __init__(self, annotations: str | Path, max_dets: int) -> None:
        self.annotations = str(annotations)
        self.max_dets = max_dets
        self.reset()

    def reset(self) -> None:
        self.results: list[dict] = []
        self.image_ids: list[int] = []

    def image_stats(self, pred: list[dict], gt: int) -> dict:
        """`{"image_id", "results"}`, the results reduced to what the tool reads.

        Args:
            pred: COCO results entries of the image (`image_id`, `category_id`, `segmentation` as
                compressed RLE, `score`).
            gt: the image's id in the annotations (an image without results still counts).
        """
        return {"image_id": gt, "results": _segm_only(pred)}

    def add(self, stats: dict) -> None:
        self.image_ids.append(stats["image_id"])
        self.results.extend(_segm_only(stats["results"]))


class CocoMaskAP(_MaskAP):
    """COCO mask AP (pycocotools, 100 detections per image): AP, AP50, AP75, APs, APm, APl."""

    def __init__(self, annotations: str | Path, max_dets: int = 100) -> None:
        super().__init__(annotations, max_dets)

    def compute(self) -> dict[str, float]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not self.results:
            return dict.fromkeys(COCO_KEYS, 0.0)
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(self.annotations)
            evaluator = COCOeval(gt, gt.loadRes(self.results), "segm")
            evaluator.params.imgIds = sorted(set(self.image_ids))
            evaluator.params.maxDets = [1, 10, self.max_dets]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return dict(zip(COCO_KEYS, (float(v) for v in evaluator.stats[:6]), strict=True))


class LvisMaskAP(_MaskAP):
    """LVIS mask AP (the `lvis` package: federated rules, 300 detections per image, APr / APc / APf)."""

    def __init__(self, annotations: str | Path, max_dets: int = 300) -> None:
        import_optional("lvis", "lvis", "LVIS evaluation")
        super().__init__(annotations, max_dets)

    def compute(self) -> dict[str, float]:
        from lvis import LVIS, LVISEval, LVISResults

        if not self.results:
            return dict.fromkeys(LVIS_KEYS, 0.0)
        with _numpy_float_alias(), contextlib.redirect_stdout(io.StringIO()):
            gt = LVIS(self.annotations)
            evaluator = LVISEval(gt, LVISResults(gt, self.results, max_dets=self.max_dets), "segm")
            evaluator.params.img_ids = sorted(set(self.image_ids))
            evaluator.params.max_dets = self.max_dets
            evaluator.run()
        return {k: float(evaluator.results[k]) for k in LVIS_KEYS}


@contextlib.contextmanager
def _numpy_float_alias():
    """`lvis` 0.5.3's accumulate() uses `np.float`, removed in NumPy 2; the alias is restored after."""
    had = hasattr(np, "float")
    if not had:
        setattr(np, "float", float)  # noqa: B010 (ruff's NPY001 would rewrite an attribute assignment)
    try:
        yield
    finally:
        if not had:
            delattr(np, "float")
