"""Metrics as accumulators: per-image statistics, then one `compute() -> dict[str, float]`."""
