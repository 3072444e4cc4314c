"""Text-to-mask benchmark (ours; the paper reports no number): on COCO, every category present in an
image is a query; the score is the IoU of the returned mask with the best-matching instance of that
category, without and with a simulated point fix. `pairs` replaces COCO with user-supplied
(image, phrase, mask) triples."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samtasks.data import CocoDataset, DatasetError
from samtasks.data.masks import annotation_mask, sample_masks
from samtasks.evaluation.config import DataConfig, ModelConfig
from samtasks.structures import Sample
from samtasks.tasks.single_point import center_point, mask_iou
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
    """User triples grouped by image: `mask` is a PNG path (nonzero = object) or a COCO RLE."""
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
    for i, (image, anns) in enumerate(by_image.items()):
        file = root / image
        try:
            with Image.open(file) as pil:
                w, h = pil.size
        except OSError as err:
            raise DatasetError(f"{path}: cannot read image {file}: {err}") from err
        samples.append(Sample(image_id=i, path=file, height=h, width=w, annotations=tuple(anns)))
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
        self.segmenter: TextSegmenter | None = None

    def samples(self) -> list[Sample]:
        return self._samples if self._samples is not None else list(self.dataset)

    def setup(self, device: str | None) -> None:
        clip = self.config.clip
        encoder = OpenClipEncoder(clip.model, clip.pretrained, device=device)
        self.segmenter = TextSegmenter(self.config.model.predictor(device), encoder, self.config.task)

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
        out = []
        for key, phrase, targets in self._queries(sample):
            result = self.segmenter.query(image, phrase)
            pred = result.mask if result.mask is not None else np.zeros(image.shape[:2], bool)
            ious = [mask_iou(pred, t) for t in targets]
            entry = {"key": key, "phrase": phrase, "iou": max(ious)}
            if self.config.point_fix:
                # The click a user would give: the center of the instance the answer overlaps most
                # (the largest instance when it overlaps none).
                target = targets[int(np.argmax(ious))] if max(ious) > 0 else max(targets, key=np.count_nonzero)
                fixed = self.segmenter.query(image, phrase, point=center_point(target))
                entry["iou_point"] = max(mask_iou(fixed.mask, t) for t in targets) if fixed.mask is not None else 0.0
            out.append(entry)
        return {"queries": out}

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        per_key: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
        for record in records:
            for q in record["queries"]:
                per_key[q["key"] if self.dataset is not None else "pairs"].append((q["iou"], q.get("iou_point")))
        everything = [v for values in per_key.values() for v in values]
        if not everything:
            return {"queries": 0}
        metrics: dict[str, float] = {"queries": len(everything), "mIoU": float(np.mean([v[0] for v in everything]))}
        if self.config.point_fix:
            metrics["mIoU_point"] = float(np.mean([v[1] for v in everything]))
        if self.dataset is not None:
            for key, values in sorted(per_key.items()):
                metrics[f"mIoU/{key}"] = float(np.mean([v[0] for v in values]))
        return metrics
