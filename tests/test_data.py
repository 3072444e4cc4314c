"""COCO and LVIS readers: samples, lazy images, image paths, errors naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samtasks.data import CocoDataset, DatasetError, LvisDataset

from .synthetic import write_dataset


def test_coco_reader(tmp_path):
    ann = write_dataset(tmp_path, 3)
    dataset = CocoDataset(ann, tmp_path / "val2017")
    assert len(dataset) == 3 and dataset.image_ids == [100, 101, 102]
    sample = dataset[1]
    assert sample.path == tmp_path / "val2017" / "000000000101.jpg"
    assert len(sample.annotations) == 3 and {a["image_id"] for a in sample.annotations} == {101}
    image = sample.load_image()
    assert image.shape == (sample.height, sample.width, 3) and image.dtype == np.uint8
    assert [s.image_id for s in dataset] == dataset.image_ids


def test_lvis_reader_finds_images_by_coco_url(tmp_path):
    ann = write_dataset(tmp_path, 2, lvis=True)
    dataset = LvisDataset(ann, tmp_path)  # the COCO root holding val2017/
    assert dataset[0].path == tmp_path / "val2017" / "000000000100.jpg"
    assert dataset.frequency(3) == "r"
    flat = LvisDataset(ann, tmp_path / "val2017")  # a flat folder works too
    assert flat[0].path.is_file()


def test_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found: .*missing.json"):
        CocoDataset(tmp_path / "missing.json", tmp_path)
    with pytest.raises(DatasetError, match="image folder not found"):
        CocoDataset(tmp_path / "x.json", tmp_path / "nowhere")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        CocoDataset(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO-format"):
        LvisDataset(bad, tmp_path)
