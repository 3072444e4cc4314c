"""BSDS500: `images/<split>/<id>.jpg` with `groundTruth/<split>/<id>.mat` (a 1xK cell of annotators, each
a struct with `Segmentation` and `Boundaries`, read by `samtasks.metrics.bsds.load_boundaries`)."""

from __future__ import annotations

from pathlib import Path

from samtasks.data.errors import DatasetError
from samtasks.structures import Sample


class BsdsDataset:
    """The images of one split that have ground truth, sorted by id.

    Args:
        root: the folder holding `images/` and `groundTruth/`.
        split: `test`, `val` or `train`; a root without split folders (files directly in `images/`
            and `groundTruth/`) is read as it is.
    """

    def __init__(self, root: str | Path, split: str = "test") -> None:
        root = Path(root)
        self.gt_dir, self.image_dir = root / "groundTruth" / split, root / "images" / split
        if not self.gt_dir.is_dir():
            self.gt_dir, self.image_dir = root / "groundTruth", root / "images"
        self.gt_paths = sorted(self.gt_dir.glob("*.mat"), key=lambda p: (len(p.stem), p.stem))
        if not self.gt_paths:
            raise DatasetError(f"no BSDS ground truth (.mat) in {root}/groundTruth/{split} or {root}/groundTruth")

    def __len__(self) -> int:
        return len(self.gt_paths)

    def __getitem__(self, index: int) -> Sample:
        gt = self.gt_paths[index]
        image = self.image_dir / f"{gt.stem}.jpg"
        return Sample(image_id=gt.stem, path=image, height=0, width=0, annotations=({"groundTruth": str(gt)},))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def ground_truth_folder(path: str | Path, split: str = "test") -> Path:
    """The folder of `<id>.mat` files that `path` names: `path` itself, or for a BSDS500 root (a folder
    without .mat files that holds `groundTruth/<split>`) that split's folder."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("*.mat")) and (path / "groundTruth" / split).is_dir():
        return path / "groundTruth" / split
    return path
