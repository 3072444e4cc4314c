"""The `samtasks bench` benchmarks, each described the same way: its default config, the shipped
YAML that documents it, the command options it takes, and how a loaded config runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samtasks.evaluation.runner import run_benchmark


def report_metrics(result: dict, out: Path) -> str:
    """The metrics, one per line, then the image counts and where the results are."""
    width = max([len(k) for k in result["metrics"]] + [1])
    lines = [f"{key.ljust(width)}  {value:.4f}" for key, value in result["metrics"].items()]
    lines.append(f"{result['images']} images, {len(result['failed'])} failed; results in {Path(out) / 'results.json'}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark of `samtasks bench`."""

    defaults: Any  # the default config (a frozen dataclass): the paper's protocol
    # `(name, config, root, out, *, limit, device, progress, **run_options)` -> the results (rank 0) or None
    run: Callable[..., dict | None]
    config_file: str  # configs/<config_file> holds the defaults, commented
    report: Callable[[dict, Path], str] = report_metrics  # `(results, out)` -> the text printed at the end
    config_options: dict[str, str] = dataclasses.field(default_factory=dict)  # option -> config key it sets
    run_options: tuple[str, ...] = ()  # options passed to `run` as keywords
    requires_config: str | None = None  # why the defaults alone cannot run, naming the config to give


def _run_one(make: Callable) -> Callable[..., dict | None]:
    """`run` of a benchmark on the runner: `make(name, config, root, out)` gives the `Benchmark`."""

    def run(name: str, config, root, out, *, limit=None, device=None, progress=True) -> dict | None:
        benchmark = make(name, config, root, out)
        return run_benchmark(benchmark, out, limit=limit, device=device or config.model.device, progress=progress)

    return run


def benchmarks() -> dict[str, BenchmarkSpec]:
    """Every `samtasks bench` benchmark by name."""
    from samtasks.evaluation.edges import EdgesBenchConfig, EdgesBenchmark
    from samtasks.evaluation.instance import LVIS_DEFAULTS, InstanceBenchConfig, InstanceBenchmark
    from samtasks.evaluation.proposals import COCO_DEFAULTS, ProposalsBenchConfig, ProposalsBenchmark
    from samtasks.evaluation.single_point import SinglePointSuiteConfig, format_table, run_suite
    from samtasks.evaluation.text import TextBenchConfig, TextBenchmark

    def proposals(name, config, root, out):
        return ProposalsBenchmark(name, config, root)

    def instance(name, config, root, out):
        return InstanceBenchmark(name, config, root)

    def text(name, config, root, out):
        return TextBenchmark(name, config, root)

    def single_point(name, config, root, out, *, limit=None, device=None, progress=True, datasets=None):
        device = device or config.model.device
        return run_suite(config, root, out, datasets=datasets, limit=limit, device=device, progress=progress)

    detector = {"detections": "detector.detections", "detector": "detector.name"}
    return {
        "lvis-proposals": BenchmarkSpec(ProposalsBenchConfig(), _run_one(proposals), "proposals_lvis.yaml"),
        "coco-proposals": BenchmarkSpec(COCO_DEFAULTS, _run_one(proposals), "proposals_coco.yaml"),
        "coco-instance": BenchmarkSpec(
            InstanceBenchConfig(), _run_one(instance), "instance_coco.yaml", config_options=detector
        ),
        "lvis-instance": BenchmarkSpec(
            LVIS_DEFAULTS, _run_one(instance), "instance_lvis.yaml", config_options=detector
        ),
        "coco-text": BenchmarkSpec(
            TextBenchConfig(), _run_one(text), "text_coco.yaml", config_options={"pairs": "pairs"}
        ),
        "bsds-edges": BenchmarkSpec(EdgesBenchConfig(), _run_one(EdgesBenchmark), "edges_bsds.yaml"),
        "single-point": BenchmarkSpec(
            SinglePointSuiteConfig(),
            single_point,
            "single_point_suite.yaml",
            report=lambda summary, out: f"{format_table(summary)}\nresults in {Path(out) / 'results.json'}",
            run_options=("datasets",),
            requires_config="e.g. configs/single_point_suite.yaml, listing the datasets",
        ),
    }
