"""The BSDS500 boundary benchmark (ODS, OIS, AP, R50): our implementation of the official rules.

Per image and threshold t, the soft map is binarized at `prob >= t`, thinned like MATLAB's
`bwmorph(.., 'thin', inf)`, and for each annotator its pixels are matched one-to-one to the
annotator's boundary pixels within `max_dist * diagonal`. Recall sums matched boundary pixels over
annotators; precision counts edge pixels matched to any annotator.

Matching. The official code (`correspondPixels`) solves a minimum-cost perfect assignment on a graph
with an outlier node per pixel: a real pair costs its distance, a pixel left unmatched costs
`100 * max_dist` (all costs x100, rounded to integers). We solve the same problem exactly with
scipy's compiled sparse Jonker-Volgenant (`min_weight_full_bipartite_matching`): left = edge pixels
+ an outlier per boundary pixel, right = boundary pixels + an outlier per edge pixel; each pixel may
go to its own outlier, and for every real pair the two outliers may pair up. A matching M then
costs `sum(d) + outlier * (n1 + n2 - |M|)`, the official objective. The official graph gives each
pixel only a few random outlier edges, so where several assignments have the same cost the two may
pick different ones; counts then differ by a few pixels (a few 1e-4 in P and R).

Speed. Candidate pairs are built once per image and annotator for every pixel that any threshold
can turn on; a threshold whose binary map equals the previous one's reuses its counts; only pixels
with a partner in range enter the assignment; the matching graph is split into connected components
and a component unchanged since the previous threshold keeps its solution (about half of the work on
typical maps). Images go to parallel processes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samtasks.utils.thinning import thin

logger = logging.getLogger(__name__)

MULTIPLIER = 100  # the official code's integer cost scale
OUTLIER_COST = 100  # an unmatched pixel costs this times the largest allowed distance


def thresholds(n: int) -> np.ndarray:
    """The official thresholds `linspace(1/(n+1), 1-1/(n+1), n)`: `float64 [n]`."""
    return np.linspace(1 / (n + 1), 1 - 1 / (n + 1), n)


# --- matching -----------------------------------------------------------------------------------------


def _offsets(radius: float) -> np.ndarray:
    """`int [K, 2]` (dy, dx) within `radius`, nearest first."""
    r = math.ceil(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    offsets = np.stack([dy[keep], dx[keep]], 1)
    return offsets[np.argsort((offsets**2).sum(1), kind="stable")]


@dataclass
class _Pairs:
    """Every (candidate pixel, boundary pixel) pair within range, for one annotator."""

    pixel: np.ndarray  # int64 [M] index into the candidate pixels
    boundary: np.ndarray  # int64 [M] index into the annotator's boundary pixels
    cost: np.ndarray  # int64 [M] round(distance * MULTIPLIER)
    count: int  # boundary pixels of the annotator
    solved: dict = field(default_factory=dict, repr=False)  # the last call's solution per component

    @staticmethod
    def build(candidates: np.ndarray, boundary: np.ndarray, radius: float) -> _Pairs:
        """`candidates`: `int [N]` flat pixel indices; `boundary`: `bool [H, W]`."""
        h, w = boundary.shape
        cy, cx = np.divmod(candidates, w)
        by, bx = np.nonzero(boundary)
        index = np.full(boundary.shape, -1, np.int64)
        index[by, bx] = np.arange(len(by))
        pixel, partner, cost = [], [], []
        for dy, dx in _offsets(radius) if len(by) else ():
            y, x = cy + dy, cx + dx
            inside = np.flatnonzero((y >= 0) & (y < h) & (x >= 0) & (x < w))
            j = index[y[inside], x[inside]]
            hit = j >= 0
            pixel.append(inside[hit])
            partner.append(j[hit])
            cost.append(np.full(int(hit.sum()), round(math.hypot(dy, dx) * MULTIPLIER), np.int64))
        empty = np.zeros(0, np.int64)
        return _Pairs(
            np.concatenate(pixel) if pixel else empty,
            np.concatenate(partner) if partner else empty,
            np.concatenate(cost) if cost else empty,
            len(by),
        )

    def match(self, on: np.ndarray, outlier: int) -> tuple[np.ndarray, np.ndarray]:
        """The minimum-cost assignment among the candidates where `on` (`bool [N]`) holds: the matched
        candidate indices and the matched boundary indices (`int64 [K]` each, in pairs).

        The graph splits into connected components that are solved independently; a component whose
        edge pixels equal those of a component of the previous call (its boundary pixels and pairs
        then equal too) reuses that solution, and the rest go to one assignment."""
        from scipy import sparse
        from scipy.sparse.csgraph import connected_components

        keep = on[self.pixel]
        empty = np.zeros(0, np.int64)
        if not keep.any():
            self.solved = {}
            return empty, empty
        left, right, cost = self.pixel[keep], self.boundary[keep], self.cost[keep]
        left_ids, li = np.unique(left, return_inverse=True)
        right_ids, ri = np.unique(right, return_inverse=True)
        n1, n2 = len(left_ids), len(right_ids)
        graph = sparse.csr_matrix((np.ones(len(li), bool), (li, n1 + ri)), shape=(n1 + n2, n1 + n2))
        n_comp, label = connected_components(graph, directed=False)
        component = label[:n1]  # every component holds an edge pixel: boundary pixels enter only through pairs
        order = np.argsort(component, kind="stable")
        bounds = np.searchsorted(component[order], np.arange(n_comp + 1))
        keys = [left_ids[order[bounds[c] : bounds[c + 1]]].tobytes() for c in range(n_comp)]
        solved = {key: self.solved[key] for key in keys if key in self.solved}
        fresh = np.array([key not in solved for key in keys])
        if fresh.any():
            sel = fresh[component[li]]
            pixel, partner = _assign(left[sel], right[sel], cost[sel], outlier)
            owner = component[np.searchsorted(left_ids, pixel)]
            by_owner = np.argsort(owner, kind="stable")
            cut = np.searchsorted(owner[by_owner], np.arange(n_comp + 1))
            for c in np.flatnonzero(fresh):
                rows = by_owner[cut[c] : cut[c + 1]]
                solved[keys[c]] = (pixel[rows], partner[rows])
        self.solved = solved
        if not solved:
            return empty, empty
        return np.concatenate([v[0] for v in solved.values()]), np.concatenate([v[1] for v in solved.values()])


def _assign(left: np.ndarray, right: np.ndarray, cost: np.ndarray, outlier: int) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching of the pairs `(left[i], right[i])` at `cost[i]` where leaving a node
    unmatched costs `outlier`; returns the matched (left, right) ids."""
    from scipy import sparse
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    left_ids, li = np.unique(left, return_inverse=True)
    right_ids, ri = np.unique(right, return_inverse=True)
    n1, n2 = len(left_ids), len(right_ids)
    # Rows: n1 pixels, then n2 outliers; columns: n2 boundary pixels, then n1 outliers. Every weight
    # is shifted by 1 (a stored zero would be no edge); the shifts cancel in the objective:
    # each real pair replaces two pixel-outlier edges by itself and one outlier-outlier edge.
    rows = np.concatenate([li, np.arange(n1), n1 + np.arange(n2), n1 + ri])
    cols = np.concatenate([ri, n2 + np.arange(n1), np.arange(n2), n2 + li])
    weights = np.concatenate([cost + 1, np.full(n1 + n2 + len(li), outlier + 1)])
    graph = sparse.csr_matrix((weights.astype(np.float64), (rows, cols)), shape=(n1 + n2, n1 + n2))
    _, col = min_weight_full_bipartite_matching(graph)
    col = col[:n1]
    real = np.flatnonzero(col < n2)
    return left_ids[real], right_ids[col[real]]


