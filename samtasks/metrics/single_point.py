"""Interactive-segmentation metrics over objects: mIoU after N clicks, oracle mIoU at one click, NoC and NoF.

NoC and NoF follow RITM (SamsungLabs/ritm_interactive_segmentation, `compute_noc_metric` in
`isegm/inference/utils.py`, as `scripts/evaluate_model.py` reports them):
- NoC@t: the first click whose IoU is >= t, or the maximum number of clicks when no click reaches t;
- NoF@t: the number of objects whose NoC@t is the maximum (printed there as `>=20@t`), so an object that
  reaches t exactly at the last click counts as a failure too;
- RITM keeps IoUs as float32 (`evaluate_sample` in `isegm/inference/evaluation.py`) and compares them
  with t in float32; so do we, which decides an IoU within float32 rounding of t as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from samtasks.metrics.base import Metric


class ClickMetrics(Metric):
    """Accumulates per-object IoU sequences (the `Metric` contract).

    Args:
        clicks_at: the N of `mIoU@N`.
        noc_thresholds: the IoU targets of `NoC@t` / `NoF@t` (keys use t * 100).
        noc_max_clicks: the maximum number of clicks of NoC and NoF (the common 20); both are reported only
            when the sequences are at least this long.
    """

    def __init__(
        self,
        clicks_at: Sequence[int] = (1, 2, 3, 5, 9),
        noc_thresholds: Sequence[float] = (0.85, 0.90),
        noc_max_clicks: int = 20,
    ) -> None:
        self.clicks_at = tuple(clicks_at)
        self.noc_thresholds = tuple(noc_thresholds)
        self.noc_max_clicks = noc_max_clicks
        self.reset()

    def reset(self) -> None:
        self.ious: list[np.ndarray] = []
        self.oracle: list[float] = []

    def image_stats(self, pred, gt=None) -> dict:
        """`{"ious": [K][N], "oracle": [K]}` at full float64 precision (JSON floats round-trip exactly,
        so stored stats decide every threshold as the raw IoUs do).

        Args:
            pred: the image's `ClickResult`: `ious` `[K, N]`, the IoU of each of K objects after clicks
                1..N, and `oracle_iou` `[K]`, the best of the 3 first-click masks.
            gt: not read: the simulated clicks depend on the ground truth, so the task scores every
                answer against it as it clicks.
        """
        return {"ious": np.asarray(pred.ious, np.float64).tolist(), "oracle": np.asarray(pred.oracle_iou).tolist()}

    def add(self, stats: dict) -> None:
        oracle = stats["oracle"]
        if not len(oracle):
            return
        for row in np.asarray(stats["ious"], np.float64).reshape(len(oracle), -1):
            self.ious.append(row)
        self.oracle.extend(float(v) for v in oracle)

    def compute(self) -> dict[str, float]:
        if not self.ious:
            return {"objects": 0}
        ious = np.stack(self.ious)  # [K, N]
        n = ious.shape[1]
        out: dict[str, float] = {"objects": len(ious)}
        # Exactly rounded sums: the same means in any record order, however the run was sharded.
        for clicks in self.clicks_at:
            if clicks <= n:
                out[f"mIoU@{clicks}"] = math.fsum(ious[:, clicks - 1]) / len(ious)
        out["oracle_mIoU@1"] = math.fsum(self.oracle) / len(self.oracle)
        if n >= self.noc_max_clicks:
            window = ious[:, : self.noc_max_clicks].astype(np.float32)  # the reference's precision
            for t in self.noc_thresholds:
                reached = window >= np.float32(t)
                noc = np.where(reached.any(1), reached.argmax(1) + 1, self.noc_max_clicks)
                key = round(t * 100)
                out[f"NoC@{key}"] = float(noc.mean())
                out[f"NoF@{key}"] = float((noc == self.noc_max_clicks).sum())
        return out
