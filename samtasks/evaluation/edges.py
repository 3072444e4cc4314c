"""Edge-detection benchmark on BSDS500 (the paper's Table 3): `EdgeDetector` on each test image, the map
saved as the 8-bit PNG the official benchmark reads, and that PNG scored per image by our BSDS
evaluator; the counts go into the image's record, so a resumed run redoes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samtasks.data.bsds import BsdsDataset
from samtasks.evaluation.config import ModelConfig
from samtasks.metrics.bsds import BoundaryMetrics, load_boundaries, load_prediction
from samtasks.structures import Sample
from samtasks.tasks.edges import EdgeDetector, EdgeSettings


@dataclass(frozen=True)
class BoundaryEvalConfig:
    """The official benchmark's parameters."""

    n_thresholds: int = 99
    max_dist: float = 0.0075  # fraction of the image diagonal
    thinning: bool = True

    def __post_init__(self) -> None:
        if self.n_thresholds < 1:
            raise ValueError(f"n_thresholds must be >= 1, got {self.n_thresholds}")
        if not 0 < self.max_dist < 1:
            raise ValueError(f"max_dist is a fraction of the image diagonal in (0, 1), got {self.max_dist}")


@dataclass(frozen=True)
class EdgesBenchConfig:
    """A BSDS500 edge run. The defaults are the paper's protocol (PAPER.md section 3)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    split: str = "test"  # images/<split>, groundTruth/<split> under --data
    task: EdgeSettings = field(default_factory=EdgeSettings)
    evaluation: BoundaryEvalConfig = field(default_factory=BoundaryEvalConfig)


class EdgesBenchmark:
    """`bsds-edges` over the BSDS500 root `root`; maps go to `<out>/maps`, official files to `<out>/eval`."""

    def __init__(self, name: str, config: EdgesBenchConfig, root: str | Path, out: str | Path) -> None:
        self.name = name
        self.config = config
        self.dataset = BsdsDataset(root, config.split)
        self.out = Path(out)
        e = config.evaluation
        self.metric = BoundaryMetrics(n_thresholds=e.n_thresholds, max_dist=e.max_dist, thinning=e.thinning)
        self.detector: EdgeDetector | None = None

    def samples(self) -> list[Sample]:
        return list(self.dataset)

    def setup(self, device: str | None) -> torch.device:
        predictor = self.config.model.predictor(device)
        self.detector = EdgeDetector(predictor, self.config.task)
        return predictor.device

    def process(self, sample: Sample) -> dict:
        result = self.detector.detect(sample.load_image())
        path = result.save(self.out / "maps" / f"{sample.image_id}.png")
        counts = self.metric.image_stats(
            load_prediction(path),  # the saved 8-bit map: what any other evaluator would read
            load_boundaries(sample.annotations[0]["groundTruth"]),
        )
        return {"map": str(path), "num_masks": result.num_masks, "counts": counts}

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        self.metric.reset()
        for record in sorted(records, key=lambda r: (len(str(r["image_id"])), str(r["image_id"]))):
            self.metric.add(record["counts"], str(record["image_id"]))
        return self.metric.write(self.out / "eval")
