"""Metrics as accumulators: per-image statistics, then one `compute() -> dict[str, float]` (the contract
every metric follows is `Metric`, in `samtasks.metrics.base`)."""

from samtasks.metrics.base import Metric

__all__ = ["Metric"]
