"""WPS pseudo-labels: a semantic map plus instance edges -> a COCO-format panoptic map.

The paper (§3.2 of the digest) splits the thing-class regions of a tag-supervised semantic map
(MARS / DHR) into instances with TRACE edges and BGP, and trains Mask2Former on the result. We
implement the instance-separation step deterministically, without propagation:

* every **stuff** category becomes one segment (all its pixels, connected or not: COCO panoptic
  has one segment per stuff class);
* every **thing** region is first cut into its plain connected components (two separate blobs of
  the same class are two instances even without edges). Inside each component, the walls
  (``edge_walls`` of the edge map) cut it further: the connected components of
  ``component & ~walls`` with at least ``min_area`` pixels are the instances, and every other
  pixel of the component (wall pixels and pieces smaller than ``min_area``) joins the nearest
  instance (Euclidean distance transform). A component with fewer than two such pieces stays a
  single instance: edges only separate, they never delete pixels;
* with ``edge=None`` (the "no edges" baseline) thing regions are split by connectivity only.

Every non-void pixel gets exactly one segment; void (category 0) stays id 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

from trace_edges.bgp.walls import check_edge, edge_walls
from trace_edges.errors import DataError

__all__ = ["pseudo_panoptic", "split_region"]

_DEFAULT_THRESHOLD = {"mode": "mean_std", "k": 1.0, "value": 0.5}


def split_region(region: np.ndarray, walls: np.ndarray | None, *, min_area: int = 64,
                 connectivity: int = 1) -> np.ndarray:
    """Instance labels (``int32``, 0 outside ``region``, 1..n inside) for one thing region.

    See the module docstring for the rule. Labels are numbered in raster order of the first
    pixel of each plain connected component, and inside a component in raster order of the
    first pixel of each wall-separated piece.
    """
    region = np.asarray(region, dtype=bool)
    structure = ndimage.generate_binary_structure(2, connectivity)
    comps, n = ndimage.label(region, structure=structure)
    out = np.zeros(region.shape, dtype=np.int32)
    next_label = 1
    for c, sl in enumerate(ndimage.find_objects(comps), start=1):
        comp = comps[sl] == c
        assign = None
        if walls is not None:
            lab, m = ndimage.label(comp & ~walls[sl], structure=structure)
            if m >= 2:
                areas = np.bincount(lab.ravel(), minlength=m + 1)
                big = np.flatnonzero(areas >= min_area)
                big = big[big > 0]
                if len(big) >= 2:
                    seeds = np.where(np.isin(lab, big), lab, 0)
                    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
                    nearest = seeds[iy, ix]
                    # relabel the pieces 1..k in raster order of their first pixel (= label order)
                    remap = np.zeros(m + 1, dtype=np.int32)
                    remap[big] = np.arange(len(big), dtype=np.int32)
                    assign = remap[nearest]
                    out[sl][comp] = next_label + assign[comp]
                    next_label += len(big)
        if assign is None:
            out[sl][comp] = next_label
            next_label += 1
    return out


def _segment_info(seg_id: int, category_id: int, mask: np.ndarray) -> dict[str, Any]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return {
        "id": int(seg_id), "category_id": int(category_id), "iscrowd": 0,
        "area": int(np.count_nonzero(mask)),
        "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)],
    }


def pseudo_panoptic(semantic: np.ndarray, categories: Sequence[Mapping[str, Any]],
                    edge: np.ndarray | None, params: Mapping[str, Any] | None = None, *,
                    edge_threshold: Mapping[str, Any] | None = None, connectivity: int = 1
                    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Build a panoptic pseudo-label from a semantic map and (optionally) an edge map.

    ``semantic``: int ``[H, W]`` of category ids, 0 = void. ``categories``: COCO panoptic
    categories (``id``, ``isthing``). ``edge``: float ``[H, W]`` in [0, 1], or ``None`` for the
    connectivity-only baseline. ``params``: the ``wps`` config block (``min_area`` is used).
    ``edge_threshold``: how edges become walls (the ``bgp.edge_threshold`` block; default
    ``mean_std`` with k = 1). Returns ``(ids uint32 [H, W], segments_info)`` with segment ids
    1, 2, ... (categories in ascending id order, instances in raster order) and COCO panoptic
    ``segments_info`` entries ``{id, category_id, iscrowd: 0, area, bbox}``.
    """
    from trace_edges.bgp import validated_block

    p = validated_block("wps", params)
    min_area = int(p["min_area"])
    sem = np.asarray(semantic)
    if sem.ndim != 2 or not np.issubdtype(sem.dtype, np.integer):
        raise DataError(f"semantic map must be a 2-D integer array, got {sem.dtype} {sem.shape}")
    isthing = {int(c["id"]): bool(c.get("isthing", 0)) for c in categories}
    present = [int(v) for v in np.unique(sem) if v != 0]
    unknown = [v for v in present if v not in isthing]
    if unknown:
        raise DataError(f"semantic map contains category ids not in the category list: {unknown[:10]}",
                        fix="check that the semantic PNGs use COCO panoptic category ids (0 = void)")
    walls = None
    if edge is not None:
        e = check_edge(edge, sem.shape)
        walls = edge_walls(e, **dict(_DEFAULT_THRESHOLD, **dict(edge_threshold or {})))
    ids = np.zeros(sem.shape, dtype=np.uint32)
    segments: list[dict[str, Any]] = []
    next_id = 1
    for cat in present:
        region = sem == cat
        if not isthing[cat]:
            ids[region] = next_id
            segments.append(_segment_info(next_id, cat, region))
            next_id += 1
            continue
        labels = split_region(region, walls, min_area=min_area, connectivity=connectivity)
        objs = ndimage.find_objects(labels)
        for lab, sl in enumerate(objs, start=1):
            if sl is None:
                continue
            piece = np.zeros(sem.shape, dtype=bool)
            piece[sl] = labels[sl] == lab
            ids[piece] = next_id
            segments.append(_segment_info(next_id, cat, piece))
            next_id += 1
    return ids, segments
