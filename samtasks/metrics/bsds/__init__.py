"""The BSDS500 boundary benchmark (ODS, OIS, AP, R50): our implementation of the official rules.

Per image and threshold, the binary edge map is thinned (`samtasks.utils.thinning`) and matched
one-to-one to each annotator's boundary pixels within `max_dist * diagonal`. The modules, by concern:
- `matching`: the official `correspondPixels` as an exact sparse assignment;
- `counts`: one image's per-threshold counts (`evaluate_image`, `ImageCounts`);
- `summary`: ODS / OIS / AP / R50, the accumulator `BoundaryMetrics`, the official result files;
- `files`: reading prediction maps and ground truth, a whole folder in parallel processes.
"""

from samtasks.metrics.bsds.counts import ImageCounts, evaluate_image, thresholds
from samtasks.metrics.bsds.files import (
    PREDICTION_SUFFIXES,
    evaluate_folder,
    find_prediction,
    load_boundaries,
    load_prediction,
    parallel_map,
    seg_boundaries,
)
from samtasks.metrics.bsds.matching import Correspondence, correspond_pixels
from samtasks.metrics.bsds.summary import (
    BestF,
    BoundaryMetrics,
    average_precision,
    fmeasure,
    max_f,
    plot_pr,
    recall_at_precision,
)

__all__ = [
    "PREDICTION_SUFFIXES",
    "BestF",
    "BoundaryMetrics",
    "Correspondence",
    "ImageCounts",
    "average_precision",
    "correspond_pixels",
    "evaluate_folder",
    "evaluate_image",
    "find_prediction",
    "fmeasure",
    "load_boundaries",
    "load_prediction",
    "max_f",
    "parallel_map",
    "plot_pr",
    "recall_at_precision",
    "seg_boundaries",
    "thresholds",
]
