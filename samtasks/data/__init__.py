"""Dataset readers: annotations parsed eagerly, images read lazily through `Sample.load_image()`."""

from samtasks.data.coco import CocoDataset
from samtasks.data.errors import DatasetError
from samtasks.data.lvis import LvisDataset

__all__ = ["CocoDataset", "DatasetError", "LvisDataset"]
