"""ultralytics YOLO as a box detector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from samtasks.structures import Detections
from samtasks.utils.device import resolve_device
from samtasks.utils.optional import import_optional


class YoloDetector:
    """Boxes from an ultralytics YOLO model (YOLOv8, YOLO11, ... detection or segmentation weights).

    Args:
        weights: a `.pt` file or a name ultralytics downloads (`yolov8n.pt`), or a model yaml
            (`yolov8n.yaml`: random weights, for tests).
        conf: minimum confidence; iou: the detector's own NMS IoU; classes: keep only these class
            ids; max_det: at most this many boxes.
        device: "cpu", "cuda:0", "mps", ... or None for the best available (`resolve_device`).
    """

    def __init__(
        self,
        weights: str = "yolov8n.pt",
        *,
        conf: float = 0.25,
        iou: float = 0.7,
        classes: Sequence[int] | None = None,
        max_det: int = 300,
        device: str | torch.device | None = None,
    ) -> None:
        ultralytics = import_optional("ultralytics", "yolo", "the YOLO detector")
        try:
            self.model = ultralytics.YOLO(weights)
        except Exception as err:  # ultralytics raises many types for missing or failed downloads
            raise ValueError(
                f"cannot load YOLO weights {weights!r}: {err}. Without network, download {Path(weights).name} by "
                "hand (https://github.com/ultralytics/assets/releases) and pass its path with --detector-weights "
                "(make demo: YOLO=PATH), or put it in the folder you run from"
            ) from err
        self.weights = weights
        self.knobs = {"conf": conf, "iou": iou, "classes": list(classes) if classes else None, "max_det": max_det}
        self.device = resolve_device(device)

    def __call__(self, image: np.ndarray, image_id=None) -> Detections:
        bgr = np.ascontiguousarray(image[..., ::-1])  # ultralytics reads numpy arrays as BGR (OpenCV order)
        result = self.model.predict(bgr, verbose=False, device=self.device, **self.knobs)[0]
        boxes = result.boxes
        names = {int(k): str(v) for k, v in result.names.items()}
        if boxes is None or len(boxes) == 0:
            return Detections.empty(names)
        return Detections(
            boxes=boxes.xyxy.cpu().numpy().astype(np.float32),
            scores=boxes.conf.cpu().numpy().astype(np.float32),
            labels=boxes.cls.cpu().numpy().astype(np.int64),
            names=names,
        )
