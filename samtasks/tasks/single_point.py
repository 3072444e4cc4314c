"""Single-point valid-mask evaluation and interactive clicks (PAPER.md section 2).

Every click, the first included, follows RITM's evaluation (SamsungLabs/ritm_interactive_segmentation,
`Clicker._get_next_click` in `isegm/inference/clicker.py`), which starts from an all-empty prediction:
- the error regions are fn = object and not prediction (a missed object: positive click) and fp =
  prediction and not object (a wrong prediction: negative click), both without the ignore region, which is
  taken out *before* the distance transforms so that it counts as boundary, like the image border (the
  regions are padded with one pixel of background);
- pixels clicked before are zeroed *after* the distance transforms;
- the click is positive at argmax(dt_fn) if max(dt_fn) > max(dt_fp), else negative at argmax(dt_fp) (a tie
  is negative); of equally distant pixels the first in row-major order wins;
- distances are float32 and equal to `cv2.distanceTransform`'s (float64 would break some ties otherwise,
  though only at distances over 2048 px);
- so the first click is `center_point` of the object minus the ignore region, never in it.
The IoU leaves ignored pixels out of intersection and union (RITM's `get_iou` in `isegm/inference/utils.py`).

Ours, where RITM does something else: with no error pixel left to click RITM adds a negative click at pixel
(0, 0); we stop clicking that object and its answer stays. An object with no pixel outside the ignore region
has nothing to click or score (a RITM label map cannot hold one): the evaluator rejects it. The random first
point and the batched lockstep of all objects of an image (one decoder call per click step) are ours too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from samtasks.predictor import SamPredictor
from samtasks.structures import ClickResult
from samtasks.utils.masks import mask_iou
from samtasks.utils.settings import check_field_types, check_range, preset_with_overrides

FIRST_POINTS = ("center", "random")


@dataclass(frozen=True)
class ClickSettings:
    """How the clicks are simulated."""

    max_clicks: int = 9  # clicks per object (9 for mIoU@{1,2,3,5,9}; 20 for NoC)
    # "center" (the paper; RITM's first click) or "random" (a seeded uniform pixel of the object outside the
    # ignore region).
    first_point: str = "center"
    feed_logits: bool = True  # with clicks 2..N, also feed back the previous answer's low-res logits (paper silent)
    # 3 outputs (highest predicted IoU) after the first click too, instead of the single-mask token (the
    # paper's convention for more than one prompt point).
    multimask_later: bool = False
    seed: int = 0  # the random first point's seed

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.first_point not in FIRST_POINTS:
            raise ValueError(f"first_point must be one of {', '.join(FIRST_POINTS)}, got {self.first_point!r}")
        check_range("max_clicks", self.max_clicks, 1, math.inf)


PRESETS: dict[str, ClickSettings] = {
    # The paper's protocol (PAPER.md section 2): mIoU after 1, 2, 3, 5 and 9 clicks.
    "clicks-miou": ClickSettings(),
    # Also NoC at 85 and 90% IoU (at most 20 clicks), with the mIoU read off the same runs (the suite's).
    "clicks-noc": ClickSettings(max_clicks=20),
}


def _padded_distance(mask: np.ndarray) -> np.ndarray:
    """float32 Euclidean distance to the nearest pixel outside `mask`, the image border counting as outside."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1].astype(np.float32)


