"""The dataset summary of the BSDS benchmark: ODS / OIS / AP / R50 from per-image counts, the
accumulator (`BoundaryMetrics`, the `Metric` contract), the official result files and the PR plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtasks.metrics.base import Metric
from samtasks.metrics.bsds.counts import ImageCounts, evaluate_image, ratio


def fmeasure(r, p):
    """`2PR / (P + R)`, 0 where both are 0 (elementwise)."""
    r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
    return 2 * p * r / (p + r + ((p + r) == 0))


@dataclass
class BestF:
    """A point of the official best-F search."""

    threshold: float
    recall: float
    precision: float
    f: float


def max_f(ts: np.ndarray, r: np.ndarray, p: np.ndarray) -> BestF:
    """The official `maxF`: every threshold and 100 linear steps between neighbours; the first
    point of the largest F wins."""
    d = np.linspace(0, 1, 100)
    tt = np.concatenate([ts[:1], (ts[1:, None] * d + ts[:-1, None] * (1 - d)).ravel()])
    rr = np.concatenate([r[:1], (r[1:, None] * d + r[:-1, None] * (1 - d)).ravel()])
    pp = np.concatenate([p[:1], (p[1:, None] * d + p[:-1, None] * (1 - d)).ravel()])
    j = int(np.argmax(fmeasure(rr, pp)))
    return BestF(float(tt[j]), float(rr[j]), float(pp[j]), float(fmeasure(rr[j], pp[j])))


def average_precision(r: np.ndarray, p: np.ndarray) -> float:
    """The official AP: precision interpolated at recall 0, 0.01, ..., 1 over the unique recalls (0
    outside their range), summed times 0.01."""
    ru, first = np.unique(r, return_index=True)
    if len(ru) < 2:
        return 0.0
    interp = np.interp(np.linspace(0, 1, 101), ru, p[first], left=np.nan, right=np.nan)
    return float(np.nansum(interp) * 0.01)


def recall_at_precision(r: np.ndarray, p: np.ndarray, target: float = 0.5) -> float:
    """R50 as the structured-edge toolbox computes it: recall interpolated over the unique precisions
    at `max(lowest precision, target)`; 0 when precision never reaches `target`."""
    pu, first = np.unique(p, return_index=True)
    at = max(pu[0], target)
    if at > pu[-1]:
        return 0.0
    return float(np.interp(at, pu, r[first]))


class BoundaryMetrics(Metric):
    """Accumulates per-image counts (the `Metric` contract; the stats are `ImageCounts.to_dict()`);
    `compute()` gives ODS / OIS / AP / R50 and `write()` the official files.

    Args:
        n_thresholds, max_dist, thinning: the evaluation protocol of `image_stats` (`evaluate_image`).
    """

    def __init__(self, *, n_thresholds: int = 99, max_dist: float = 0.0075, thinning: bool = True) -> None:
        self.n_thresholds = n_thresholds
        self.max_dist = max_dist
        self.thinning = thinning
        self.reset()

    def reset(self) -> None:
        self.names: list[str] = []
        self.images: list[ImageCounts] = []

    def image_stats(self, pred: np.ndarray, gt: Sequence[np.ndarray]) -> dict:
        """One image's counts as JSON (`ImageCounts.to_dict()`).

        Args:
            pred: `float [H, W]` soft map in [0, 1], or `bool [T, H, W]` (see `evaluate_image`).
            gt: `bool [H, W]` boundaries per annotator.
        """
        counts = evaluate_image(
            pred, gt, n_thresholds=self.n_thresholds, max_dist=self.max_dist, thinning=self.thinning
        )
        return counts.to_dict()

    def update(self, pred: np.ndarray, gt: Sequence[np.ndarray], name: str | None = None) -> dict:
        """Evaluates one map against its annotators and adds it under `name` (`images.txt`)."""
        stats = self.image_stats(pred, gt)
        self.add(stats, name)
        return stats

    def add(self, stats: dict, name: str | None = None) -> None:
        """Adds one image's stats (computed here, in a worker process, or read from a record)."""
        counts = ImageCounts.from_dict(stats)
        if self.images and not np.array_equal(counts.thresholds, self.images[0].thresholds):
            raise ValueError("all images must be evaluated at the same thresholds")
        self.names.append(name if name is not None else str(len(self.names) + 1))
        self.images.append(counts)

    def curve(self) -> ImageCounts:
        """The dataset-wide counts (sums over images)."""
        if not self.images:
            raise ValueError("no images evaluated")
        fields = ("cnt_r", "sum_r", "cnt_p", "sum_p")
        return ImageCounts(self.images[0].thresholds, *(sum(getattr(c, k) for c in self.images) for k in fields))

    def compute(self) -> dict[str, float]:
        """The metrics over the images added (ValueError when there is none)."""
        total = self.curve()
        r, p = total.recall, total.precision
        ods = max_f(total.thresholds, r, p)
        best = np.zeros(4)
        for c in self.images:
            f = fmeasure(c.recall, c.precision)
            k = int(np.flatnonzero(f == f.max())[-1])  # the last threshold of the best F, as the official code
            best += (c.cnt_r[k], c.sum_r[k], c.cnt_p[k], c.sum_p[k])
        ois_r, ois_p = float(ratio(best[0], best[1])), float(ratio(best[2], best[3]))
        return {
            "ODS": ods.f,
            "OIS": float(fmeasure(ois_r, ois_p)),
            "AP": average_precision(r, p),
            "R50": recall_at_precision(r, p, 0.5),
            "ODS_threshold": ods.threshold,
            "ODS_R": ods.recall,
            "ODS_P": ods.precision,
            "OIS_R": ois_r,
            "OIS_P": ois_p,
            "images": len(self.images),
        }

    def write(self, folder: str | Path, *, plot: bool = True) -> dict[str, float]:
        """Writes `eval_bdry.txt`, `eval_bdry_img.txt`, `eval_bdry_thr.txt` (the official format), `images.txt`
        (the image index of `eval_bdry_img.txt` -> name) and `pr_curve.png`; returns `compute()`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        m = self.compute()
        total = self.curve()
        r, p = total.recall, total.precision
        thr = [_row(t, a, b, f) for t, a, b, f in zip(total.thresholds, r, p, fmeasure(r, p), strict=True)]
        (folder / "eval_bdry_thr.txt").write_text("".join(thr))
        rows = []
        for i, c in enumerate(self.images, start=1):
            best = max_f(c.thresholds, c.recall, c.precision)
            rows.append(f"{i:10d}" + _row(best.threshold, best.recall, best.precision, best.f))
        (folder / "eval_bdry_img.txt").write_text("".join(rows))
        keys = ("ODS_threshold", "ODS_R", "ODS_P", "ODS", "OIS_R", "OIS_P", "OIS", "AP")
        (folder / "eval_bdry.txt").write_text(_row(*(m[k] for k in keys)))
        (folder / "images.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(self.names, start=1)))
        if plot:
            plot_pr(r, p, m, folder / "pr_curve.png")
        return m


def _row(*values: float) -> str:
    return "".join(f" {v:10g}" for v in values) + "\n"


def plot_pr(r: np.ndarray, p: np.ndarray, metrics: dict, path: str | Path, label: str = "") -> None:
    """The precision-recall curve over iso-F lines, with the ODS point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    grid = np.linspace(0.001, 1, 400)
    for f in np.arange(0.1, 1.0, 0.1):
        rr = grid[grid > f / 2]
        pp = f * rr / (2 * rr - f)
        ok = pp <= 1
        ax.plot(rr[ok], pp[ok], color="0.85", lw=0.8)
        ax.annotate(f"F={f:.1f}", (rr[ok][-1], 1.0), fontsize=6, color="0.6", ha="left", va="bottom")
    text = f"ODS {metrics['ODS']:.3f}  OIS {metrics['OIS']:.3f}  AP {metrics['AP']:.3f}"
    ax.plot(r, p, lw=2, label=f"{label}  {text}".strip())
    ax.plot([metrics["ODS_R"]], [metrics["ODS_P"]], "o", color="C0")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Recall", ylabel="Precision", aspect="equal")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
