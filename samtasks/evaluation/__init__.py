"""Benchmarks: config loading, the resumable and shardable runner, and each benchmark's definition."""

from samtasks.evaluation.bench import BenchmarkSpec, benchmarks
from samtasks.evaluation.config import ConfigError, DataConfig, ModelConfig, load_config
from samtasks.evaluation.runner import DistInfo, ResultsStore, run_benchmark

__all__ = [
    "BenchmarkSpec",
    "ConfigError",
    "DataConfig",
    "DistInfo",
    "ModelConfig",
    "ResultsStore",
    "benchmarks",
    "load_config",
    "run_benchmark",
]
