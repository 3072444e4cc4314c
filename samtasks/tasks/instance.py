"""Instance segmentation from detector boxes (PAPER.md section 5): every box prompts SAM, then one
refinement pass feeds the chosen mask's low-res logits back with the same box."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from samtasks.predictor import SamPredictor
from samtasks.structures import Detections, InstanceMasks
from samtasks.utils.image import load_image
from samtasks.utils.settings import check_field_types, preset_with_overrides

logger = logging.getLogger(__name__)

SCORES = ("detector", "detector*iou")


@dataclass(frozen=True)
class InstanceSettings:
    """How each box is decoded and scored."""

    # The paper's refinement pass: the first call's chosen mask, as low-res logits, goes back in as
    # `mask_input` with the same box, and the second call's single-mask output is kept.
    refine: bool = True
    multimask: bool = False  # first call with 3 outputs, the highest predicted IoU chosen (ours; paper silent)
    score: str = "detector"  # "detector" or "detector*iou" (times SAM's predicted IoU)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")


PRESETS: dict[str, InstanceSettings] = {
    # Table 5: detector boxes, one refinement pass, the detector's score.
    "instance-boxes": InstanceSettings(),
}


class InstanceSegmenter:
    """Boxes -> one mask each.

    Args:
        predictor: the `SamPredictor` to prompt.
        detector: a `Detector` (`samtasks.tasks.detectors`); optional if detections are passed to
            `segment`.
        **settings: `InstanceSettings` fields; see `from_preset` for the named settings.
    """

    def __init__(self, predictor: SamPredictor, detector=None, **settings) -> None:
        self.predictor = predictor
        self.detector = detector
        self.settings = InstanceSettings(**settings)

    @classmethod
    def from_preset(cls, predictor: SamPredictor, name: str, *, detector=None, **overrides) -> InstanceSegmenter:
        """A segmenter with `PRESETS[name]`, any `InstanceSettings` field overridden by keyword."""
        settings = preset_with_overrides(PRESETS, name, overrides)
        return cls(predictor, detector, **dataclasses.asdict(settings))

    def segment(self, image, detections: Detections | None = None, *, image_id=None) -> InstanceMasks:
        """Masks for the detections of one image.

        Args:
            image: array, PIL image or path (see `load_image`).
            detections: boxes to segment; default: `self.detector(image, image_id)`.
            image_id: passed to the detector (precomputed detections look images up by it).
        """
        image = load_image(image)
        h, w = image.shape[:2]
        if detections is None:
            if self.detector is None:
                raise ValueError("no detector and no detections given")
            detections = self.detector(image, image_id)
        if len(detections) == 0:
            return InstanceMasks(
                masks=np.zeros((0, h, w), bool),
                boxes=np.zeros((0, 4), np.float32),
                scores=np.zeros(0, np.float32),
                labels=np.zeros(0, np.int64),
                names=detections.names,
                predicted_iou=np.zeros(0, np.float32),
            )
        boxes = valid_boxes(detections.boxes, h, w)
        self.predictor.set_image(image)
        masks, iou = self.predict(torch.from_numpy(boxes))
        self.predictor.reset_image()
        iou = iou.float().cpu().numpy()
        scores = detections.scores * (iou if self.settings.score == "detector*iou" else 1.0)
        return InstanceMasks(
            masks=masks.cpu().numpy(),
            boxes=boxes,
            scores=scores.astype(np.float32),
            labels=detections.labels,
            names=detections.names,
            predicted_iou=iou,
        )

    def predict(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes `[N, 4]` XYXY boxes on the predictor's current image: `bool [N, H, W]` masks and
        `[N]` predicted IoU."""
        s = self.settings
        first = self.predictor.predict_torch(boxes=boxes, multimask=s.multimask, return_masks=not s.refine)
        rows = torch.arange(len(boxes), device=first.iou_scores.device)
        chosen = first.iou_scores.argmax(1)
        if not s.refine:
            return first.masks[rows, chosen], first.iou_scores[rows, chosen]
        logits = first.low_res_logits[rows, chosen][:, None]  # [N, 1, S, S]
        second = self.predictor.predict_torch(boxes=boxes, mask_input=logits, multimask=False)
        return second.masks[:, 0], second.iou_scores[:, 0]


def valid_boxes(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """Clips `[N, 4]` XYXY boxes to the image and widens degenerate ones to one pixel, so that every
    detection gets a mask (detectors return boxes that overhang the image or have zero width)."""
    boxes = np.asarray(boxes, np.float32).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    for lo, hi, size in ((0, 2, w), (1, 3, h)):
        thin = boxes[:, hi] - boxes[:, lo] < 1
        if thin.any():
            logger.debug("%d degenerate boxes widened to one pixel", int(thin.sum()))
            boxes[thin, hi] = np.minimum(boxes[thin, lo] + 1, size)
            boxes[thin, lo] = boxes[thin, hi] - 1
    return boxes
