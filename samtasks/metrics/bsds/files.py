"""Inputs and folders of the BSDS benchmark: prediction maps (8/16-bit images, `.npy`, the official
`.mat` inputs), the annotators' ground-truth `.mat`, and a whole folder scored in parallel processes."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtasks.metrics.bsds.counts import evaluate_image
from samtasks.metrics.bsds.summary import BoundaryMetrics

PREDICTION_SUFFIXES = (".png", ".npy", ".mat", ".bmp", ".tif", ".tiff", ".jpg")


def load_prediction(path: str | Path) -> np.ndarray:
    """A prediction for `evaluate_image`: a soft map `float64 [H, W]` in [0, 1], or `bool [T, H, W]`.

    Reads an 8- or 16-bit image (value / 255 or / 65535; the first channel of a colour image), a
    `.npy` float map, or the official benchmark's `.mat` inputs: `ucm2` (a double-size map sampled at
    `[2::2, 2::2]`) or `segs` (a cell of T segmentations: their boundaries, one binary map per threshold).
    """
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        if path.suffix == ".npy":
            prob = np.asarray(np.load(path), np.float64)
        elif path.suffix == ".mat":
            prob = _load_mat(path)
        else:
            from PIL import Image

            with Image.open(path) as image:
                array = np.asarray(image)
            array = array[..., 0] if array.ndim == 3 else array
            top = 65535.0 if array.dtype == np.uint16 else 255.0
            prob = array.astype(np.float64) / top
    except (OSError, ValueError, KeyError, IndexError, MatReadError) as err:
        raise ValueError(f"cannot read prediction {path}: {err}") from err
    if prob.dtype == bool:
        return prob
    if prob.ndim != 2 or not np.isfinite(prob).all():
        raise ValueError(f"prediction {path} must be a finite 2-D map, got shape {prob.shape}")
    if prob.min() < 0 or prob.max() > 1:
        raise ValueError(f"prediction {path} has values outside [0, 1] ({prob.min():g} .. {prob.max():g})")
    return prob


def _load_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "ucm2" in data:
        return np.asarray(data["ucm2"], np.float64)[2::2, 2::2]
    if "segs" in data:
        return np.stack([seg_boundaries(np.asarray(s)) for s in np.ravel(data["segs"])])
    raise ValueError("a .mat prediction needs a 'ucm2' or a 'segs' variable")


def seg_boundaries(seg: np.ndarray) -> np.ndarray:
    """`bool [H, W]` boundaries of a label image, as the official `seg2bdry(seg, 'imageSize')`: a
    pixel is on when its 2x2 block (itself, right, below, below-right) holds two labels; on the last
    row only the right neighbour counts, on the last column only the one below, never the corner."""
    seg = np.asarray(seg)
    right = seg[:, :-1] != seg[:, 1:]  # [H, W-1]
    down = seg[:-1, :] != seg[1:, :]  # [H-1, W]
    b = np.zeros(seg.shape, bool)
    b[:-1, :-1] = right[:-1] | right[1:] | down[:, :-1] | down[:, 1:]
    b[-1, :-1] = right[-1]
    b[:-1, -1] = down[:, -1]
    return b


def load_boundaries(path: str | Path) -> list[np.ndarray]:
    """The annotators' boundary maps of a BSDS `groundTruth/<id>.mat`: `bool [H, W]` each.

    Raises:
        ValueError: a missing or unreadable file, or one without a `groundTruth` cell of `Boundaries`.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ground truth not found: {path}")
    try:
        cells = loadmat(str(path))["groundTruth"][0]
        return [np.asarray(cell["Boundaries"][0][0], bool) for cell in cells]
    except (OSError, KeyError, ValueError, IndexError, TypeError, MatReadError) as err:
        raise ValueError(
            f"cannot read BSDS ground truth {path} (needs a groundTruth cell of Boundaries): {err}"
        ) from err


def find_prediction(folder: Path, stem: str) -> Path | None:
    """`<folder>/<stem>.<suffix>` for the first of `PREDICTION_SUFFIXES` that exists, else the map
    `samtasks edges` writes for the image `<stem>.<image suffix>` (`2018.jpg.png`)."""
    from samtasks.utils.image import IMAGE_SUFFIXES

    for suffix in PREDICTION_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    for image_suffix in IMAGE_SUFFIXES:
        path = folder / f"{stem}{image_suffix}.png"
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class _Job:
    pred: Path
    gt: Path
    n_thresholds: int
    max_dist: float
    thinning: bool


def _evaluate_job(job: _Job) -> dict:
    prediction = load_prediction(job.pred)
    try:
        return evaluate_image(
            prediction,
            load_boundaries(job.gt),
            n_thresholds=job.n_thresholds,
            max_dist=job.max_dist,
            thinning=job.thinning,
        ).to_dict()
    except ValueError as err:
        raise ValueError(f"{job.pred} against {job.gt}: {err}") from err


def parallel_map(function, jobs: Sequence, workers: int | None) -> Iterator:
    """`function` over `jobs` in `workers` processes (all cores by default), results in job order."""
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        yield from map(function, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(function, jobs)


def evaluate_folder(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    n_thresholds: int = 99,
    max_dist: float = 0.0075,
    thinning: bool = True,
    workers: int | None = None,
    limit: int | None = None,
    progress=None,
) -> BoundaryMetrics:
    """Every `<gt_dir>/<id>.mat` against `<pred_dir>/<id>.{png,npy,mat,...}`, images in parallel
    processes; the result does not depend on `workers`.

    Args:
        progress: wraps the iterator of per-image results (a progress bar), or None.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise ValueError(f"prediction folder not found: {pred_dir}")
    if not gt_dir.is_dir():
        raise ValueError(f"ground-truth folder not found: {gt_dir}")
    gts = sorted(gt_dir.glob("*.mat"), key=lambda p: (len(p.stem), p.stem))
    if not gts:
        raise ValueError(f"no ground-truth .mat files in {gt_dir}")
    pairs = [(gt, find_prediction(pred_dir, gt.stem)) for gt in gts]
    if limit is not None:  # a smoke run: the first `limit` images that have a map
        pairs = [(gt, pred) for gt, pred in pairs if pred is not None][:limit]
        if not pairs:
            raise ValueError(f"no prediction in {pred_dir} matches a ground-truth id of {gt_dir}")
    missing = [gt.stem for gt, pred in pairs if pred is None]
    if missing:
        raise ValueError(
            f"no prediction for {missing[0]} in {pred_dir} (<id> + one of {', '.join(PREDICTION_SUFFIXES)}); "
            f"{len(missing)} of {len(gts)} ids have none (--limit N scores the first N that have one)"
        )
    gts = [gt for gt, _ in pairs]
    jobs = [_Job(pred, gt, n_thresholds, max_dist, thinning) for gt, pred in pairs]
    bench = BoundaryMetrics(n_thresholds=n_thresholds, max_dist=max_dist, thinning=thinning)
    results = parallel_map(_evaluate_job, jobs, workers)
    if progress is not None:
        results = progress(results, len(jobs))
    for gt, stats in zip(gts, results, strict=True):
        bench.add(stats, gt.stem)
    return bench
