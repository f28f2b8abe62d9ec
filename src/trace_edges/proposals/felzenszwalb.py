"""Training-free base proposals: multi-scale Felzenszwalb-Huttenlocher regions.

A stand-in for MaskCut/ProMerge that needs no network: each region of ``skimage``'s
``felzenszwalb`` segmentation at each scale is a candidate; it becomes a proposal when its area
fraction lies in ``[min_area_frac, max_area_frac]`` and it touches at most ``max_borders`` of the
four image borders. Score = ``d / (d + C)`` with ``d`` the CIELAB distance (Delta E 1976) between
the region's mean colour and the mean colour of a ring of ``ring_px`` pixels around it, and
``C = SCORE_HALF_CONTRAST`` (a region with contrast C scores 0.5). Scores lie in (0, 1).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb

from trace_edges.proposals.plan import ProposalPlan

__all__ = ["felzenszwalb_proposals", "felzenszwalb_params", "ring_contrast", "stage_plan", "SCORE_HALF_CONTRAST"]

#: Delta E at which the score is 0.5 (about the contrast of a clearly visible object boundary).
SCORE_HALF_CONTRAST = 20.0
#: Lower bound of the score, so that it lies in (0, 1] even for a region of zero contrast.
SCORE_FLOOR = 1e-6


def felzenszwalb_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a ``proposals.felzenszwalb`` block, filling in the schema defaults (memoised)."""
    return copy.deepcopy(_validated(json.dumps(dict(params or {}), sort_keys=True, default=str)))


@lru_cache(maxsize=64)
def _validated(key: str) -> dict[str, Any]:
    from trace_edges.config import validate

    block = validate({"felzenszwalb": json.loads(key)}, block="proposals", where="proposals params")
    return block["felzenszwalb"]


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1]
    return yy * yy + xx * xx <= r * r


def ring_contrast(lab: np.ndarray, region: np.ndarray, ring_px: int) -> float:
    """CIELAB distance between the mean colour of ``region`` and of the ring of pixels within
    ``ring_px`` (Euclidean disk) outside it. Returns 0 when the ring is empty."""
    ys, xs = np.nonzero(region)
    H, W = region.shape
    y0, y1 = max(ys.min() - ring_px, 0), min(ys.max() + ring_px + 1, H)
    x0, x1 = max(xs.min() - ring_px, 0), min(xs.max() + ring_px + 1, W)
    reg = region[y0:y1, x0:x1]
    ring = ndimage.binary_dilation(reg, structure=_disk(ring_px)) & ~reg
    if not ring.any():
        return 0.0
    crop = lab[y0:y1, x0:x1]
    return float(np.linalg.norm(crop[reg].mean(axis=0) - crop[ring].mean(axis=0)))


def felzenszwalb_proposals(rgb: np.ndarray, params: Mapping[str, Any] | None = None
                           ) -> tuple[list[np.ndarray], np.ndarray]:
    """Multi-scale Felzenszwalb proposals for a ``uint8 [H, W, 3]`` image.

    Returns ``(masks, scores)``: boolean ``[H, W]`` masks sorted by descending score (ties: scale
    order, then region label order), exact duplicates across scales removed (the first kept),
    at most ``max_per_image``.
    """
    p = felzenszwalb_params(params)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"felzenszwalb_proposals: expected an [H, W, 3] image, got {rgb.shape}")
    H, W = rgb.shape[:2]
    lab = rgb2lab(rgb)
    n_pix = H * W
    masks: list[np.ndarray] = []
    scores: list[float] = []
    seen: set[bytes] = set()
    for scale in p["scales"]:
        seg = felzenszwalb(rgb, scale=float(scale), sigma=float(p["sigma"]), min_size=int(p["min_size"]))
        n = int(seg.max()) + 1
        areas = np.bincount(seg.ravel(), minlength=n)
        touches = np.zeros(n, dtype=np.int64)
        for border in (seg[0, :], seg[-1, :], seg[:, 0], seg[:, -1]):
            touches[np.unique(border)] += 1
        frac = areas / n_pix
        ok = (frac >= p["min_area_frac"]) & (frac <= p["max_area_frac"]) & (touches <= p["max_borders"])
        objs = ndimage.find_objects(seg + 1)
        for lab_id in np.flatnonzero(ok):
            sl = objs[lab_id]
            region = np.zeros((H, W), dtype=bool)
            region[sl] = seg[sl] == lab_id
            key = np.packbits(region).tobytes()
            if key in seen:
                continue
            seen.add(key)
            d = ring_contrast(lab, region, int(p["ring_px"]))
            masks.append(region)
            scores.append(max(d / (d + SCORE_HALF_CONTRAST), SCORE_FLOOR))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[: int(p["max_per_image"])]
    return [masks[i] for i in order], np.asarray(scores, dtype=np.float64)[order]


def stage_plan(block: Mapping[str, Any], images) -> ProposalPlan:
    """The proposals stage's plan (:func:`trace_edges.proposals.stage_plan`): per image, keyed by
    the image's bytes."""
    from trace_edges.data.images import load_rgb

    block = dict(block)
    return ProposalPlan(params=block, propose=lambda rec: felzenszwalb_proposals(load_rgb(rec["file"]), block),
                        key_parts=lambda rec: rec["sha256"])
