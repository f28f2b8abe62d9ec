"""Proposals from an external method (MaskCut, ProMerge, CutLER, ...) as a COCO results JSON.

The file is a list of ``{"image_id", "segmentation", "score", ...}`` entries (COCO detection
results format, as written by detectron2 / pycocotools ``loadRes``). ``segmentation`` may be a
compressed RLE (``counts`` str), an uncompressed RLE (``counts`` list) or polygons (a list of
``[x1, y1, x2, y2, ...]``); polygons need the image size, given by ``sizes``. Other keys
(``category_id``, ``bbox``) are ignored: UIS is class-agnostic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from trace_edges.errors import ConfigError, DataError
from trace_edges.io import read_json, sha256_file
from trace_edges.masks import ann_to_mask, encode_rle
from trace_edges.proposals.plan import ProposalPlan

__all__ = ["load_external", "stage_plan"]

_FIX = ("expected a COCO results list: [{'image_id': int, 'segmentation': RLE or polygons, "
        "'score': float}, ...]; regenerate the file or fix proposals.external.path")


def _size_of(seg: Any, image_id: int, sizes: Mapping[int, tuple[int, int]] | None,
             where: str, path: Path) -> tuple[int, int]:
    known = None if sizes is None else sizes.get(image_id)
    if isinstance(seg, dict):
        size = seg.get("size")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and v > 0 for v in size)):
            raise DataError(f"{where}: RLE 'size' must be [height, width], got {size!r}", path=path, fix=_FIX)
        if known is not None and tuple(known) != tuple(size):
            raise DataError(f"{where}: RLE size {list(size)} != image size {list(known)} (height, width)",
                            path=path, fix="the proposals were made for differently sized images")
        return int(size[0]), int(size[1])
    if known is None:
        raise DataError(f"{where}: polygon segmentation needs the image size, none given for "
                        f"image_id {image_id}", path=path,
                        fix="pass sizes={image_id: (height, width)} (from the dataset's images list)")
    return int(known[0]), int(known[1])


def _check_polygons(seg: Any, where: str, path: Path) -> None:
    if not isinstance(seg, list) or not seg:
        raise DataError(f"{where}: 'segmentation' must be an RLE dict or a non-empty polygon list",
                        path=path, fix=_FIX)
    for poly in seg:
        if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly)):
            raise DataError(f"{where}: each polygon must be a flat list of >= 3 finite (x, y) pairs",
                            path=path, fix=_FIX)


def load_external(path: str | Path, image_ids: Iterable[int], *, min_score: float = 0.0,
                  sizes: Mapping[int, tuple[int, int]] | None = None, decode: bool = True
                  ) -> dict[int, list[tuple[Any, float]]]:
    """Read external proposals for ``image_ids``.

    Returns ``{image_id: [(mask, score), ...]}`` for every id in ``image_ids`` (an empty list
    when the file has none for it), each list sorted by descending score (ties keep file order).
    Entries with ``score < min_score`` are skipped. ``sizes`` maps image id -> ``(height, width)``;
    it is required for polygons and, when given, checked against RLE sizes. With
    ``decode=False`` each mask is returned as a compressed COCO RLE (``masks.decode_rle``
    restores it) instead of a boolean array -- every entry is still decoded once to validate it.

    Raises :class:`DataError` naming the file for: a missing/invalid JSON file, a top level that
    is not a list, an entry without ``image_id``/``segmentation``/a finite numeric ``score``, an
    ``image_id`` not in ``image_ids``, or a malformed segmentation.
    """
    path = Path(path)
    data = read_json(path, what="external proposals JSON")
    if not isinstance(data, list):
        raise DataError(f"top level must be a list of results, got {type(data).__name__}", path=path, fix=_FIX)
    ids = [int(i) for i in image_ids]
    wanted = set(ids)
    out: dict[int, list[tuple[Any, float]]] = {i: [] for i in ids}
    for n, entry in enumerate(data):
        where = f"entry {n}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}", path=path, fix=_FIX)
        missing = [k for k in ("image_id", "segmentation", "score") if k not in entry]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}", path=path, fix=_FIX)
        image_id, score, seg = entry["image_id"], entry["score"], entry["segmentation"]
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"{where}: image_id must be an integer, got {image_id!r}", path=path, fix=_FIX)
        if image_id not in wanted:
            raise DataError(f"{where}: unknown image_id {image_id} (not among the {len(wanted)} images "
                            "of this run)", path=path,
                            fix="use proposals made for this dataset / image list")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DataError(f"{where}: score must be a finite number, got {score!r}", path=path, fix=_FIX)
        if score < min_score:
            continue
        if not isinstance(seg, dict):
            _check_polygons(seg, where, path)
        elif not isinstance(seg.get("counts"), (str, list)):
            raise DataError(f"{where}: RLE 'counts' must be a string or a list", path=path, fix=_FIX)
        h, w = _size_of(seg, image_id, sizes, where, path)
        try:
            mask = ann_to_mask(seg, h, w)
        except Exception as exc:  # pycocotools raises bare Exception/ValueError/TypeError
            raise DataError(f"{where}: cannot decode segmentation ({type(exc).__name__}: {exc})",
                            path=path, fix=_FIX) from exc
        if mask.shape != (h, w):
            raise DataError(f"{where}: decoded mask {mask.shape} != size {(h, w)}", path=path, fix=_FIX)
        out[image_id].append((mask if decode else encode_rle(mask), float(score)))
    for i in ids:
        scores = np.asarray([s for _, s in out[i]], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        out[i] = [out[i][k] for k in order]
    return out


def stage_plan(block: Mapping[str, Any], images) -> ProposalPlan:
    """The proposals stage's plan (:func:`trace_edges.proposals.stage_plan`): the file read once
    for the whole image list; an image's cache key adds the file's bytes."""

    block = dict(block)
    if not block.get("path"):
        raise ConfigError("proposals.method is 'external' but proposals.external.path is not set",
                          fix="point proposals.external.path at a COCO results JSON (MaskCut, ProMerge, CutLER, ...)")
    sizes = {rec["id"]: (rec["height"], rec["width"]) for rec in images}
    loaded = load_external(block["path"], list(sizes), sizes=sizes, min_score=block["min_score"])
    ext_sha = sha256_file(block["path"])

    def propose(rec):
        pairs = loaded.get(rec["id"], [])
        return [m for m, _ in pairs], [s for _, s in pairs]

    return ProposalPlan(params=block, propose=propose, key_parts=lambda rec: [rec["sha256"], ext_sha],
                        inputs=[block["path"]])
