"""Per-image counts of the BSDS benchmark (the official `<id>_ev1.txt` columns).

Per threshold t, the soft map is binarized at `prob >= t`, thinned like MATLAB's
`bwmorph(.., 'thin', inf)`, and for each annotator its pixels are matched one-to-one to the
annotator's boundary pixels within `max_dist * diagonal` (`matching`). Recall sums matched boundary
pixels over annotators; precision counts edge pixels matched to any annotator.

Speed. Candidate pairs are built once per image and annotator for every pixel that any threshold
can turn on; a threshold whose binary map equals the previous one's reuses its counts; only pixels
with a partner in range enter the assignment; the matching graph is split into connected components
and a component unchanged since the previous threshold keeps its solution (about half of the work on
typical maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from samtasks.metrics.bsds.matching import CandidatePairs, radius_and_outlier
from samtasks.utils.thinning import thin


def thresholds(n: int) -> np.ndarray:
    """The official thresholds `linspace(1/(n+1), 1-1/(n+1), n)`: `float64 [n]`."""
    return np.linspace(1 / (n + 1), 1 - 1 / (n + 1), n)


@dataclass
class ImageCounts:
    """Per-threshold counts of one image (the official `<id>_ev1.txt` columns)."""

    thresholds: np.ndarray  # float64 [T]
    cnt_r: np.ndarray  # int64 [T] matched boundary pixels, summed over annotators
    sum_r: np.ndarray  # int64 [T] boundary pixels, summed over annotators
    cnt_p: np.ndarray  # int64 [T] edge pixels matched to any annotator
    sum_p: np.ndarray  # int64 [T] edge pixels (after thinning)

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("thresholds", "cnt_r", "sum_r", "cnt_p", "sum_p")}

    @staticmethod
    def from_dict(data: dict) -> ImageCounts:
        return ImageCounts(
            np.asarray(data["thresholds"], np.float64),
            *(np.asarray(data[k], np.int64) for k in ("cnt_r", "sum_r", "cnt_p", "sum_p")),
        )

    @property
    def recall(self) -> np.ndarray:
        return ratio(self.cnt_r, self.sum_r)

    @property
    def precision(self) -> np.ndarray:
        return ratio(self.cnt_p, self.sum_p)


def evaluate_image(
    prob: np.ndarray,
    boundaries: Sequence[np.ndarray],
    *,
    n_thresholds: int = 99,
    max_dist: float = 0.0075,
    thinning: bool = True,
) -> ImageCounts:
    """Counts of one prediction against its annotators.

    Args:
        prob: `float [H, W]` boundary probability in [0, 1], evaluated at the official thresholds; or
            `bool [T, H, W]`, one binary map per threshold 1..T (the official `segs` input).
        boundaries: `bool [H, W]` per annotator.
        n_thresholds: the official threshold count (99 for the benchmark tables); unused for `[T, H, W]`.
        max_dist: the matching distance as a fraction of the image diagonal.
        thinning: thin each binary map first (the official default).
    """
    prob = np.asarray(prob)
    shape = prob.shape[-2:]
    boundaries = [np.asarray(b, bool) for b in boundaries]
    for b in boundaries:
        if b.shape != shape:
            raise ValueError(f"boundary map {b.shape} and prediction {shape} differ in size")
    if prob.ndim == 3:
        ts = np.arange(1, len(prob) + 1, dtype=np.float64)
        stack = prob.reshape(len(prob), -1).astype(bool)
        candidates = np.flatnonzero(stack.any(0))
        set_keys = None

        def binary(k: int) -> np.ndarray:
            return stack[k]

    else:
        ts = thresholds(n_thresholds)
        flat = prob.astype(np.float64).ravel()
        candidates = np.flatnonzero(flat >= ts[0])  # every threshold's (thinned) edges are among these

        def binary(k: int) -> np.ndarray:
            return flat >= ts[k]

        set_keys = np.searchsorted(np.sort(flat[candidates]), ts, side="left")  # nested sets: same count, same set
    radius, outlier = radius_and_outlier(shape, max_dist)
    pairs = [CandidatePairs.build(candidates, b, radius) for b in boundaries]
    counts = ImageCounts(ts, *(np.zeros(len(ts), np.int64) for _ in range(4)))
    counts.sum_r[:] = sum(p.count for p in pairs)
    previous = None
    for k in range(len(ts)):
        if k and set_keys is not None and set_keys[k] == set_keys[k - 1]:
            _copy_counts(counts, k)
            continue
        edges = binary(k)
        if thinning:
            edges = thin(edges.reshape(shape)).ravel()
        on = edges[candidates]
        if previous is not None and np.array_equal(on, previous):
            _copy_counts(counts, k)
            continue
        previous = on
        matched = np.zeros(len(candidates), bool)
        for p in pairs:
            pixel, partner = p.match(on, outlier)
            matched[pixel] = True
            counts.cnt_r[k] += len(partner)
        counts.cnt_p[k] = matched.sum()
        counts.sum_p[k] = on.sum()
    return counts


def _copy_counts(counts: ImageCounts, k: int) -> None:
    for a in (counts.cnt_r, counts.cnt_p, counts.sum_p):
        a[k] = a[k - 1]


def ratio(a, b):
    """`a / b` elementwise, 0 where `b` is 0 (a recall or precision with nothing to count)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a / (b + (b == 0))
