"""LVIS v1 annotations: COCO format plus category frequencies; images are COCO 2017's."""

from __future__ import annotations

from pathlib import Path

from samtasks.data.coco import CocoDataset

FREQUENCIES = {"r": "rare", "c": "common", "f": "frequent"}


class LvisDataset(CocoDataset):
    """Images of an LVIS annotation file (e.g. `lvis_v1_val.json`).

    LVIS v1 images carry a `coco_url` instead of a `file_name`; the image is looked up as
    `<images>/<split>/<name>` (the COCO 2017 layout, `train2017/` and `val2017/` side by side), then as
    `<images>/<name>`.

    Args:
        annotations: the JSON file.
        images: the COCO 2017 image root (holding `train2017/` and `val2017/`), or one flat folder.
    """

    what = "LVIS annotation file"

    def image_path(self, info: dict) -> Path:
        if "file_name" in info:
            return self.image_root / info["file_name"]
        split, name = info["coco_url"].split("/")[-2:]
        nested = self.image_root / split / name
        return nested if nested.is_file() or not (self.image_root / name).is_file() else self.image_root / name

    def frequency(self, category_id: int) -> str:
        """ "r", "c" or "f" (LVIS's rare / common / frequent split by training-image count)."""
        return self.categories[category_id]["frequency"]
