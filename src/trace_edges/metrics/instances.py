"""Instance-segmentation / detection AP: a thin, checked wrapper over pycocotools ``COCOeval``.

pycocotools is the reference; this module only validates inputs (so a bad file fails with a
:class:`~trace_edges.errors.DataError` instead of an ``AssertionError``, a hang or a silent
mis-score), silences its prints, and returns the 12 summary numbers by name.

Semantics (those of ``COCOeval`` with default parameters):

* IoU thresholds .50:.05:.95, 101 recall points, area ranges all/small/medium/large,
  ``maxDets`` = (1, 10, 100). COCOeval keeps only the ``maxDets`` highest-scoring detections per
  (image, category) pair; in class-agnostic mode that means per image. Detections beyond 100 are
  ignored by COCO, but are still counted in ``num_detections``.
* Detections are sorted by score with a stable sort, so ties keep the order of the results list.
* Crowd GT (``iscrowd=1``) is never a false negative; a detection matched to a crowd region is
  ignored (neither TP nor FP).
* A stat is ``-1.0`` where COCOeval finds no GT for it (e.g. APs when there is no small object).
* Empty results: pycocotools' ``loadRes`` crashes on ``[]``; here COCOeval runs on an empty
  detection set, which is what it would mean: recall 0 and precision 0, so every AP/AR whose
  area range holds GT is ``0.0`` (and ``-1.0`` where the area range holds no GT).
* GT annotation ids must be unique and >= 1: COCOeval stores the matched GT id in its
  match table and reads 0 as "unmatched", so a GT id of 0 silently turns a TP into a FP. GT with
  missing, zero or duplicate ids is re-numbered 1..N (ids do not affect the score otherwise).
"""

from __future__ import annotations

import logging
import math
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from trace_edges.errors import DataError
from trace_edges.io import read_json

