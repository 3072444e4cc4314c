"""Text-to-mask benchmark (ours; the paper reports no number): on COCO, every category present in an
image is a query, scored by `samtasks.metrics.text` (the IoU of the returned mask with the best-matching
instance of that category, without and with a simulated point fix). `pairs` replaces COCO with
user-supplied (image, phrase, mask) triples."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from samtasks.data import CocoDataset, DatasetError
from samtasks.data.masks import annotation_mask, sample_masks
from samtasks.evaluation.config import DataConfig, ModelConfig
from samtasks.metrics.text import TextMetrics, point_fix_target
from samtasks.structures import Sample
from samtasks.tasks.single_point import center_point
from samtasks.tasks.text import CLIP_MODELS, PRESETS, OpenClipEncoder, TextSegmenter, TextSettings


@dataclass(frozen=True)
class ClipConfig:
    model: str = CLIP_MODELS["fast"][0]
    pretrained: str | None = CLIP_MODELS["fast"][1]  # None: random weights (tests)


@dataclass(frozen=True)
class TextBenchConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(
        default_factory=lambda: DataConfig(annotations="annotations/instances_val2017.json", images="val2017")
    )
    clip: ClipConfig = field(default_factory=ClipConfig)
    task: TextSettings = field(default_factory=lambda: PRESETS["text-clip"])
    point_fix: bool = True  # also score a re-prompt with the center of the best-matching instance
    pairs: str | None = None  # JSON list of {"image", "phrase", "mask"} (paths relative to --data)


def read_pairs(path: Path, root: Path) -> list[Sample]:
    """User triples grouped by image: `mask` is a PNG path (nonzero = object) or a COCO RLE. An image is
    known by its path as the file gives it, so its records stay its own when entries are added."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read pairs {path}: {err}") from err
    by_image: dict[str, list[dict]] = defaultdict(list)
    for i, e in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(e, dict) or not {"image", "phrase", "mask"} <= set(e):
            raise DatasetError(f"{path}: entry {i} needs image, phrase and mask")
        mask = {"mask_file": str(root / e["mask"])} if isinstance(e["mask"], str) else {"segmentation": e["mask"]}
        by_image[e["image"]].append({"id": i, "phrase": e["phrase"], **mask})
    if not by_image:
        raise DatasetError(f"{path}: no (image, phrase, mask) entries")
    from PIL import Image

    samples = []
    for image, anns in by_image.items():
        file = root / image
        try:
            with Image.open(file) as pil:
                w, h = pil.size
        except OSError as err:
            raise DatasetError(f"{path}: cannot read image {file}: {err}") from err
        samples.append(Sample(image_id=image, path=file, height=h, width=w, annotations=tuple(anns)))
    return samples


class TextBenchmark:
    def __init__(self, name: str, config: TextBenchConfig, root: str | Path) -> None:
        self.name = name
        self.config = config
        root = Path(root)
        if config.pairs:
            pairs = Path(config.pairs)
            self._samples = read_pairs(pairs if pairs.is_absolute() else root / pairs, root)
            self.dataset = None
        else:
            self.dataset = CocoDataset(*config.data.resolve(root))
            self._samples = None
        self.metric = TextMetrics(per_key=self.dataset is not None)  # user pairs: one mIoU over all
        self.segmenter: TextSegmenter | None = None

    def samples(self) -> list[Sample]:
        return self._samples if self._samples is not None else list(self.dataset)

    def setup(self, device: str | None) -> torch.device:
        where = self.config.model.torch_device(device)
        encoder = OpenClipEncoder(self.config.clip.model, self.config.clip.pretrained, device=where)
        predictor = self.config.model.predictor(where)
        self.segmenter = TextSegmenter(predictor, encoder, self.config.task)
        return predictor.device

    def _queries(self, sample: Sample) -> list[tuple[str, str, list[np.ndarray]]]:
        """(key, phrase, target masks) per query of the image."""
        if self.dataset is None:
            return [
                (str(a["id"]), a["phrase"], [annotation_mask(a, sample.height, sample.width)])
                for a in sample.annotations
            ]
        masks, _, anns = sample_masks(sample)
        by_category: dict[int, list[np.ndarray]] = defaultdict(list)
        for mask, ann in zip(masks, anns, strict=True):
            by_category[ann["category_id"]].append(mask)
        names = self.dataset.categories
        return [(names[c]["name"], names[c]["name"], m) for c, m in sorted(by_category.items())]

    def process(self, sample: Sample) -> dict:
        image = sample.load_image()
        answers, fixed, targets, phrases = {}, {}, {}, {}
        for key, phrase, masks in self._queries(sample):
            answers[key] = self.segmenter.query(image, phrase).mask
            targets[key], phrases[key] = masks, phrase
            if self.config.point_fix:
                point = center_point(point_fix_target(answers[key], masks))
                fixed[key] = self.segmenter.query(image, phrase, point=point).mask
        stats = self.metric.image_stats(answers, targets, fixed if self.config.point_fix else None)
        return {"queries": [{"key": q["key"], "phrase": phrases[q["key"]], **q} for q in stats["queries"]]}

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        self.metric.reset()
        for record in records:
            self.metric.add({"queries": record["queries"]})
        return self.metric.compute()