def center_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from the mask boundary (and from the image border); ties go to
    the first pixel in row-major order.

    Raises:
        ValueError: an empty mask.
    """
    if not mask.any():
        raise ValueError("center_point of an empty mask")
    y, x = np.unravel_index(int(np.argmax(_padded_distance(mask))), mask.shape)
    return int(x), int(y)


def random_point(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(x, y) of a uniformly drawn mask pixel."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("random_point of an empty mask")
    i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])


def next_click(
    gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None, ignore: np.ndarray | None = None
) -> tuple[int, int, bool] | None:
    """The RITM click: (x, y, positive), or None when no error pixel is left to click.

    Args:
        gt, pred: `bool [H, W]`.
        clicked: `bool [H, W]`, pixels of earlier clicks, never clicked again.
        ignore: `bool [H, W]`, pixels that are neither object nor background: boundary of both error regions.
    """
    fn, fp = gt & ~pred, pred & ~gt
    if ignore is not None:
        fn, fp = fn & ~ignore, fp & ~ignore
    fn, fp = _padded_distance(fn), _padded_distance(fp)
    if clicked is not None:
        fn[clicked] = 0
        fp[clicked] = 0
    fn_max, fp_max = fn.max(), fp.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    y, x = np.unravel_index(int(np.argmax(fn if positive else fp)), gt.shape)
    return int(x), int(y), positive


class ClickEvaluator:
    """Simulated clicks on the objects of one image.

    Args:
        predictor: the `SamPredictor` to prompt.
        **settings: `ClickSettings` fields; see `from_preset` for the named settings.
    """

    def __init__(self, predictor: SamPredictor, **settings) -> None:
        self.predictor = predictor
        self.settings = ClickSettings(**settings)

    @classmethod
    def from_preset(cls, predictor: SamPredictor, name: str, **overrides) -> ClickEvaluator:
        """An evaluator with `PRESETS[name]`, any `ClickSettings` field overridden by keyword."""
        return cls(predictor, **dataclasses.asdict(preset_with_overrides(PRESETS, name, overrides)))

    def evaluate(self, image: np.ndarray, gt_masks: np.ndarray, ignore: np.ndarray | None = None) -> ClickResult:
        """Clicks on each of `gt_masks` (`bool [K, H, W]`) in `image` (`uint8 [H, W, 3]`).

        `ignore` (`bool [H, W]`, e.g. crowd regions) is left out of every object, error region and IoU, so
        it is never clicked; every object needs a pixel outside it.

        Raises:
            ValueError: an object without a pixel outside `ignore`.
        """
        k = len(gt_masks)
        s = self.settings
        n = s.max_clicks
        ious = np.zeros((k, n))
        oracle = np.zeros(k)
        clicks = np.full((k, n, 3), -1, np.int64)
        if k == 0:
            return ClickResult(ious, oracle, clicks)
        if ignore is None:
            ignore = np.zeros(gt_masks.shape[1:], bool)
        targets = gt_masks & ~ignore  # [K, H, W] the objects as RITM's label maps hold them
        if not targets.reshape(k, -1).any(1).all():
            raise ValueError("every ground-truth mask must have a pixel outside the ignore region")
        self.predictor.set_image(image)
        rng = np.random.default_rng(s.seed)
        points = [[] for _ in range(k)]  # per object: [(x, y, label), ...]
        clicked = np.zeros_like(targets)
        logits = None  # [K, 1, S, S] the previous answers
        preds = None
        alive = np.ones(k, bool)
        for step in range(n):
            for i in range(k):
                if step == 0:
                    # RITM's click on an empty prediction: the centre of the object minus the ignore region
                    x, y = center_point(targets[i]) if s.first_point == "center" else random_point(targets[i], rng)
                    click = (x, y, True)
                elif alive[i]:
                    click = next_click(targets[i], preds[i], clicked[i], ignore)
                    if click is None:  # no error pixel left to click: the answer stays, the IoU stays
                        alive[i] = False
                if alive[i]:
                    x, y, positive = click
                    points[i].append((x, y, int(positive)))  # pixel indices; the prompt encoder adds 0.5
                    clicked[i, y, x] = True
                    clicks[i, step] = (x, y, int(positive))
            index = np.flatnonzero(alive) if step else np.arange(k)
            if len(index):
                masks, low, oracle_step = self._predict(points, index, logits, step, targets, ignore)
                if step == 0:
                    oracle = oracle_step
                    preds = np.zeros_like(targets)
                    logits = torch.zeros((k, 1, *low.shape[-2:]), dtype=low.dtype, device=low.device)
                preds[index] = masks
                logits[torch.as_tensor(index, device=low.device)] = low
            ious[:, step] = [mask_iou(preds[i], targets[i], ignore) for i in range(k)]
        self.predictor.reset_image()
        return ClickResult(ious, oracle, clicks)

    def _predict(self, points, index, logits, step, targets, ignore):
        width = step + 1
        coords = np.zeros((len(index), width, 2), np.float32)
        labels = np.full((len(index), width), -1, np.int64)  # -1 pads objects with fewer clicks
        for row, i in enumerate(index):
            for j, (x, y, label) in enumerate(points[i]):
                coords[row, j] = (x, y)
                labels[row, j] = label
        s = self.settings
        multimask = step == 0 or s.multimask_later
        mask_input = logits[torch.as_tensor(index, device=logits.device)] if (step and s.feed_logits) else None
        out = self.predictor.predict_torch(
            torch.from_numpy(coords), torch.from_numpy(labels), mask_input=mask_input, multimask=multimask
        )
        best = out.iou_scores.argmax(1)
        rows = torch.arange(len(index), device=best.device)
        masks = out.masks[rows, best].cpu().numpy()
        oracle = None
        if step == 0:
            all_masks = out.masks.cpu().numpy()  # [K, 3, H, W]
            oracle = np.array(
                [max(mask_iou(m, targets[i], ignore) for m in all_masks[row]) for row, i in enumerate(index)]
            )
        return masks, out.low_res_logits[rows, best][:, None], oracle
