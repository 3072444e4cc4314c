"""One-to-one matching of edge pixels to boundary pixels: the official `correspondPixels`.

The official code solves a minimum-cost perfect assignment on a graph with an outlier node per pixel:
a real pair costs its distance, a pixel left unmatched costs `100 * max_dist` (all costs x100, rounded
to integers). We solve the same problem exactly with scipy's compiled sparse Jonker-Volgenant
(`min_weight_full_bipartite_matching`): left = edge pixels + an outlier per boundary pixel, right =
boundary pixels + an outlier per edge pixel; each pixel may go to its own outlier, and for every real
pair the two outliers may pair up. A matching M then costs `sum(d) + outlier * (n1 + n2 - |M|)`, the
official objective. The official graph gives each pixel only a few random outlier edges, so where
several assignments have the same cost the two may pick different ones; counts then differ by a few
pixels (a few 1e-4 in P and R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MULTIPLIER = 100  # the official code's integer cost scale
OUTLIER_COST = 100  # an unmatched pixel costs this times the largest allowed distance


def _offsets(radius: float) -> np.ndarray:
    """`int [K, 2]` (dy, dx) within `radius`, nearest first."""
    r = math.ceil(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    offsets = np.stack([dy[keep], dx[keep]], 1)
    return offsets[np.argsort((offsets**2).sum(1), kind="stable")]


@dataclass
class CandidatePairs:
    """Every (candidate pixel, boundary pixel) pair within range, for one annotator."""

    pixel: np.ndarray  # int64 [M] index into the candidate pixels
    boundary: np.ndarray  # int64 [M] index into the annotator's boundary pixels
    cost: np.ndarray  # int64 [M] round(distance * MULTIPLIER)
    count: int  # boundary pixels of the annotator
    solved: dict = field(default_factory=dict, repr=False)  # the last call's solution per component

    @staticmethod
    def build(candidates: np.ndarray, boundary: np.ndarray, radius: float) -> CandidatePairs:
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
        return CandidatePairs(
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


def radius_and_outlier(shape: tuple[int, int], max_dist: float) -> tuple[float, int]:
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
    radius, outlier = radius_and_outlier(edges.shape, max_dist)
    candidates = np.flatnonzero(edges)
    pixel, partner = CandidatePairs.build(candidates, boundary, radius).match(np.ones(len(candidates), bool), outlier)
    matched_edges = np.zeros(edges.size, bool)
    matched_edges[candidates[pixel]] = True
    matched_boundary = np.zeros(boundary.size, bool)
    matched_boundary[np.flatnonzero(boundary)[partner]] = True
    return Correspondence(matched_edges.reshape(edges.shape), matched_boundary.reshape(boundary.shape))
