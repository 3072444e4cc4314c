"""Dataclasses that cross layer boundaries. Field comments give dtype, [shape] and frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samtasks.utils.masks import decode_rle, xyxy_to_xywh

if TYPE_CHECKING:
    import torch


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

    image_id: int | str  # the dataset's id (COCO), or the file's name or path relative to the dataset root
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


@dataclass
class GeneratedMasks:
    """K masks of one image, in the order the generator ranks them."""

    image_size: tuple[int, int]  # (H, W)
    rles: list[dict] = field(default_factory=list)  # COCO compressed RLE, original image frame
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # [K, 4] XYXY, inclusive max
    predicted_iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [K]
    stability_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [K]
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))  # [K, 2] (x, y) prompt
    crop_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))  # [K, 4] XYXY
    low_res_logits: np.ndarray | None = None  # float32 [K, S, S] in the crop's padded model frame

    def __len__(self) -> int:
        return len(self.rles)

    def masks(self) -> np.ndarray:
        """All masks decoded, `bool [K, H, W]`."""
        if not self.rles:
            return np.zeros((0, *self.image_size), bool)
        return np.stack([decode_rle(r) for r in self.rles])

    @property
    def areas(self) -> np.ndarray:
        """`int64 [K]` mask areas in pixels."""
        from pycocotools import mask as mask_utils

        return np.array([int(mask_utils.area({**r, "counts": r["counts"].encode()})) for r in self.rles], np.int64)

    def records(self) -> list[dict]:
        """SA-1B style records: segmentation (RLE), bbox and crop_box XYWH, area, predicted_iou,
        point_coords, stability_score."""
        areas = self.areas
        out = []
        for i, rle in enumerate(self.rles):
            out.append(
                {
                    "segmentation": rle,
                    "bbox": xyxy_to_xywh(self.boxes[i]),
                    "area": int(areas[i]),
                    "predicted_iou": float(self.predicted_iou[i]),
                    "point_coords": [self.points[i].tolist()],
                    "stability_score": float(self.stability_score[i]),
                    "crop_box": [int(v) for v in xyxy_to_xywh(self.crop_boxes[i])],
                }
            )
        return out

    def select(self, keep: np.ndarray) -> GeneratedMasks:
        """The masks at indices `keep`, in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        return GeneratedMasks(
            image_size=self.image_size,
            rles=[self.rles[i] for i in keep],
            boxes=self.boxes[keep],
            predicted_iou=self.predicted_iou[keep],
            stability_score=self.stability_score[keep],
            points=self.points[keep],
            crop_boxes=self.crop_boxes[keep],
            low_res_logits=None if self.low_res_logits is None else self.low_res_logits[keep],
        )

    @staticmethod
    def concat(parts: list[GeneratedMasks], image_size: tuple[int, int]) -> GeneratedMasks:
        if not parts:
            return GeneratedMasks(image_size=image_size)
        logits = [p.low_res_logits for p in parts]
        return GeneratedMasks(
            image_size=image_size,
            rles=[r for p in parts for r in p.rles],
            boxes=np.concatenate([p.boxes for p in parts]),
            predicted_iou=np.concatenate([p.predicted_iou for p in parts]),
            stability_score=np.concatenate([p.stability_score for p in parts]),
            points=np.concatenate([p.points for p in parts]),
            crop_boxes=np.concatenate([p.crop_boxes for p in parts]),
            low_res_logits=None if any(x is None for x in logits) else np.concatenate(logits),
        )


@dataclass
class Proposals:
    """Up to `max_proposals` masks of one image, best first."""

    masks: GeneratedMasks  # the generator's masks, reordered and cut
    scores: np.ndarray  # float32 [K], the ranking score (descending)

    def __len__(self) -> int:
        return len(self.scores)

    def results(self, image_id: int, category_id: int = 1) -> list[dict]:
        """COCO/LVIS results entries (class-agnostic): image_id, category_id, segmentation (RLE), score."""
        return [
            {"image_id": image_id, "category_id": category_id, "segmentation": rle, "score": float(score)}
            for rle, score in zip(self.masks.rles, self.scores, strict=True)
        ]


@dataclass
class ClickResult:
    """Per object, the IoU after each click."""

    ious: np.ndarray  # float64 [K, N]: IoU with the ground truth after clicks 1..N (default answer)
    oracle_iou: np.ndarray  # float64 [K]: best of the 3 first-click masks against the ground truth
    clicks: np.ndarray  # int64 [K, N, 3]: (x, y, positive) of each click, -1 once no error pixel is left


@dataclass
class TextCandidates:
    """One image's candidate masks and their CLIP image features."""

    image: np.ndarray  # uint8 [H, W, 3]
    masks: GeneratedMasks  # K candidates (with low-res logits)
    features: torch.Tensor  # float32 [K, D], L2-normalized


@dataclass
class TextResult:
    """The answer to one text query."""

    prompt: str
    mask: np.ndarray | None  # bool [H, W], the chosen mask (None without candidates)
    score: float  # the chosen candidate's softmax probability over candidates
    index: int  # the chosen candidate (-1 without candidates)
    selected: list[int]  # every candidate returned (the best, or all within the margin with `all`)
    ranking: list[dict]  # candidates best first: index, probability, similarity, area, bbox XYWH
    refined_by_point: tuple[float, float] | None = None
