"""BGP step 1: split masks at edge walls (connected components of ``mask & ~walls``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from trace_edges.bgp.walls import bbox_slices

__all__ = ["split_mask", "split_masks"]


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbour) or 2 (8-neighbour), got {connectivity!r}")
    return ndimage.generate_binary_structure(2, connectivity)


def split_mask(mask: np.ndarray, walls: np.ndarray, *, connectivity: int = 1,
               min_area: int = 64, reattach: bool = False) -> list[np.ndarray]:
    """Split one mask into the connected components of ``mask & ~walls``.

    Components smaller than ``min_area`` pixels are dropped. The wall pixels themselves belong
    to no piece (propagation, the next BGP step, hands them back to one side). Pieces are
    returned in raster order of their first pixel (deterministic).

    If no piece survives (the mask is swallowed by walls, or is itself smaller than
    ``min_area``) the mask is returned unchanged as ``[mask]``: edges only ever separate a
    proposal, they never delete it.

    With ``reattach=True`` every pixel of the mask outside the kept pieces (wall pixels and
    dropped pieces) is given to the nearest kept piece (Euclidean distance transform), so the
    pieces partition the mask exactly; useful when no propagation step follows.
    """
    mask = np.asarray(mask, dtype=bool)
    walls = np.asarray(walls, dtype=bool)
    if mask.shape != walls.shape or mask.ndim != 2:
        raise ValueError(f"split_mask: mask {mask.shape} and walls {walls.shape} must be equal 2-D shapes")
    structure = _structure(connectivity)
    box = bbox_slices(mask)
    if box is None:
        return [mask.copy()]
    y0, y1, x0, x1 = box[0].start, box[0].stop, box[1].start, box[1].stop
    free = mask[y0:y1, x0:x1] & ~walls[y0:y1, x0:x1]
    labels, n = ndimage.label(free, structure=structure)
    if n == 0:
        return [mask.copy()]
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = [lab for lab in range(1, n + 1) if areas[lab] >= min_area]
    if not keep:
        return [mask.copy()]
    crop = mask[y0:y1, x0:x1]
    if reattach:
        # every pixel of the mask outside the kept pieces (walls, dropped slivers) joins the
        # nearest kept piece, so the pieces partition the mask
        kept = np.where(np.isin(labels, keep), labels, 0)
        _, (iy, ix) = ndimage.distance_transform_edt(kept == 0, return_indices=True)
        labels = np.where(crop, kept[iy, ix], 0)
    pieces = []
    for lab in keep:  # ndimage.label numbers components in raster order of their first pixel
        piece = np.zeros(mask.shape, dtype=bool)
        piece[y0:y1, x0:x1] = labels == lab
        pieces.append(piece)
    return pieces


def split_masks(masks: Sequence[np.ndarray], scores: Sequence[float], walls: np.ndarray, *,
                connectivity: int = 1, min_area: int = 64, reattach: bool = False
                ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Split every mask (see :func:`split_mask`).

    Returns ``(pieces, piece_scores, parent)``: each piece inherits its parent's score and
    ``parent[i]`` is the index of the input mask piece ``i`` came from. Pieces of mask 0 come
    first, then those of mask 1, and so on.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(masks) != len(scores):
        raise ValueError(f"split_masks: {len(masks)} masks but {len(scores)} scores")
    pieces: list[np.ndarray] = []
    out_scores: list[float] = []
    parent: list[int] = []
    for i, m in enumerate(masks):
        for p in split_mask(m, walls, connectivity=connectivity, min_area=min_area, reattach=reattach):
            pieces.append(p)
            out_scores.append(float(scores[i]))
            parent.append(i)
    return pieces, np.asarray(out_scores, dtype=np.float64), np.asarray(parent, dtype=np.int64)
