"""Detections read from a COCO results JSON (the paper's protocol: boxes of another detector)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from samtasks.structures import Detections

logger = logging.getLogger(__name__)


class PrecomputedDetections:
    """Boxes from a COCO-format results file: a list of `{"image_id", "category_id", "bbox": [x, y, w, h],
    "score"}` (extra keys ignored).

    Images are looked up by `image_id`; for a user's own files pass the file name, the stem, or (COCO
    style `000000397133.jpg`) the number in the stem -- entries may carry `"file_name"` instead of an id.

    Args:
        path: the JSON file.
        names: category id -> name (e.g. from the dataset's categories); default "class <id>".
        min_score: drop boxes below this score.
    """

    def __init__(self, path: str | Path, *, names: dict[int, str] | None = None, min_score: float = 0.0) -> None:
        path = Path(path)
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read detections {path}: {err}") from err
        if not isinstance(entries, list):
            raise ValueError(f"{path}: detections must be a JSON list of COCO results entries")
        self.by_image: dict = defaultdict(list)
        for i, e in enumerate(entries):
            try:
                key = e["file_name"] if "file_name" in e else e["image_id"]
                x, y, w, h = (float(v) for v in e["bbox"])
                entry = (x, y, x + w, y + h, float(e.get("score", 1.0)), int(e.get("category_id", 0)))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}: entry {i} is not a COCO results entry with bbox: {e!r:.200}") from err
            if entry[4] >= min_score and w > 0 and h > 0:
                self.by_image[key].append(entry)
        categories = {c for rows in self.by_image.values() for *_, c in rows}
        self.names = names or {c: f"class {c}" for c in sorted(categories)}
        self.path = path

    def _rows(self, image_id) -> list:
        if image_id in self.by_image:
            return self.by_image[image_id]
        text = str(image_id)
        stem = Path(text).stem
        for key in (Path(text).name, stem, int(stem) if stem.isdigit() else None):
            if key is not None and key in self.by_image:
                return self.by_image[key]
        return []

    def __call__(self, image: np.ndarray, image_id=None) -> Detections:
        if image_id is None:
            raise ValueError("precomputed detections need the image id (or file name) of each image")
        rows = sorted(self._rows(image_id), key=lambda r: -r[4])
        if not rows:
            return Detections.empty(self.names)
        array = np.asarray(rows, np.float64)
        h, w = image.shape[:2]
        boxes = array[:, :4].astype(np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)  # results files hold boxes that overhang the image
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not ok.any():
            logger.warning(
                "%s: all %d boxes of image %s lie outside its %dx%d pixels", self.path, len(ok), image_id, w, h
            )
        return Detections(
            boxes=boxes[ok],
            scores=array[ok, 4].astype(np.float32),
            labels=array[ok, 5].astype(np.int64),
            names=self.names,
        )
