"""Ternary pseudo-labels from an ABDiv map (paper §3.4).

Per image, with μ and σ the mean and standard deviation of the ABDiv map E:
E > μ + kσ -> edge (1); E < μ − kσ -> interior (0); otherwise uncertain (ignored by the loss).
On disk (PNG) the uncertain value is 255, the usual "ignore index" of segmentation losses.
"""

from __future__ import annotations

import numpy as np

EDGE, INTERIOR, IGNORE = 1, 0, 255


def ternarize(edge_map: np.ndarray, k: float = 1.0) -> np.ndarray:
    """uint8 map of {0, 1, 255} (interior, edge, ignore) with the per-image μ ± kσ rule."""
    e = np.asarray(edge_map, dtype=np.float64)
    mu, sigma = float(e.mean()), float(e.std())
    out = np.full(e.shape, IGNORE, dtype=np.uint8)
    out[e > mu + k * sigma] = EDGE
    out[e < mu - k * sigma] = INTERIOR
    return out


def normalize_unit(edge_map: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] per image (the edge-source interface's range); constant -> zeros."""
    e = np.asarray(edge_map, dtype=np.float64)
    lo, hi = float(e.min()), float(e.max())
    if hi - lo <= 0:
        return np.zeros(e.shape, dtype=np.float32)
    return ((e - lo) / (hi - lo)).astype(np.float32)
