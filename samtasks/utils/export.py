"""Writing masks in the formats users train and evaluate with: COCO results (RLE), YOLO segmentation
labels, and a prompt's mask, overlay and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from skimage import measure

from samtasks.structures import InstanceMasks
from samtasks.utils.masks import encode_rle, xyxy_to_xywh


def coco_results(
    instances: InstanceMasks, image_id: int | str, category_ids: dict[int, int] | None = None
) -> list[dict]:
    """COCO results entries: image_id, category_id, category_name, segmentation (compressed RLE),
    bbox (the prompt box, XYWH), score.

    Args:
        category_ids: detector class id -> dataset category id; classes missing from it are dropped.
            Default: the class id itself.
    """
    out = []
    rles = [encode_rle(mask[None])[0] for mask in instances.masks]  # one at a time: no copy of the whole stack
    for i, rle in enumerate(rles):
        label = int(instances.labels[i])
        category = label if category_ids is None else category_ids.get(label)
        if category is None:
            continue
        out.append(
            {
                "image_id": image_id,
                "category_id": category,
                "category_name": instances.names.get(label, str(label)),
                "segmentation": rle,
                "bbox": xyxy_to_xywh(instances.boxes[i]),
                "score": float(instances.scores[i]),
            }
        )
    return out


def mask_polygon(mask: np.ndarray, tolerance: float = 1.0) -> np.ndarray:
    """The outer boundary of the mask's largest region as a polygon, `float32 [K, 2]` (x, y) pixel
    coordinates (pixel edges, so a full-image mask gives the image corners); empty if the mask is.

    Holes and smaller islands are dropped: a YOLO label holds one polygon per object.
    """
    if not mask.any():
        return np.zeros((0, 2), np.float32)
    labels = measure.label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())[1:]
    region = labels == (int(np.argmax(sizes)) + 1)
    # Upsampled 2x with padding, so the contour runs on pixel edges and thin parts keep an area.
    big = np.pad(np.kron(region, np.ones((2, 2), bool)), 1)
    contours = measure.find_contours(big.astype(np.float32), 0.5)
    contour = max(contours, key=len)
    contour = measure.approximate_polygon(contour, tolerance=2 * tolerance)
    yx = (contour - 1 + 0.5) / 2  # back to original pixel-edge coordinates
    return np.stack([yx[:, 1], yx[:, 0]], 1).astype(np.float32)


def yolo_label_lines(instances: InstanceMasks, height: int, width: int) -> list[str]:
    """YOLO segmentation labels: `class x1 y1 x2 y2 ...` with coordinates normalized to [0, 1]."""
    lines = []
    for mask, label in zip(instances.masks, instances.labels, strict=True):
        polygon = mask_polygon(mask)
        if len(polygon) < 3:
            continue
        xy = (polygon / np.array([width, height], np.float32)).clip(0, 1)
        lines.append(f"{int(label)} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
    return lines


def write_yolo_dataset_yaml(root: Path, names: dict[int, str]) -> Path:
    """`root/dataset.yaml` pointing YOLO at `root/images` (train and val) with the class names."""
    path = Path(root) / "dataset.yaml"
    data = {"path": str(Path(root).resolve()), "train": "images", "val": "images", "names": dict(sorted(names.items()))}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_prompt_result(
    out: str | Path,
    stem: str,
    image: np.ndarray,
    masks: np.ndarray,
    iou_scores: np.ndarray,
    chosen: int,
    *,
    source: str,
    model: str,
    points: list | None = None,
    labels: list | None = None,
    box: list | None = None,
) -> list[Path]:
    """The answer to one prompt: `<stem>_mask.png` (mask `chosen`, 0/255), `<stem>_overlay.png` (it with
    the prompt drawn) and `<stem>.json` (the image `source`, its size, `model`, the prompt, `chosen`,
    every mask's predicted IoU and area), written atomically into `out`.

    Args:
        masks: `bool [C, H, W]` the prompt's masks, original image frame; iou_scores: `float [C]`.
        points: (x, y) pixels with `labels` (1 foreground, 0 background); box: XYXY pixels.
    """
    from PIL import Image

    from samtasks.utils.files import save_image, write_text
    from samtasks.utils.viz import draw_overlay

    out = Path(out)
    mask = masks[chosen]
    paths = [out / f"{stem}_mask.png", out / f"{stem}_overlay.png", out / f"{stem}.json"]
    save_image(Image.fromarray(mask.astype(np.uint8) * 255), paths[0])
    overlay = draw_overlay(
        image,
        mask[None],
        boxes=np.asarray([box]) if box else None,
        points=np.asarray(points) if points else None,
        point_labels=np.asarray(labels),
    )
    save_image(overlay, paths[1])
    record = {
        "image": source,
        "size": list(image.shape[:2]),
        "model": model,
        "prompt": {"points": points, "labels": labels, "box": box},
        "chosen": chosen,
        "masks": [
            {"index": i, "predicted_iou": float(iou_scores[i]), "area": int(masks[i].sum())} for i in range(len(masks))
        ],
    }
    write_text(paths[2], json.dumps(record, indent=2))
    return paths
