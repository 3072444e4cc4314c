"""Benchmarks: config loading, the resumable and shardable runner, and each benchmark's definition."""

from samtasks.evaluation.config import ConfigError, DataConfig, ModelConfig, load_config
from samtasks.evaluation.runner import DistInfo, ResultsStore, run_benchmark


def benchmarks() -> dict:
    """`name -> (default config, benchmark class)` of every `samtasks bench` benchmark."""
    from samtasks.evaluation.edges import EdgesBenchConfig, EdgesBenchmark
    from samtasks.evaluation.instance import LVIS_DEFAULTS, InstanceBenchConfig, InstanceBenchmark
    from samtasks.evaluation.proposals import COCO_DEFAULTS, ProposalsBenchConfig, ProposalsBenchmark
    from samtasks.evaluation.text import TextBenchConfig, TextBenchmark

    return {
        "lvis-proposals": (ProposalsBenchConfig(), ProposalsBenchmark),
        "coco-proposals": (COCO_DEFAULTS, ProposalsBenchmark),
        "coco-instance": (InstanceBenchConfig(), InstanceBenchmark),
        "lvis-instance": (LVIS_DEFAULTS, InstanceBenchmark),
        "coco-text": (TextBenchConfig(), TextBenchmark),
        "bsds-edges": (EdgesBenchConfig(), EdgesBenchmark),
    }


__all__ = [
    "ConfigError",
    "DataConfig",
    "DistInfo",
    "ModelConfig",
    "ResultsStore",
    "benchmarks",
    "load_config",
    "run_benchmark",
]
