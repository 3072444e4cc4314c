"""Dataclasses that cross layer boundaries. Field comments give dtype, [shape] and frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class MaskPrediction:
    """SAM's answer to P prompts with C masks each (C = the model's multimask count with multimask
    output, 3 for SAM; else 1).

    `SamPredictor.predict` fills it with numpy arrays, `predict_torch` with tensors on the
    predictor's device.
    """

    masks: Any  # bool [P, C, H, W], original image frame; None when masks were not requested
    iou_scores: Any  # float32 [P, C], predicted IoU of each mask
    low_res_logits: Any  # float32 [P, C, S, S] (S = 256), the model's square prompt frame
    object_scores: Any = None  # float32 [P] object-presence logits (SAM 2.1); None for models without one

    def best(self) -> Any:
        """Index of the highest-predicted-IoU mask of each prompt, `int64 [P]`."""
        return self.iou_scores.argmax(-1)


@dataclass(frozen=True)
class Sample:
    """One image of a dataset with its ground truth; the image is read only by `load_image()`."""

    image_id: int
    path: Path  # the image file
    height: int
    width: int
    annotations: tuple[dict, ...] = ()  # COCO-format dicts: bbox XYWH, segmentation (polygons or RLE), ...

    def load_image(self) -> np.ndarray:
        """`uint8 [H, W, 3]` RGB; raises `ImageReadError` naming the file if it cannot be read."""
        from samtasks.utils.image import load_image

        return load_image(self.path)


@dataclass
class Detections:
    """A detector's boxes for one image."""

    boxes: np.ndarray  # float32 [N, 4] XYXY pixels, original image frame
    scores: np.ndarray  # float32 [N] confidence
    labels: np.ndarray  # int64 [N] class id (a key of `names`)
    names: dict[int, str]  # class id -> name

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty(names: dict[int, str] | None = None) -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), names or {})


@dataclass
class InstanceMasks:
    """One mask per detection, in the detections' order."""

    masks: np.ndarray  # bool [N, H, W], original image frame
    boxes: np.ndarray  # float32 [N, 4] XYXY pixels, the prompt boxes
    scores: np.ndarray  # float32 [N] instance score (detector score, or times predicted IoU)
    labels: np.ndarray  # int64 [N] class id
    names: dict[int, str]  # class id -> name
    predicted_iou: np.ndarray  # float32 [N] SAM's predicted IoU of the kept mask

    def __len__(self) -> int:
        return len(self.masks)


@dataclass
class EdgeMap:
    """A soft edge map of one image."""

    edges: np.ndarray  # float32 [H, W] in [0, 1], original image frame
    num_masks: int  # masks that contributed
    quantize: str = "round"  # how `save` maps [0, 1] to 8 bits: "round" (255 e) or "floor"

    def save(self, path) -> Path:
        """An 8-bit PNG (the BSDS benchmark's input format)."""
        from samtasks.utils.image import save_edge_map

        return save_edge_map(path, self.edges, quantize=self.quantize)
