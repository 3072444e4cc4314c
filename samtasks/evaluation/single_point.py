"""The single-point valid-mask suite (PAPER.md section 2): every dataset of the config that is present
is run on the runner (its own records, resumable, shardable), then one table and one plot."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from samtasks.data import CocoDataset, DatasetError, LvisDataset
from samtasks.data.masks import InstancePngDataset, MaskFolderDataset, sample_masks, subsample
from samtasks.evaluation.config import ConfigError, ModelConfig, build_dataclass, to_dict
from samtasks.evaluation.runner import DistInfo, run_benchmark
from samtasks.metrics.single_point import ClickMetrics
from samtasks.structures import Sample
from samtasks.tasks.single_point import PRESETS, ClickEvaluator, ClickSettings

logger = logging.getLogger(__name__)

FORMATS = ("coco", "lvis", "mask-folder", "instance-png")


@dataclass(frozen=True)
class DatasetEntry:
    """Where one dataset is, relative to the `--data` root."""

    format: str  # coco | lvis | mask-folder | instance-png
    images: str = "images"
    annotations: str = ""  # coco / lvis: the JSON file
    masks: str = "masks"  # mask-folder: one PNG per object; instance-png: instance-id PNGs
    ignore_value: int | None = None  # instance-png: this id marks ignored pixels

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")

    def required_paths(self, root: Path) -> list[Path]:
        paths = [root / self.images]
        if self.format in ("coco", "lvis"):
            paths.append(root / self.annotations)
        else:
            paths.append(root / self.masks)
        return paths

    def open(self, root: Path):
        if self.format == "coco":
            return CocoDataset(root / self.annotations, root / self.images)
        if self.format == "lvis":
            return LvisDataset(root / self.annotations, root / self.images)
        if self.format == "mask-folder":
            return MaskFolderDataset(root / self.images, root / self.masks)
        return InstancePngDataset(root / self.images, root / self.masks, self.ignore_value)


@dataclass(frozen=True)
class SinglePointSuiteConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: ClickSettings = field(default_factory=lambda: PRESETS["clicks-noc"])
    subsample_above: int = 15000  # a dataset with more objects than this ...
    subsample_to: int = 10000  # ... is cut to this many, drawn with task.seed (the paper: "about 10k")
    clicks_at: tuple[int, ...] = (1, 2, 3, 5, 9)
    datasets: dict = field(default_factory=dict)  # name -> DatasetEntry fields

    def __post_init__(self) -> None:
        for name in self.datasets:
            self.entry(name)  # every entry checked when the config is loaded

    def entry(self, name: str) -> DatasetEntry:
        return build_dataclass(DatasetEntry, self.datasets[name], "datasets", f"{name}.")


class SinglePointBenchmark:
    """One dataset of the suite."""

    def __init__(self, name: str, config: SinglePointSuiteConfig, root: str | Path) -> None:
        self.name = name
        self.config = config
        self.dataset = config.entry(name).open(Path(root))
        self.metric = ClickMetrics(config.clicks_at, noc_max_clicks=20)
        self.evaluator: ClickEvaluator | None = None

    def samples(self) -> list[Sample]:
        samples = list(self.dataset)
        total = sum(len(s.annotations) for s in samples)
        if total > self.config.subsample_above:
            samples = subsample(samples, self.config.subsample_to, self.config.task.seed)
        return samples

    def setup(self, device: str | None) -> torch.device:
        predictor = self.config.model.predictor(device)
        self.evaluator = ClickEvaluator(predictor, **dataclasses.asdict(self.config.task))
        return predictor.device

    def process(self, sample: Sample) -> dict:
        """One image's record: the metric's stats. An object entirely inside the ignore region has no pixel
        to click or score and is left out (`object_ids` lists the evaluated objects)."""
        masks, ignore, anns = sample_masks(sample)
        keep = (masks & ~ignore).any((1, 2))
        result = self.evaluator.evaluate(sample.load_image(), masks[keep], ignore if ignore.any() else None)
        return {
            "object_ids": [a.get("id") for a, kept in zip(anns, keep, strict=True) if kept],
            **self.metric.image_stats(result),
        }

    def evaluate(self, records: Iterator[dict]) -> dict[str, float]:
        self.metric.reset()
        for record in records:
            self.metric.add({"ious": record["ious"], "oracle": record["oracle"]})
        return self.metric.compute()


def run_suite(
    config: SinglePointSuiteConfig,
    root: str | Path,
    out: str | Path,
    *,
    datasets: Sequence[str] | None = None,
    limit: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict | None:
    """Runs every present dataset into `out/<name>/`, then writes `out/results.json` (per-dataset
    metrics and their unweighted mean, the images that failed with their dataset) and
    `out/miou_vs_clicks.png`; returns the results on rank 0."""
    root, out = Path(root), Path(out)
    names = list(config.datasets) if datasets is None else list(datasets)
    unknown = [n for n in names if n not in config.datasets]
    if unknown:
        raise ConfigError(f"unknown dataset(s) {', '.join(unknown)}; the config lists {', '.join(config.datasets)}")
    per_dataset, skipped, failed = {}, {}, []
    for name in names:
        missing = [p for p in config.entry(name).required_paths(root) if not p.exists()]
        if missing:
            skipped[name] = f"not found: {missing[0]}"
            logger.warning("single-point: skipped %s (%s)", name, skipped[name])
            continue
        try:
            benchmark = SinglePointBenchmark(name, config, root)
        except DatasetError as err:
            skipped[name] = str(err)
            logger.warning("single-point: skipped %s (%s)", name, err)
            continue
        result = run_benchmark(benchmark, out / name, limit=limit, device=device, progress=progress)
        if result is not None:
            per_dataset[name] = result["metrics"]
            failed += [{"dataset": name, **record} for record in result["failed"]]
    if DistInfo.from_env().rank != 0:
        return None
    keys = sorted({k for m in per_dataset.values() for k in m if k != "objects"}, key=_key_order)
    mean = (
        {k: sum(m[k] for m in per_dataset.values() if k in m) / len(per_dataset) for k in keys} if per_dataset else {}
    )
    summary = {
        "benchmark": "single-point",
        "datasets": per_dataset,
        "mean_over_datasets": mean,
        "skipped": skipped,
        "failed": failed,
        "limit": limit,
        "config": to_dict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    if per_dataset:
        plot_curves(per_dataset, config.clicks_at, out / "miou_vs_clicks.png")
    return summary


def _key_order(key: str) -> tuple:
    head, _, tail = key.partition("@")
    return (head, int(tail) if tail.isdigit() else 0)


def format_table(summary: dict) -> str:
    """Datasets x metrics, and the mean over datasets."""
    rows = dict(summary["datasets"])
    if rows:
        rows["mean"] = summary["mean_over_datasets"]
    keys = [k for k in summary["mean_over_datasets"]]
    width = max([len(n) for n in rows] + [7])
    lines = ["dataset".ljust(width) + "".join(k.rjust(15) for k in keys)]
    for name, metrics in rows.items():
        cells = "".join((f"{metrics[k]:.4f}" if k in metrics else "-").rjust(15) for k in keys)
        lines.append(name.ljust(width) + cells)
    for name, why in summary["skipped"].items():
        lines.append(f"{name.ljust(width)}  skipped: {why}")
    return "\n".join(lines)


def plot_curves(per_dataset: dict, clicks_at: Sequence[int], path: Path) -> None:
    """mIoU against clicks: the mean over datasets (default answer) and the oracle at one click."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    clicks = [n for n in clicks_at if all(f"mIoU@{n}" in m for m in per_dataset.values())]
    mean = [sum(m[f"mIoU@{n}"] for m in per_dataset.values()) / len(per_dataset) for n in clicks]
    oracle = sum(m["oracle_mIoU@1"] for m in per_dataset.values()) / len(per_dataset)
    ax.plot(clicks, mean, "o-", label="SAM (highest predicted IoU)")
    ax.plot([1], [oracle], "s", label="SAM oracle (best of 3)")
    ax.set_xlabel("number of points")
    ax.set_ylabel(f"mIoU over {len(per_dataset)} dataset(s)")
    ax.set_xticks(clicks)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
