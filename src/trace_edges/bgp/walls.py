"""Edge map -> binary walls (the separators used by BGP's splitting step).

The paper does not state how TRACE edges are binarised for the connected-component split
(digest §8 item 6). We reuse the paper's own per-image rule from the pseudo-label
ternarisation (§3.4): an edge pixel is one where ``E > mu + k * sigma`` with ``k = 1``.
"""

from __future__ import annotations

import numpy as np

from trace_edges.errors import DataError

__all__ = ["bbox_slices", "check_edge", "edge_walls"]


def check_edge(edge: np.ndarray, shape: tuple[int, int] | None = None, *, what: str = "edge map") -> np.ndarray:
    """Validate an edge map (2-D, finite, values in [0, 1]) and return it as ``float64``.

    Raises :class:`DataError` when the map is not 2-D, has the wrong shape, contains NaN/inf or
    leaves [0, 1] by more than 1e-6 (tiny overshoots from resampling are clipped).
    """
    e = np.asarray(edge)
    if e.ndim != 2:
        raise DataError(f"{what} must be 2-D [H, W], got shape {e.shape}")
    if shape is not None and tuple(e.shape) != tuple(shape):
        raise DataError(f"{what} has shape {e.shape}, expected {tuple(shape)} (image resolution)")
    e = e.astype(np.float64, copy=False)
    if not np.all(np.isfinite(e)):
        raise DataError(f"{what} contains NaN or inf values")
    if e.size and (e.min() < -1e-6 or e.max() > 1 + 1e-6):
        raise DataError(f"{what} must lie in [0, 1], got range [{e.min():.4g}, {e.max():.4g}]")
    return np.clip(e, 0.0, 1.0)


def edge_walls(edge: np.ndarray, *, mode: str = "mean_std", k: float = 1.0, value: float = 0.5) -> np.ndarray:
    """Binarise an edge map in [0, 1] into walls (``bool[H, W]``).

    * ``mode="mean_std"``: wall where ``E > mu + k * sigma`` (mu, sigma over the whole image;
      the paper's §3.4 ternarisation rule used as the split threshold).
    * ``mode="fixed"``: wall where ``E > value``.

    A constant edge map (including an all-zero one) carries no boundary information and gives
    no walls in either mode. The comparison is strict, so a pixel exactly at the threshold is
    not a wall.
    """
    e = check_edge(edge)
    if e.size == 0 or float(e.max()) == float(e.min()):
        return np.zeros(e.shape, dtype=bool)
    if mode == "mean_std":
        thr = float(e.mean()) + float(k) * float(e.std())
    elif mode == "fixed":
        thr = float(value)
    else:
        raise ValueError(f"edge_walls: unknown mode {mode!r} (expected 'mean_std' or 'fixed')")
    return e > thr


def bbox_slices(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of a 2-D boolean mask as ``(rows, cols)`` slices; ``None`` when empty.
    (Row/column reductions: cheaper than ``np.nonzero`` on large masks.)"""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]: rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
