"""Object masks of a sample, whatever the dataset format: COCO polygons / RLE (crowd and `ignore`
objects become an ignore region), one PNG per object, or instance-id PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samtasks.data.errors import DatasetError
from samtasks.structures import Sample
from samtasks.utils.image import IMAGE_SUFFIXES


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """One annotation's `bool [H, W]` mask: COCO `segmentation` (polygons, RLE, uncompressed RLE),
    `mask_file` (a PNG, nonzero = object) or `instance_file` + `instance_id`."""
    if "segmentation" in ann:
        seg = ann["segmentation"]
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = {
                "size": seg["size"],
                "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"],
            }
        return mask_utils.decode(rle).astype(bool)
    if "mask_file" in ann:
        return _read_png(ann["mask_file"], height, width) > 0
    if "instance_file" in ann:
        return _read_png(ann["instance_file"], height, width) == ann["instance_id"]
    raise DatasetError(f"annotation {ann.get('id', '?')} has no segmentation, mask_file or instance_file")


def _read_png(path: str | Path, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except OSError as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != (height, width):
        raise DatasetError(f"mask {path} is {array.shape[1]}x{array.shape[0]}, its image {width}x{height}")
    return array


def sample_masks(sample: Sample) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The objects of `sample`: `bool [K, H, W]` masks, `bool [H, W]` ignore region (crowd and
    `ignore` annotations), and the K annotations. Empty objects are left out."""
    h, w = sample.height, sample.width
    masks, anns = [], []
    ignore = np.zeros((h, w), bool)
    for ann in sample.annotations:
        mask = annotation_mask(ann, h, w)
        if ann.get("iscrowd", 0) or ann.get("ignore", 0):
            ignore |= mask
        elif mask.any():
            masks.append(mask)
            anns.append(ann)
    return (np.stack(masks) if masks else np.zeros((0, h, w), bool)), ignore, anns


def _image_files(folder: Path) -> list[Path]:
    """The folder's images, sorted; each is known by its file name (`Sample.image_id`), which stays
    its own when files are added or removed between runs."""
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


class MaskFolderDataset:
    """Images with one PNG per object: `<masks>/<stem>/*.png` or `<masks>/<stem>_*.png` (nonzero = object).

    Args:
        images: the image folder; masks: the mask folder.
    """

    def __init__(self, images: str | Path, masks: str | Path) -> None:
        self.masks = Path(masks)
        if not self.masks.is_dir():
            raise DatasetError(f"mask folder not found: {self.masks}")
        self.files = _image_files(Path(images))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        found = sorted((self.masks / path.stem).glob("*.png")) + sorted(self.masks.glob(f"{path.stem}_*.png"))
        h, w = _size(path)
        anns = tuple({"id": k + 1, "mask_file": str(f)} for k, f in enumerate(found))
        return Sample(image_id=path.name, path=path, height=h, width=w, annotations=anns)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class InstancePngDataset:
    """Images with an instance-id PNG each: `<instances>/<stem>.png`, 0 = background, every other value one
    object; `ignore_value` (e.g. 255) marks pixels left out of the evaluation."""

    def __init__(self, images: str | Path, instances: str | Path, ignore_value: int | None = None) -> None:
        self.instances = Path(instances)
        if not self.instances.is_dir():
            raise DatasetError(f"instance folder not found: {self.instances}")
        self.files = _image_files(Path(images))
        self.ignore_value = ignore_value

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        ids_path = self.instances / f"{path.stem}.png"
        if not ids_path.is_file():
            raise DatasetError(f"instance mask not found: {ids_path}")
        h, w = _size(path)
        values = np.unique(_read_png(ids_path, h, w))
        anns = []
        for v in values[values != 0]:
            ann = {"id": int(v), "instance_file": str(ids_path), "instance_id": int(v)}
            if self.ignore_value is not None and v == self.ignore_value:
                ann["ignore"] = 1
            anns.append(ann)
        return Sample(image_id=path.name, path=path, height=h, width=w, annotations=tuple(anns))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def subsample(samples: list[Sample], budget: int | None, seed: int = 0) -> list[Sample]:
    """At most `budget` objects over all samples, drawn uniformly without replacement (seeded); crowd
    and ignore annotations are kept with their image; samples left without objects are dropped."""
    if budget is None:
        return samples
    objects = [
        (s, a)
        for s, sample in enumerate(samples)
        for a, ann in enumerate(sample.annotations)
        if not ann.get("iscrowd", 0) and not ann.get("ignore", 0)
    ]
    if len(objects) <= budget:
        return samples
    chosen = {objects[i] for i in np.random.default_rng(seed).choice(len(objects), budget, replace=False)}
    out = []
    for s, sample in enumerate(samples):
        anns = tuple(
            ann
            for a, ann in enumerate(sample.annotations)
            if (s, a) in chosen or ann.get("iscrowd", 0) or ann.get("ignore", 0)
        )
        if any((s, a) in chosen for a in range(len(sample.annotations))):
            out.append(Sample(sample.image_id, sample.path, sample.height, sample.width, anns))
    return out