def _radius_and_outlier(shape: tuple[int, int], max_dist: float) -> tuple[float, int]:
    radius = max_dist * math.hypot(*shape)
    return radius, math.ceil(OUTLIER_COST * radius * MULTIPLIER)


@dataclass
class Correspondence:
    """One-to-one matching of a binary edge map to one boundary map."""

    edges: np.ndarray  # bool [H, W] edge pixels matched to a boundary pixel
    boundary: np.ndarray  # bool [H, W] boundary pixels matched to an edge pixel


def correspond_pixels(edges: np.ndarray, boundary: np.ndarray, max_dist: float = 0.0075) -> Correspondence:
    """The official `correspondPixels`: minimum-cost one-to-one matching within `max_dist * diagonal`.

    Args:
        edges, boundary: `bool [H, W]` (the edges are not thinned here).
        max_dist: the largest matching distance as a fraction of the image diagonal.
    """
    edges, boundary = np.asarray(edges, bool), np.asarray(boundary, bool)
    if edges.shape != boundary.shape:
        raise ValueError(f"edge map {edges.shape} and boundary map {boundary.shape} differ in size")
    radius, outlier = _radius_and_outlier(edges.shape, max_dist)
    candidates = np.flatnonzero(edges)
    pixel, partner = _Pairs.build(candidates, boundary, radius).match(np.ones(len(candidates), bool), outlier)
    matched_edges = np.zeros(edges.size, bool)
    matched_edges[candidates[pixel]] = True
    matched_boundary = np.zeros(boundary.size, bool)
    matched_boundary[np.flatnonzero(boundary)[partner]] = True
    return Correspondence(matched_edges.reshape(edges.shape), matched_boundary.reshape(boundary.shape))


