"""Binary thinning as MATLAB's `bwmorph(.., 'thin', inf)` computes it (the BSDS benchmark thins every
binary edge map before matching; edge suppression may thin too)."""

from __future__ import annotations

import numpy as np

_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _thin_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two subiterations over the 256 neighbourhood codes (bit k-1 = x_k): the
    conditions G1, G2, G3 / G3' of Lam, Lee and Suen (TPAMI 1992, p. 879), which MATLAB's
    `bwmorph(.., 'thin')` cites."""
    code = np.arange(256)
    x = [None] + [(code >> k) & 1 for k in range(8)]
    x.append(x[1])  # x9 = x1
    g1 = sum((1 - x[2 * i - 1]) & (x[2 * i] | x[2 * i + 1]) for i in range(1, 5)) == 1
    n1 = sum(x[2 * k - 1] | x[2 * k] for k in range(1, 5))
    n2 = sum(x[2 * k] | x[2 * k + 1] for k in range(1, 5))
    g2 = (np.minimum(n1, n2) >= 2) & (np.minimum(n1, n2) <= 3)
    g3 = ((x[2] | x[3] | (1 - x[8])) & x[1]) == 0
    g3_prime = ((x[6] | x[7] | (1 - x[4])) & x[5]) == 0
    return g1 & g2 & g3, g1 & g2 & g3_prime


_THIN_TABLES = _thin_tables()


def thin(edges: np.ndarray) -> np.ndarray:
    """MATLAB's `bwmorph(edges, 'thin', inf)`: both subiterations repeated until nothing changes.

    Args:
        edges: `bool [H, W]`.

    Returns:
        `bool [H, W]`, a subset of `edges`.
    """
    edges = np.asarray(edges, bool)
    h, w = edges.shape
    padded = np.zeros((h + 2, w + 2), bool)
    padded[1:-1, 1:-1] = edges
    flat = padded.ravel()
    steps = np.array([dy * (w + 2) + dx for dy, dx in _NEIGHBOURS])
    bits = 1 << np.arange(8)
    pixels = np.flatnonzero(flat)
    changed = True
    while changed:
        changed = False
        for table in _THIN_TABLES:
            delete = table[flat[pixels[:, None] + steps] @ bits]  # all pixels of a subiteration at once
            if delete.any():
                flat[pixels[delete]] = False
                pixels = pixels[~delete]
                changed = True
    return padded[1:-1, 1:-1].copy()
