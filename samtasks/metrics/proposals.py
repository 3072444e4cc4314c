"""Class-agnostic mask average recall of object proposals (AR@k), on COCO with pycocotools and on LVIS
with the `lvis` package, accumulated image by image.

Each image is matched by the official evaluator (greedy by score, one proposal per ground-truth
object, at IoU thresholds 0.50:0.05:0.95, area ranges and crowd / ignore rules as the tool defines
them). Recall is a sum over images (matched objects / objects, as both tools accumulate it), so the
per-image counts are all the state there is: they are JSON, they can be stored as each image
finishes and summed later, and memory does not grow with the number of proposals. Greedy matching
in score order means the first k proposals match exactly as a run cut to k would, so one
evaluation at the largest k gives every AR@k.

Keys: `AR@k`, `ARs@k` / `ARm@k` / `ARl@k` (area small / medium / large) and, on LVIS, `ARr@k` /
`ARc@k` / `ARf@k` (ground truth restricted to the rare / common / frequent categories). A value is
-1.0 where there is no ground truth to recall (the official tools' convention).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Callable, Sequence

import numpy as np

from samtasks.metrics.base import Metric
from samtasks.structures import Sample
from samtasks.utils.optional import import_optional

AREAS = ("all", "small", "medium", "large")  # the order both official tools use
_AREA_KEY = {"all": "", "small": "s", "medium": "m", "large": "l"}
_NUM_IOU_THRESHOLDS = 10


class ProposalRecall(Metric):
    """Accumulator of class-agnostic AR@k (the `Metric` contract).

    Args:
        evaluate_image: `(sample, proposals) -> {group: [area][threshold] match ranks}` for one image;
            see `coco_matches` and `lvis_matches`.
        max_dets: the k of AR@k.
        groups: the ground-truth groups reported ("all", and on LVIS "r", "c", "f").
    """

    def __init__(self, evaluate_image: Callable, max_dets: Sequence[int], groups: Sequence[str] = ("all",)) -> None:
        self.evaluate_image = evaluate_image
        self.max_dets = tuple(sorted(max_dets))
        self.groups = tuple(groups)
        self.reset()

    def reset(self) -> None:
        shape = (len(self.groups), len(AREAS))
        self.num_gt = np.zeros(shape, np.int64)
        self.matched = np.zeros((*shape, len(self.max_dets), _NUM_IOU_THRESHOLDS), np.int64)

    def image_stats(self, pred: list[dict], gt: Sample) -> dict:
        """Per-image counts, JSON-ready: `{"num_gt": [G][A], "matched": [G][A][K][T]}`.

        Args:
            pred: the proposals, results entries with `segmentation` (compressed RLE) and `score`; any order.
            gt: the image and its ground truth.
        """
        num_gt = np.zeros_like(self.num_gt)
        matched = np.zeros_like(self.matched)
        # Only the mask and score reach the tools (both read a `bbox` key as a box result).
        proposals = [{"segmentation": p["segmentation"], "score": p["score"]} for p in pred]
        proposals = sorted(proposals, key=lambda p: -p["score"])[: self.max_dets[-1]]
        ranks = self.evaluate_image(gt, proposals)
        for g, group in enumerate(self.groups):
            for a in range(len(AREAS)):
                gt_ranks = ranks.get(group, {}).get(a)  # [T, G] rank of the matching proposal, or -1
                if gt_ranks is None:
                    continue
                num_gt[g, a] = gt_ranks.shape[1]
                for k, limit in enumerate(self.max_dets):
                    matched[g, a, k] = ((gt_ranks >= 0) & (gt_ranks < limit)).sum(1)
        return {"num_gt": num_gt.tolist(), "matched": matched.tolist()}

    def add(self, stats: dict) -> None:
        """Adds one image's `image_stats`."""
        self.num_gt += np.asarray(stats["num_gt"], np.int64)
        self.matched += np.asarray(stats["matched"], np.int64)

    def compute(self) -> dict[str, float]:
        results = {}
        for g, group in enumerate(self.groups):
            for a, area in enumerate(AREAS):
                if group != "all" and area != "all":
                    continue
                suffix = "" if group == "all" else group
                for k, limit in enumerate(self.max_dets):
                    key = f"AR{_AREA_KEY[area]}{suffix}@{limit}"
                    total = self.num_gt[g, a]
                    results[key] = float((self.matched[g, a, k] / total).mean()) if total else -1.0
        return results


def coco_proposal_recall(max_dets: Sequence[int] = (10, 100, 1000)) -> ProposalRecall:
    """AR@k on COCO-format ground truth, matched by pycocotools (crowd regions ignored as it does)."""
    return ProposalRecall(coco_matches, max_dets)


def lvis_proposal_recall(frequency: Callable[[int], str], max_dets: Sequence[int] = (100, 300, 1000)) -> ProposalRecall:
    """AR@k on LVIS ground truth, matched by the `lvis` package; also by frequency group.

    Args:
        frequency: category id -> "r", "c" or "f" (`LvisDataset.frequency`).
    """
    import_optional("lvis", "lvis", "LVIS evaluation")
    return ProposalRecall(lambda s, p: lvis_matches(s, p, frequency), max_dets, groups=("all", "r", "c", "f"))


