"""Object-proposal benchmarks: class-agnostic mask AR of `ProposalGenerator` on LVIS v1 val (the
paper's Table 4) and on COCO val2017."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samtasks.data import CocoDataset, LvisDataset
from samtasks.evaluation.config import DataConfig, ModelConfig
from samtasks.metrics.proposals import ProposalRecall, coco_proposal_recall, lvis_proposal_recall
from samtasks.structures import Sample
from samtasks.tasks.proposals import ProposalGenerator, ProposalSettings


@dataclass(frozen=True)
class ProposalsBenchConfig:
    """A proposals run. The defaults are the paper's LVIS protocol (PAPER.md section 4)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(annotations="lvis_v1_val.json", images="."))
    task: ProposalSettings = field(default_factory=ProposalSettings)
    max_dets: tuple[int, ...] = (100, 300, 1000)  # the k of AR@k
    save_proposals: bool = True  # keep each image's proposals (RLE, score) in the records


COCO_DEFAULTS = ProposalsBenchConfig(
    data=DataConfig(annotations="annotations/instances_val2017.json", images="val2017"), max_dets=(10, 100, 1000)
)


class ProposalsBenchmark:
    """`lvis-proposals` or `coco-proposals` over the dataset at `root`."""

    def __init__(self, name: str, config: ProposalsBenchConfig, root: str | Path) -> None:
        self.name = name
        self.config = config
        annotations, images = config.data.resolve(root)
        if name == "lvis-proposals":
            self.dataset = LvisDataset(annotations, images)
            self.metric: ProposalRecall = lvis_proposal_recall(self.dataset.frequency, config.max_dets)
        else:
            self.dataset = CocoDataset(annotations, images)
            self.metric = coco_proposal_recall(config.max_dets)
        self.generator: ProposalGenerator | None = None

    def samples(self) -> list[Sample]:
        return list(self.dataset)

    def setup(self, device: str | None) -> torch.device:
        predictor = self.config.model.predictor(device)
        self.generator = ProposalGenerator(predictor, self.config.task)
        return predictor.device

    def process(self, sample: Sample) -> dict:
        proposals = self.generator.generate(sample.load_image())
        results = [
            {"segmentation": r, "score": float(s)} for r, s in zip(proposals.masks.rles, proposals.scores, strict=True)
        ]
        record = {"num_proposals": len(proposals), "stats": self.metric.image_stats(results, sample)}
        if self.config.save_proposals:
            record["proposals"] = results
        return record

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        self.metric.reset()
        count = total = 0
        for record in records:
            self.metric.add(record["stats"])
            count += 1
            total += record["num_proposals"]
        return {**self.metric.compute(), "proposals_per_image": total / max(1, count)}