logger = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats``, in its order."""

AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}

_RESULTS_FIX = ("write one dict per detection: {image_id, category_id, score, segmentation "
                "(compressed RLE of the image's size, e.g. trace_edges.masks.encode_rle), bbox [x, y, w, h]}")


# ----------------------------------------------------------------------------- GT helpers

def make_class_agnostic(gt: dict) -> dict:
    """Collapse a COCO instances dataset to the single category ``1 = object`` (CutLER's UIS protocol).

    Returns a new dict (``gt`` is not modified): ``categories`` becomes ``[AGNOSTIC_CATEGORY]``,
    every annotation gets ``category_id = 1``, annotation ids are re-numbered 1..N unless they
    already are unique integers >= 1; every other top-level key (images, info, licenses) is kept.
    """
    out = {key: value for key, value in gt.items() if key not in ("categories", "annotations")}
    out["categories"] = [dict(AGNOSTIC_CATEGORY)]
    out["annotations"] = _with_valid_ids([{**ann, "category_id": 1} for ann in gt.get("annotations", [])])
    return out


def _with_valid_ids(anns: list[dict]) -> list[dict]:
    """``anns`` (already copies) with ids re-numbered 1..N if they are not unique ints >= 1."""
    ids = [ann.get("id") for ann in anns]
    valid = all(type(i) is int and i >= 1 for i in ids) and len(set(ids)) == len(ids)
    if not valid:
        logger.warning("GT annotation ids are missing, < 1 or duplicated: re-numbering them 1..%d", len(anns))
        for new_id, ann in enumerate(anns, start=1):
            ann["id"] = new_id
    return anns


def _check_gt(gt: Any, path: Path | None, iou_type: str) -> None:
    fix = "use a COCO instances file (images, annotations, categories), e.g. instances_val2017.json"
    keys = ("images", "annotations", "categories")
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in keys):
        raise DataError("GT is not a COCO instances dataset (needs lists 'images', 'annotations', 'categories')",
                        path=path, fix=fix)
    image_ids = {img.get("id") for img in gt["images"]}
    category_ids = {cat.get("id") for cat in gt["categories"]}
    needed = ("image_id", "category_id", "area", "iscrowd", "segmentation" if iou_type == "segm" else "bbox")
    for ann in gt["annotations"]:
        missing = [key for key in needed if key not in ann]
        if missing:
            raise DataError(f"GT annotation {ann.get('id')} lacks {missing}", path=path, fix=fix)
        if ann["image_id"] not in image_ids or ann["category_id"] not in category_ids:
            raise DataError(f"GT annotation {ann.get('id')} names an unknown image or category "
                            f"(image_id={ann['image_id']}, category_id={ann['category_id']})", path=path, fix=fix)


# ------------------------------------------------------------------------ results checks

def rle_counts_valid(counts: str | bytes, height: int, width: int) -> bool:
    """True iff ``counts`` is a well-formed COCO compressed RLE string covering ``height*width`` pixels.

    Decodes pycocotools' format (LEB128-like, 5 data bits per char ``48..111``, runs after the
    third stored as a difference to the run two before) and checks every run is in
    ``[0, 2**32)`` and the runs add up to the pixel count. pycocotools itself does not check:
    a bad string makes ``mask.iou`` return garbage or loop for a very long time.
    """
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return height * width == 0
    if c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return False  # a char outside the alphabet, or the string ends inside a number
    ends = np.flatnonzero((c & 0x20) == 0)          # last char of each number
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts + 1
    if length.max() > 7:                            # more than 35 bits: not a 32-bit run
        return False
    pos = np.arange(c.size) - np.repeat(starts, length)
    values = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    negative = (c[ends] & 0x10) != 0                # sign bit of the last chunk
    values[negative] -= np.left_shift(1, 5 * length[negative])
    runs = values.copy()                            # undo the delta coding: r[i] += r[i-2] for i > 2
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return bool(runs.min() >= 0 and runs.max() < 2**32 and runs.sum() == height * width)


def _check_results(dets: Any, gt: dict, iou_type: str, path: Path | None, check_categories: bool) -> None:
    if not isinstance(dets, list):
        raise DataError(f"results must be a JSON list of detections, got {type(dets).__name__}",
                        path=path, fix=_RESULTS_FIX)
    if not dets:
        return
    sizes = {img["id"]: (img.get("height"), img.get("width")) for img in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    first = dets[0] if isinstance(dets[0], dict) else {}
    # loadRes picks one code path from the first detection: boxes if it has a non-empty bbox.
    need_bbox = "bbox" in first and first["bbox"] != []
    need_segm = iou_type == "segm" or not need_bbox
    for i, det in enumerate(dets):
        def bad(what: str) -> DataError:
            return DataError(f"detection #{i}: {what}", path=path, fix=_RESULTS_FIX)

        if not isinstance(det, dict):
            raise bad(f"is a {type(det).__name__}, not a dict")
        missing = [key for key in ("image_id", "category_id", "score") if key not in det]
        if missing:
            raise bad(f"missing keys {missing}")
        if det["image_id"] not in sizes:
            raise DataError(f"detection #{i} names image id {det['image_id']!r}, which is not in the GT",
                            path=path, fix="evaluate against the GT split the predictions were made on, "
                                           "or drop detections for images outside it")
        if check_categories and det["category_id"] not in category_ids:
            raise bad(f"category_id {det['category_id']!r} is not a GT category "
                      "(use class_agnostic=True for class-agnostic predictions)")
        if not _is_number(det["score"]):
            raise bad(f"score {det['score']!r} is not a finite number")
        if need_bbox:
            box = det.get("bbox")
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(map(_is_number, box))
                    and box[2] >= 0 and box[3] >= 0):
                raise bad(f"bbox {box!r} is not [x, y, w, h] with w, h >= 0 "
                          "(all detections need a bbox when the first one has one)")
        if need_segm:
            _check_rle(det.get("segmentation"), sizes[det["image_id"]], bad)


def _check_rle(seg: Any, size: tuple[int, int], bad) -> None:
    if not isinstance(seg, dict) or not isinstance(seg.get("counts"), (str, bytes)):
        raise bad("segmentation must be a compressed RLE dict {size: [h, w], counts: str}")
    if list(seg.get("size", [])) != list(size):
        raise bad(f"RLE size {seg.get('size')} differs from the image size [h, w] = {list(size)}")
    if not rle_counts_valid(seg["counts"], *size):
        raise bad("RLE counts are corrupt (bad characters, or runs do not cover h*w pixels)")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------ evaluation

def _load(src: str | Path | Any, what: str) -> tuple[Any, Path | None]:
    if isinstance(src, (str, Path)):
        return read_json(src, what=what), Path(src)
    return src, None


def evaluate_instances(gt: str | Path | dict, results: str | Path | list, *, iou_type: str = "segm",
                       class_agnostic: bool = False) -> dict[str, float]:
    """COCO AP/AR of ``results`` against ``gt``, computed by pycocotools ``COCOeval`` (default params).

    ``gt`` is a COCO instances file or dict, ``results`` a COCO results file or list
    (``image_id``, ``category_id``, ``score``, ``segmentation`` as compressed RLE, ``bbox``).
    ``iou_type`` is ``"segm"`` or ``"bbox"``. With ``class_agnostic`` GT and results are both
    collapsed to one category (:func:`make_class_agnostic`). Inputs are not modified.

    Returns the 12 ``COCOeval.stats`` keyed by :data:`STAT_NAMES`, plus ``num_detections``
    (the length of the results list). Raises :class:`DataError` on malformed input, a result
    for an image not in the GT, or (category-aware) a category not in the GT.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    gt_data, gt_path = _load(gt, "COCO instances GT")
    dets, res_path = _load(results, "COCO results file")
    _check_gt(gt_data, gt_path, iou_type)
    _check_results(dets, gt_data, iou_type, res_path, check_categories=not class_agnostic)

    # Shallow copies: COCOeval writes into annotation dicts (segmentation -> RLE, ignore flags, ids).
    if class_agnostic:
        gt_data = make_class_agnostic(gt_data)
        dets = [{**det, "category_id": 1} for det in dets]
    else:
        gt_data = {**gt_data, "annotations": _with_valid_ids([dict(a) for a in gt_data["annotations"]])}
        dets = [dict(det) for det in dets]

    printed = StringIO()
    with redirect_stdout(printed):
        coco_gt = COCO()
        coco_gt.dataset = gt_data
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else _empty_detections(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.info("COCOeval %s%s, %d detections:\n%s", iou_type, " (class-agnostic)" if class_agnostic else "",
                len(dets), "\n".join(line for line in printed.getvalue().splitlines() if "Average" in line))
    stats: dict[str, float] = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    stats["num_detections"] = len(dets)
    return stats


def _empty_detections(coco_gt: COCO) -> COCO:
    """A results object with no detection (``loadRes([])`` raises IndexError)."""
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]),
                   "categories": [dict(c) for c in coco_gt.dataset["categories"]], "annotations": []}
    res.createIndex()
    return res
