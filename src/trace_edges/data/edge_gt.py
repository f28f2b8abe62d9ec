"""Instance-edge ground truth from panoptic segment-id maps (paper Table 6 / Fig. 11).

A pixel ``p`` is an edge pixel iff its right or its lower 4-neighbour carries a different
segment id: a 1-pixel-wide boundary placed on the upper/left side of every id change (the BSDS
``seg2bmap`` convention without its diagonal term). Pixels on the last row/column only compare with
the neighbour that exists; the image border itself is never an edge.

A neighbour pair ``(p, q)`` with different ids counts unless it is excluded:

* ``include_void=False`` excludes pairs where either pixel is void (id 0);
* ``include_crowd=False`` excludes pairs where either pixel belongs to a crowd segment
  (``iscrowd = 1`` in the panoptic ``segments_info``; the caller passes their ids).

The marked pixel is always ``p`` (the upper/left one), whichever of the two is void or crowd.

With ``thin=True`` (the default of the workflow's ``edge_gt.thin``) the map is then thinned with
the same operator the BSDS protocol applies to thresholded predictions
(``pyEdgeEval.preprocess.binary_thin``, MATLAB's ``bwmorph(..., 'thin', inf)``): on slanted
boundaries the right/lower rule leaves 4-connected staircases whose corner pixels no thinned
prediction can ever match one-to-one, which caps the ODS of the GT itself at about 0.88 on
coco_mini; thinned, the GT scores ODS 1.0 against itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from trace_edges.errors import DataError
from trace_edges.io import read_json
from trace_edges.panoptic_io import read_panoptic_png


def edge_gt_from_panoptic(ids: np.ndarray, *, crowd_ids: Iterable[int] = (),
                          include_void: bool = True, include_crowd: bool = True,
                          thin: bool = False) -> np.ndarray:
    """``bool[H, W]`` instance-edge map of a segment-id map ``ids`` (0 = void)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or 0 in ids.shape:
        raise ValueError(f"segment-id map must be 2-D and non-empty, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"segment-id map must be integer, got {ids.dtype}")

    excluded = np.zeros(ids.shape, dtype=bool)
    if not include_void:
        excluded |= ids == 0
    crowd = np.asarray(sorted({int(c) for c in crowd_ids}), dtype=ids.dtype)
    if not include_crowd and crowd.size:
        excluded |= np.isin(ids, crowd)

    edge = np.zeros(ids.shape, dtype=bool)
    # right neighbour
    right = ids[:, :-1] != ids[:, 1:]
    right &= ~(excluded[:, :-1] | excluded[:, 1:])
    edge[:, :-1] |= right
    # lower neighbour
    down = ids[:-1, :] != ids[1:, :]
    down &= ~(excluded[:-1, :] | excluded[1:, :])
    edge[:-1, :] |= down
    if thin:
        from trace_edges.metrics.edges import bsds_thin

        edge = bsds_thin(edge)
    return edge


def crowd_ids_of(segments_info: Iterable[Mapping[str, Any]]) -> list[int]:
    """Ids of the crowd segments (``iscrowd = 1``) in a panoptic annotation's ``segments_info``."""
    return sorted(int(s["id"]) for s in segments_info if int(s.get("iscrowd", 0)) == 1)


class PanopticEdgeGT(Mapping[int, np.ndarray]):
    """Lazy ``{image_id: bool[H, W]}`` edge GT of a COCO panoptic annotation file.

    Each map is computed from its PNG when accessed (nothing is cached), so evaluating all of
    COCO val never holds every GT map in memory. ``image_ids`` restricts (and orders) the images;
    an id without a panoptic annotation raises :class:`DataError` at construction. ``include_void``,
    ``include_crowd`` and ``thin`` are those of :func:`edge_gt_from_panoptic` (the workflow's
    ``edge_gt`` block; ``thin`` defaults to False here, like the function, and to true there).
    """

    def __init__(self, panoptic_json: str | Path, panoptic_dir: str | Path, *,
                 image_ids: Iterable[int] | None = None, include_void: bool = True,
                 include_crowd: bool = True, thin: bool = False):
        self.panoptic_json = Path(panoptic_json)
        self.panoptic_dir = Path(panoptic_dir)
        self.include_void = bool(include_void)
        self.include_crowd = bool(include_crowd)
        self.thin = bool(thin)
        data = read_json(self.panoptic_json, what="panoptic annotation file")
        self._anns = {int(a["image_id"]): a for a in data.get("annotations", [])}
        self._sizes = {int(im["id"]): (int(im["height"]), int(im["width"]))
                       for im in data.get("images", [])}
        self._ids = sorted(self._anns) if image_ids is None else [int(i) for i in image_ids]
        self._idset = set(self._ids)
        missing = [i for i in self._ids if i not in self._anns]
        if missing:
            raise DataError(f"no panoptic annotation for image id(s) {missing[:10]}",
                            path=self.panoptic_json,
                            fix="use the panoptic annotations matching the image list")

    def __getitem__(self, image_id: int) -> np.ndarray:
        try:
            key = int(image_id)
        except (TypeError, ValueError):
            raise KeyError(image_id) from None
        if key not in self._idset:
            raise KeyError(image_id)
        ann = self._anns[key]
        png = self.panoptic_dir / ann["file_name"]
        ids = read_panoptic_png(png)
        if key in self._sizes and ids.shape != self._sizes[key]:
            raise DataError(f"panoptic PNG has shape {ids.shape}, the annotation says "
                            f"{self._sizes[key]}", path=png, fix="restore the original PNG")
        return edge_gt_from_panoptic(
            ids, crowd_ids=crowd_ids_of(ann.get("segments_info", [])),
            include_void=self.include_void, include_crowd=self.include_crowd, thin=self.thin)

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        try:
            return int(image_id) in self._idset  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False


def load_edge_gts(panoptic_json: str | Path, panoptic_dir: str | Path, *,
                  image_ids: Iterable[int] | None = None, include_void: bool = True,
                  include_crowd: bool = True, thin: bool = False) -> dict[int, np.ndarray]:
    """Edge GT of every (or each listed) image of a COCO panoptic annotation file, in memory.

    Returns ``{image_id: bool[H, W]}``; a listed id without a panoptic annotation, or a PNG whose
    size differs from the annotated image size, raises :class:`DataError`. For large datasets use
    the lazy :class:`PanopticEdgeGT`.
    """
    lazy = PanopticEdgeGT(panoptic_json, panoptic_dir, image_ids=image_ids,
                          include_void=include_void, include_crowd=include_crowd, thin=thin)
    return {i: lazy[i] for i in lazy}
