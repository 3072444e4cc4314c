"""Classical zero-shot edge baselines on the BSDS500 test split, scored by our evaluator and printed beside
the paper's rows (Table 3).

Recipes (fixed, not tuned toward the paper's values):
- sobel: grayscale (ITU-R 601 luma) in [0, 1], Gaussian smoothing sigma 2, Sobel gradient magnitude,
  divided by the image's maximum. No NMS (the benchmark thins every thresholded map).
- canny: scikit-image `canny` on the same grayscale, sigma 2, with the high threshold `t * M` and the
  low `0.4 * t * M` (MATLAB's `edge(.., 'canny')` ratio), `M` the largest gradient magnitude of the
  smoothed image; run at each of the benchmark's 99 thresholds t. The maps are nested in t, so one
  soft map stores them exactly: a pixel holds the largest t at which Canny marks it (rounded up to
  the 8-bit grid, which is finer than the threshold step).

    python benchmarks/edges_baselines.py --data ../shared/data/bsds500 [--workers 2] [--limit N]

Writes `<out>/<method>/<id>.png` maps, the official result files under `<out>/<method>/eval/`, and
benchmarks/results/edges_baselines.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from samtasks.data.bsds import BsdsDataset
from samtasks.metrics.bsds import evaluate_folder, thresholds
from samtasks.utils.image import save_edge_map

PAPER = {"sobel": {"ODS": 0.539}, "canny": {"ODS": 0.600, "OIS": 0.640, "AP": 0.580}}


def grayscale(image: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2gray

    return rgb2gray(image).astype(np.float64)


def sobel_map(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    from skimage.filters import gaussian, sobel

    magnitude = sobel(gaussian(grayscale(image), sigma=sigma))
    return magnitude / max(float(magnitude.max()), 1e-12)


def canny_map(image: np.ndarray, sigma: float = 2.0, n_thresholds: int = 99, low_ratio: float = 0.4) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.feature import canny

    gray = grayscale(image)
    smoothed = ndi.gaussian_filter(gray, sigma)
    top = float(np.hypot(ndi.sobel(smoothed, 0), ndi.sobel(smoothed, 1)).max())
    soft = np.zeros(gray.shape)
    for t in thresholds(n_thresholds):  # nested: a later (higher) t overwrites with its larger value
        edges = canny(gray, sigma=sigma, low_threshold=low_ratio * t * top, high_threshold=t * top)
        soft[edges] = np.ceil(t * 255) / 255
    return soft


METHODS = {"sobel": sobel_map, "canny": canny_map}


def write_maps(dataset: BsdsDataset, method: str, folder: Path, limit: int | None) -> int:
    """Computes the method's maps for the first `limit` images (skipping those already written)."""
    from samtasks.utils.image import load_image

    done = 0
    for sample in list(dataset)[:limit]:
        path = folder / f"{sample.image_id}.png"
        if not path.is_file():
            save_edge_map(path, METHODS[method](load_image(sample.path)))
            done += 1
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BSDS500 root (images/test, groundTruth/test)")
    parser.add_argument("--out", default="out/edges_baselines")
    parser.add_argument("--methods", default="sobel,canny")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    dataset = BsdsDataset(args.data)
    results = {}
    for method in args.methods.split(","):
        folder = Path(args.out) / method
        t0 = time.perf_counter()
        write_maps(dataset, method, folder, args.limit)
        maps_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        bench = evaluate_folder(folder, dataset.gt_dir, workers=args.workers, limit=args.limit)
        metrics = bench.write(folder / "eval")
        eval_s = time.perf_counter() - t0
        results[method] = {"metrics": metrics, "paper": PAPER[method], "maps_seconds": maps_s, "eval_seconds": eval_s}
        paper = "  ".join(f"{k} {v:.3f}" for k, v in PAPER[method].items())
        print(
            f"{method:6s} ours: ODS {metrics['ODS']:.3f} OIS {metrics['OIS']:.3f} AP {metrics['AP']:.3f} "
            f"R50 {metrics['R50']:.3f}   paper: {paper}   ({metrics['images']} images, eval {eval_s:.0f} s)"
        )
    record = {"results": results, "machine": platform.platform(), "limit": args.limit, "data": str(args.data)}
    out = Path(__file__).parent / "results" / "edges_baselines.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
