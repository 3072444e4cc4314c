"""Mask helpers: boxes, COCO RLE, small-region clean-up."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`bool [N, H, W]` -> `float32 [N, 4]` XYXY with inclusive max (last pixel index), as SAM's
    generator reports them; an empty mask gives [0, 0, 0, 0]."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    rows, cols = masks.any(2), masks.any(1)  # [N, H], [N, W]
    empty = ~rows.any(1)

    def first_last(hits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(size, device=hits.device)
        last = torch.where(hits, index, -1).amax(1)
        first = torch.where(hits, index, size).amin(1)
        return first, last

    y0, y1 = first_last(rows, h)
    x0, x1 = first_last(cols, w)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    boxes[empty] = 0.0
    return boxes


def mask_iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """IoU of two `bool [H, W]` masks, pixels in `ignore` left out; 1.0 when both are empty."""
    if ignore is not None:
        pred, gt = pred & ~ignore, gt & ~ignore
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else 1.0


def xyxy_to_xywh(box) -> list[float]:
    """`[x0, y0, x1, y1]` -> COCO `[x, y, w, h]` (plain floats, JSON-ready)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def encode_rle(masks: np.ndarray) -> list[dict]:
    """`bool [N, H, W]` -> COCO compressed RLEs with `counts` as str (JSON-ready)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE -> `bool [H, W]`."""
    counts = rle["counts"]
    return mask_utils.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts})


class RleMasks(Sequence):
    """RLEs read as `bool [H, W]` masks, each decoded only when it is read: many masks of a large
    photo without all of them in memory at once (`draw_overlay` takes it for a `[K, H, W]` stack)."""

    def __init__(self, rles: list[dict]) -> None:
        self.rles = rles

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, index: int) -> np.ndarray:
        return decode_rle(self.rles[index]).astype(bool)


def remove_small_regions(mask: np.ndarray, min_area: int, *, rule: str) -> tuple[np.ndarray | None, bool]:
    """Fills holes and removes islands smaller than `min_area` pixels (8-connected components).

    Args:
        mask: `bool [H, W]`.
        rule: what to do when every island is small: "paper" drops the mask (returns None),
            "official" keeps the largest island (the official generator's behaviour).

    Returns:
        The cleaned mask (or None) and whether anything changed.
    """
    changed = False
    holes, n = ndimage.label(~mask, structure=_EIGHT)
    if n:
        sizes = np.bincount(holes.ravel(), minlength=n + 1)[1:]
        small = np.flatnonzero(sizes < min_area) + 1
        if len(small):
            mask = mask | np.isin(holes, small)
            changed = True
    islands, n = ndimage.label(mask, structure=_EIGHT)
    if n:
        sizes = np.bincount(islands.ravel(), minlength=n + 1)[1:]
        small = sizes < min_area
        if small.any():
            changed = True
            keep = np.flatnonzero(~small) + 1
            if len(keep) == 0:
                if rule == "paper":
                    return None, True
                keep = np.array([int(np.argmax(sizes)) + 1])
            mask = np.isin(islands, keep)
    return mask, changed
