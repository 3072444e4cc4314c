"""Interactive-segmentation metrics over objects: mIoU after N clicks, oracle mIoU at one click,
NoC (clicks needed to reach an IoU) and NoF (objects that never reach it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ClickMetrics:
    """Accumulates per-object IoU sequences.

    Args:
        clicks_at: the N of `mIoU@N`.
        noc_thresholds: the IoU targets of `NoC@t` / `NoF@t` (keys use t * 100).
        noc_max_clicks: NoC counts an object that never reaches t as this many clicks (the common 20);
            reported only when the sequences are at least this long.
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

    def update(self, ious, oracle) -> None:
        """`ious`: `[K, N]` IoU after clicks 1..N per object; `oracle`: `[K]` best-of-3 IoU at click 1."""
        for row in np.asarray(ious, np.float64).reshape(len(oracle), -1):
            self.ious.append(row)
        self.oracle.extend(float(v) for v in oracle)

    def compute(self) -> dict[str, float]:
        if not self.ious:
            return {"objects": 0}
        ious = np.stack(self.ious)  # [K, N]
        n = ious.shape[1]
        out: dict[str, float] = {"objects": len(ious)}
        for clicks in self.clicks_at:
            if clicks <= n:
                out[f"mIoU@{clicks}"] = float(ious[:, clicks - 1].mean())
        out["oracle_mIoU@1"] = float(np.mean(self.oracle))
        if n >= self.noc_max_clicks:
            window = ious[:, : self.noc_max_clicks]
            for t in self.noc_thresholds:
                reached = window >= t
                first = np.where(reached.any(1), reached.argmax(1) + 1, self.noc_max_clicks)
                key = round(t * 100)
                out[f"NoC@{key}"] = float(first.mean())
                out[f"NoF@{key}"] = float((~reached.any(1)).sum())
        return out