# --- per image ------------------------------------------------------------------------------------------


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
        return _ratio(self.cnt_r, self.sum_r)

    @property
    def precision(self) -> np.ndarray:
        return _ratio(self.cnt_p, self.sum_p)


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
    radius, outlier = _radius_and_outlier(shape, max_dist)
    pairs = [_Pairs.build(candidates, b, radius) for b in boundaries]
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


# --- summary ---------------------------------------------------------------------------------------------


def fmeasure(r, p):
    """`2PR / (P + R)`, 0 where both are 0 (elementwise)."""
    r, p = np.asarray(r, np.float64), np.asarray(p, np.float64)
    return 2 * p * r / (p + r + ((p + r) == 0))


def _ratio(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a / (b + (b == 0))


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


class BoundaryBenchmark:
    """Accumulates per-image `ImageCounts`; `compute()` gives ODS / OIS / AP / R50 and `write()` the
    official files.

    Args:
        n_thresholds, max_dist, thinning: the evaluation protocol used by `update`.
    """

    def __init__(self, *, n_thresholds: int = 99, max_dist: float = 0.0075, thinning: bool = True) -> None:
        self.n_thresholds = n_thresholds
        self.max_dist = max_dist
        self.thinning = thinning
        self.reset()

    def reset(self) -> None:
        self.names: list[str] = []
        self.images: list[ImageCounts] = []

    def update(self, prob: np.ndarray, boundaries: Sequence[np.ndarray], name: str | None = None) -> ImageCounts:
        """Evaluates one soft map (`float [H, W]` in [0, 1]) against its annotators and adds it."""
        counts = evaluate_image(
            prob, boundaries, n_thresholds=self.n_thresholds, max_dist=self.max_dist, thinning=self.thinning
        )
        self.add(counts, name)
        return counts

    def add(self, counts: ImageCounts, name: str | None = None) -> None:
        """Adds counts computed elsewhere (a worker process, a stored record)."""
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
        total = self.curve()
        r, p = total.recall, total.precision
        ods = max_f(total.thresholds, r, p)
        best = np.zeros(4)
        for c in self.images:
            f = fmeasure(c.recall, c.precision)
            k = int(np.flatnonzero(f == f.max())[-1])  # the last threshold of the best F, as the official code
            best += (c.cnt_r[k], c.sum_r[k], c.cnt_p[k], c.sum_p[k])
        ois_r, ois_p = float(_ratio(best[0], best[1])), float(_ratio(best[2], best[3]))
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


# --- inputs and folders --------------------------------------------------------------------------------

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


def _evaluate_job(job: _Job) -> ImageCounts:
    from samtasks.data.bsds import load_boundaries

    prediction = load_prediction(job.pred)
    try:
        return evaluate_image(
            prediction,
            load_boundaries(job.gt),
            n_thresholds=job.n_thresholds,
            max_dist=job.max_dist,
            thinning=job.thinning,
        )
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
) -> BoundaryBenchmark:
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
    bench = BoundaryBenchmark(n_thresholds=n_thresholds, max_dist=max_dist, thinning=thinning)
    results = parallel_map(_evaluate_job, jobs, workers)
    if progress is not None:
        results = progress(results, len(jobs))
    for gt, counts in zip(gts, results, strict=True):
        bench.add(counts, gt.stem)
    return bench
