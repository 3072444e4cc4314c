"""COCO-format instance annotations (`instances_val2017.json` and any file in that format)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from samtasks.data.errors import DatasetError
from samtasks.structures import Sample


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {what} {path}: {err}") from err
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DatasetError(f"{path} is not a COCO-format annotation file (needs images, annotations, categories)")
    return data


class CocoDataset:
    """Images of a COCO-format annotation file, in the file's order.

    Args:
        annotations: the JSON file.
        images: the folder that `file_name` entries are relative to.
    """

    what = "COCO annotation file"

    def __init__(self, annotations: str | Path, images: str | Path) -> None:
        self.annotations_path = Path(annotations)
        self.image_root = Path(images)
        if not self.image_root.is_dir():
            raise DatasetError(f"image folder not found: {self.image_root}")
        self.dataset = read_json(self.annotations_path, self.what)
        self.categories = {c["id"]: c for c in self.dataset["categories"]}
        by_image = defaultdict(list)
        for ann in self.dataset["annotations"]:
            by_image[ann["image_id"]].append(ann)
        self._images = self.dataset["images"]
        self._annotations = by_image

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Sample:
        info = self._images[index]
        return Sample(
            image_id=info["id"],
            path=self.image_path(info),
            height=info["height"],
            width=info["width"],
            annotations=tuple(self._annotations.get(info["id"], ())),
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    @property
    def image_ids(self) -> list[int]:
        return [info["id"] for info in self._images]

    def image_path(self, info: dict) -> Path:
        return self.image_root / info["file_name"]