def _ranks_from_matches(gt_ids: list[int], gt_ignore, dt_ids: list[int], dt_matches, dt_ignore) -> np.ndarray:
    """`int64 [T, G']`: for each counted (not ignored) ground-truth object, the score rank (0-based) of
    the proposal matched to it at each IoU threshold, -1 if none.

    A proposal counts as a true positive when it matched and is not ignored (both tools' rule)."""
    gt_ignore = np.asarray(gt_ignore, bool)
    counted = [gid for gid, ig in zip(gt_ids, gt_ignore, strict=True) if not ig]
    column = {gid: c for c, gid in enumerate(counted)}
    ranks = np.full((_NUM_IOU_THRESHOLDS, len(counted)), -1, np.int64)
    dt_matches = np.asarray(dt_matches).reshape(_NUM_IOU_THRESHOLDS, len(dt_ids))
    dt_ignore = np.asarray(dt_ignore, bool).reshape(_NUM_IOU_THRESHOLDS, len(dt_ids))
    for t, r in zip(*np.nonzero((dt_matches != 0) & ~dt_ignore), strict=True):
        c = column.get(int(dt_matches[t, r]))
        if c is not None:
            ranks[t, c] = r
    return ranks


def _quiet():
    """pycocotools prints progress to stdout and `lvis` logs a warning per results list."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    lvis_logger = logging.getLogger("lvis")
    level = lvis_logger.level
    lvis_logger.setLevel(logging.ERROR)
    stack.callback(lvis_logger.setLevel, level)
    return stack


def _area_index(area_range, ranges) -> int:
    return [list(r) for r in ranges].index(list(area_range))


def coco_matches(sample: Sample, proposals: list[dict]) -> dict:
    """One image matched by pycocotools' COCOeval (`useCats=0`, segm): `{"all": {area: ranks}}`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image = {"id": sample.image_id, "height": sample.height, "width": sample.width}
    anns = [{**copy.deepcopy(a), "id": i + 1, "category_id": 1} for i, a in enumerate(sample.annotations)]
    if not anns:
        return {}
    if not proposals:
        return {"all": {a: _unmatched(anns, a) for a in range(len(AREAS))}}
    with _quiet():
        gt = COCO()
        gt.dataset = {"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        gt.createIndex()
        dt = gt.loadRes([{**p, "image_id": sample.image_id, "category_id": 1} for p in proposals])
        evaluator = COCOeval(gt, dt, "segm")
        evaluator.params.imgIds = [sample.image_id]
        evaluator.params.useCats = 0
        evaluator.params.maxDets = [len(proposals)]
        evaluator.evaluate()
    out = {}
    for e in evaluator.evalImgs:
        if e is None:
            continue
        a = _area_index(e["aRng"], evaluator.params.areaRng)
        out[a] = _ranks_from_matches(e["gtIds"], e["gtIgnore"], e["dtIds"], e["dtMatches"], e["dtIgnore"])
    return {"all": out}


def _unmatched(anns: list[dict], area_index: int) -> np.ndarray:
    """Ranks for an image without proposals: every counted object unmatched (COCO's ignore rules:
    crowd objects and objects outside the area range are not counted)."""
    lo, hi = [(0, 1e10), (0, 32**2), (32**2, 96**2), (96**2, 1e10)][area_index]
    counted = [a for a in anns if not a.get("iscrowd", 0) and not a.get("ignore", 0) and lo <= a["area"] <= hi]
    return np.full((_NUM_IOU_THRESHOLDS, len(counted)), -1, np.int64)


def lvis_matches(sample: Sample, proposals: list[dict], frequency: Callable[[int], str]) -> dict:
    """One image matched by the `lvis` package's LVISEval (segm), class-agnostic.

    The `lvis` evaluator's own class-agnostic mode does not work (it looks ground truth up under
    category -1), so each ground-truth group becomes one pseudo-category: 1 holds every object,
    2 / 3 / 4 the rare / common / frequent ones, and every proposal is entered once per group present
    in the image. The pseudo-categories are listed as verified-absent (`neg_category_ids`) and none as
    not-exhaustive, which changes which unmatched proposals count against precision, not recall.
    """
    from lvis import LVIS, LVISEval, LVISResults

    groups = {"all": 1, "r": 2, "c": 3, "f": 4}
    anns = []
    for ann in sample.annotations:
        for group in ("all", frequency(ann["category_id"])):
            anns.append({**copy.deepcopy(ann), "id": len(anns) + 1, "category_id": groups[group]})
    if not anns:
        return {}
    present = sorted({a["category_id"] for a in anns})
    names = {v: k for k, v in groups.items()}
    if not proposals:
        return {
            names[c]: {a: _unmatched([x for x in anns if x["category_id"] == c], a) for a in range(len(AREAS))}
            for c in present
        }
    image = {
        "id": sample.image_id,
        "height": sample.height,
        "width": sample.width,
        "neg_category_ids": list(groups.values()),
        "not_exhaustive_category_ids": [],
    }
    categories = [{"id": i, "name": name, "frequency": "f" if name == "all" else name} for name, i in groups.items()]
    with _quiet():
        gt = LVIS.__new__(LVIS)
        gt.logger = logging.getLogger("lvis.lvis")
        gt.dataset = {"images": [image], "annotations": anns, "categories": categories}
        gt._create_index()
        results = [{**p, "image_id": sample.image_id, "category_id": c} for c in present for p in proposals]
        dt = LVISResults(gt, results, max_dets=-1)
        evaluator = LVISEval(gt, dt, "segm")
        evaluator.params.img_ids = [sample.image_id]
        evaluator.evaluate()
    out: dict[str, dict] = {}
    for e in evaluator.eval_imgs:
        if e is None:
            continue
        a = _area_index(e["area_rng"], evaluator.params.area_rng)
        out.setdefault(names[e["category_id"]], {})[a] = _ranks_from_matches(
            e["gt_ids"], e["gt_ignore"], e["dt_ids"], e["dt_matches"], e["dt_ignore"]
        )
    return out
