"""Instance segmentation benchmarks: mask AP of detector boxes + SAM on COCO val2017 and LVIS v1 val
(the paper's Table 5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samtasks.data import CocoDataset, LvisDataset
from samtasks.evaluation.config import DataConfig, ModelConfig
from samtasks.metrics.coco import CocoMaskAP, LvisMaskAP
from samtasks.structures import Sample
from samtasks.tasks.detectors import PrecomputedDetections, make_detector
from samtasks.tasks.instance import PRESETS, InstanceSegmenter, InstanceSettings
from samtasks.utils.export import coco_results


@dataclass(frozen=True)
class DetectorConfig:
    """Where the boxes come from: a COCO results JSON (`detections`, the paper's protocol with
    ViTDet-H boxes), else a live detector (`name`, `weights`, knobs)."""

    detections: str | None = None  # path; category ids are the dataset's
    name: str = "yolov8"  # yolov8, yolo11 or torchvision:<model>; classes mapped to the dataset by name
    weights: str | None = None
    conf: float = 0.001  # low, as AP evaluation wants the whole ranked list
    iou: float = 0.7
    max_det: int = 100


@dataclass(frozen=True)
class InstanceBenchConfig:
    """An instance-segmentation run; defaults are the paper's COCO protocol (PAPER.md section 5)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(
        default_factory=lambda: DataConfig(annotations="annotations/instances_val2017.json", images="val2017")
    )
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    task: InstanceSettings = field(default_factory=lambda: PRESETS["instance-boxes"])
    max_dets: int = 100  # detections per image the metric sees (COCO 100, LVIS 300)


LVIS_DEFAULTS = InstanceBenchConfig(
    data=DataConfig(annotations="lvis_v1_val.json", images="."),
    detector=DetectorConfig(max_det=300),
    max_dets=300,
)


class InstanceBenchmark:
    """`coco-instance` or `lvis-instance` over the dataset at `root`."""

    def __init__(self, name: str, config: InstanceBenchConfig, root: str | Path) -> None:
        self.name = name
        self.config = config
        annotations, images = config.data.resolve(root)
        if name == "lvis-instance":
            self.dataset = LvisDataset(annotations, images)
            self.metric: CocoMaskAP | LvisMaskAP = LvisMaskAP(annotations, config.max_dets)
        else:
            self.dataset = CocoDataset(annotations, images)
            self.metric = CocoMaskAP(annotations, config.max_dets)
        det = config.detector
        if det.detections is not None:
            path = Path(det.detections)
            self.detector = PrecomputedDetections(path if path.is_absolute() else Path(root) / path)
        else:
            self.detector = None  # built in setup(), with the model
        self.segmenter: InstanceSegmenter | None = None
        self.category_ids: dict[int, int] | None = None

    def samples(self) -> list[Sample]:
        return list(self.dataset)

    def setup(self, device: str | None) -> torch.device:
        det = self.config.detector
        where = self.config.model.torch_device(device)
        if self.detector is None:
            self.detector = make_detector(
                det.name, det.weights, conf=det.conf, iou=det.iou, max_det=det.max_det, device=where
            )
        predictor = self.config.model.predictor(where)
        self.segmenter = InstanceSegmenter(predictor, self.detector, **dataclasses.asdict(self.config.task))
        return predictor.device

    def _category_ids(self, names: dict[int, str]) -> dict[int, int] | None:
        """Detector class -> dataset category, by name (None: precomputed ids are the dataset's)."""
        if isinstance(self.detector, PrecomputedDetections):
            return None
        if self.category_ids is None:

            def key(name: str) -> str:
                return name.replace("_", " ").lower()

            by_name = {key(c["name"]): i for i, c in self.dataset.categories.items()}
            self.category_ids = {k: by_name[key(v)] for k, v in names.items() if key(v) in by_name}
            if not self.category_ids:
                raise ValueError("no detector class name matches a dataset category name")
        return self.category_ids

    def process(self, sample: Sample) -> dict:
        instances = self.segmenter.segment(sample.load_image(), image_id=sample.image_id)
        results = coco_results(instances, sample.image_id, self._category_ids(instances.names))
        results = sorted(results, key=lambda r: -r["score"])[: self.config.max_dets]
        return {"detections": len(instances), "results": results}

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        self.metric.reset()
        count = total = 0
        for record in records:
            self.metric.add({"image_id": record["image_id"], "results": record["results"]})
            count += 1
            total += record["detections"]
        return {**self.metric.compute(), "detections_per_image": total / max(1, count)}
