"""The one contract every metric follows (detectron2's evaluator rhythm).

A metric is an accumulator. `image_stats(pred, gt)` reduces one image's prediction and ground truth
to JSON-serializable statistics (lists, numbers, strings): the benchmark runner stores them in the
image's record as it finishes and, on resume or after sharding, hands the stored ones back to
`add`. `update(pred, gt)` is `add(image_stats(pred, gt))` for callers that keep nothing.
`compute()` reduces everything added so far to `dict[str, float]` with stable keys; `reset()`
empties the accumulator. Stats that went through `json.dumps` / `json.loads` give the same
`compute()` as the originals.

What `pred` and `gt` are is the metric's own (a soft edge map and annotator boundaries, a results
list and an image id, ...); each metric's `image_stats` documents them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Metric(Protocol):
    """Per-image statistics, accumulated; one `compute()` at the end."""

    def reset(self) -> None:
        """Forgets every image added."""

    def image_stats(self, pred: Any, gt: Any) -> dict:
        """One image's statistics, JSON-serializable; the accumulator is left unchanged."""

    def add(self, stats: dict) -> None:
        """Adds one image's `image_stats` (computed here, in a worker process, or read from a record)."""

    def update(self, pred: Any, gt: Any) -> dict:
        """Adds one image's prediction against its ground truth; returns the stats added."""
        stats = self.image_stats(pred, gt)
        self.add(stats)
        return stats

    def compute(self) -> dict[str, float]:
        """The metrics over every image added, with stable keys."""
