"""Synthetic COCO- and LVIS-format datasets written by the tests: images of coloured shapes with
exact masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from samtasks.utils.masks import encode_rle

CATEGORIES = [
    {"id": 1, "name": "square", "frequency": "f"},
    {"id": 2, "name": "disc", "frequency": "c"},
    {"id": 3, "name": "bar", "frequency": "r"},
]


def _shapes(rng: np.random.Generator, h: int, w: int) -> list[tuple[int, np.ndarray]]:
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for category in (1, 2, 3):
        cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
        r = int(rng.integers(6, max(7, min(h, w) // 4)))
        if category == 1:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif category == 2:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (abs(yy - cy) <= 2) & (abs(xx - cx) <= 3 * r)
        out.append((category, mask))
    return out


def write_dataset(root: Path, n_images: int = 4, *, lvis: bool = False, seed: int = 0, large: bool = True) -> Path:
    """Writes `n_images` images under `root/val2017/` and the annotation file `root/annotations.json`
    (LVIS style with `coco_url`, frequencies and the federated lists if `lvis`). With `large`, the
    first image is 600x800 (the others smaller), so that areas fall in every COCO range."""
    rng = np.random.default_rng(seed)
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        h, w = (600, 800) if i == 0 and large else (int(rng.integers(60, 120)), int(rng.integers(60, 120)))
        image = np.full((h, w, 3), 40, np.uint8)
        image_id = 100 + i
        for category, mask in _shapes(rng, h, w):
            image[mask] = rng.integers(80, 255, 3)
            rle = encode_rle(mask[None])[0]
            ys, xs = np.nonzero(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle,
                    "area": int(mask.sum()),
                    "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                    "iscrowd": 0,
                }
            )
        name = f"{image_id:012d}.jpg"
        Image.fromarray(image).save(root / "val2017" / name, quality=95)
        info = {"id": image_id, "height": h, "width": w}
        if lvis:
            info.update(
                coco_url=f"http://images.cocodataset.org/val2017/{name}",
                neg_category_ids=[],
                not_exhaustive_category_ids=[],
            )
        else:
            info["file_name"] = name
        images.append(info)
    categories = CATEGORIES if lvis else [{k: c[k] for k in ("id", "name")} for c in CATEGORIES]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def gt_masks(annotation_path: Path) -> dict[int, list[dict]]:
    """`image_id -> annotations`."""
    data = json.loads(Path(annotation_path).read_text())
    out: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        out.setdefault(ann["image_id"], []).append(ann)
    return out
