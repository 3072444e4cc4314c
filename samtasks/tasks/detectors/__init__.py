"""Box detectors behind one protocol: `detector(image, image_id=None) -> Detections`.

- `YoloDetector`: ultralytics YOLOv8 / YOLO11 weights or a model yaml (`pip install 'samtasks[yolo]'`).
- `TorchvisionDetector`: torchvision's detection models, weights through torchvision.
- `PrecomputedDetections`: a COCO results JSON (the paper's protocol: boxes of another detector).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from samtasks.structures import Detections
from samtasks.tasks.detectors.precomputed import PrecomputedDetections
from samtasks.tasks.detectors.torchvision import TorchvisionDetector
from samtasks.tasks.detectors.yolo import YoloDetector


class Detector(Protocol):
    def __call__(self, image: np.ndarray, image_id: int | str | None = None) -> Detections:
        """Boxes for `image` (`uint8 [H, W, 3]` RGB); `image_id` names it for precomputed detections."""


def make_detector(name: str, weights: str | None = None, **knobs) -> Detector:
    """A detector by CLI name: "yolov8" / "yolo" (default weights yolov8n.pt), "torchvision:<model>".

    Args:
        weights: YOLO weights or yaml; for torchvision a weights enum name ("DEFAULT",
            "COCO_V1"), a local file, or "none" for random weights.
        **knobs: conf, iou, classes, max_det (YOLO); conf, classes, max_det (torchvision).
    """
    if name in ("yolo", "yolov8", "yolo11"):
        default = "yolo11n.pt" if name == "yolo11" else "yolov8n.pt"
        return YoloDetector(weights or default, **knobs)
    if name.startswith("torchvision:"):
        knobs.pop("iou", None)
        return TorchvisionDetector(name.split(":", 1)[1], weights=weights or "DEFAULT", **knobs)
    raise ValueError(f"unknown detector {name!r}: use yolov8, yolo11 or torchvision:<model name>")


__all__ = ["Detector", "PrecomputedDetections", "TorchvisionDetector", "YoloDetector", "make_detector"]
