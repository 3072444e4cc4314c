"""Overlays of masks, boxes and points on an image, for people to look at."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def palette(n: int, seed: int = 0) -> np.ndarray:
    """`uint8 [n, 3]` distinct bright colours (golden-ratio hues), stable for a given seed."""
    hues = (seed * 0.37 + np.arange(n) * 0.618034) % 1.0
    h6 = hues * 6
    c = np.stack([np.abs(h6 - 3) - 1, 2 - np.abs(h6 - 2), 2 - np.abs(h6 - 4)], axis=1).clip(0, 1)
    return (60 + 195 * c).astype(np.uint8)


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    boxes: np.ndarray | None = None,
    labels: list[str] | None = None,
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Image.Image:
    """Draws masks (filled, with outlines), boxes with captions and points on an image.

    Args:
        image: `uint8 [H, W, 3]` RGB.
        masks: `bool [K, H, W]`, or a sequence of K `bool [H, W]` masks (`RleMasks`).
        boxes: `[K, 4]` XYXY pixels, optional.
        labels: K captions drawn at the boxes' top-left corners, optional.
        points: `[N, 2]` (x, y) pixels, optional; `point_labels` `[N]` colours them (1 green, 0 red).
    """
    out = image.astype(np.float32).copy()
    colors = palette(len(masks))
    for mask, color in zip(masks, colors, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        edge = mask & ~_eroded(mask)
        out[edge] = color
    canvas = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    if boxes is not None:
        for i, box in enumerate(np.asarray(boxes, dtype=float)):
            color = tuple(int(c) for c in colors[i % len(colors)]) if len(colors) else (255, 255, 0)
            draw.rectangle(box.tolist(), outline=color, width=2)
            if labels is not None:
                draw.text((box[0] + 3, box[1] + 2), labels[i], fill=color)
    if points is not None:
        point_labels = np.ones(len(points)) if point_labels is None else point_labels
        for (x, y), label in zip(np.asarray(points, dtype=float), point_labels, strict=True):
            fill = (40, 220, 40) if label == 1 else (230, 40, 40)
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=fill, outline=(255, 255, 255), width=2)
    return canvas


def _eroded(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion (pixels outside the image count as off)."""
    padded = np.pad(mask, 1)
    out = mask.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out
