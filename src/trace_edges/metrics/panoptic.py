"""Panoptic quality (PQ, SQ, RQ), re-implemented to give the numbers of the COCO panoptic API.

Written from the definition in Kirillov et al., "Panoptic Segmentation" (CVPR 2019), with the
conventions of ``cocodataset/panopticapi`` ``evaluation.pq_compute`` (checked against its output
on ``data/coco_mini/reference_eval``). Per image, with segment ids from the RGB PNGs
(``id = R + 256 G + 256^2 B``, ``0`` = void):

* **match**: a GT segment and a predicted segment match iff they have the same category, the GT
  segment is not crowd, and ``IoU > 0.5`` (strictly; 0.5 exactly is no match). Segments do not
  overlap, so a match is unique.
* **IoU**: ``|g ∩ p| / (|p| + |g| - |g ∩ p| - |p ∩ void|)``: the prediction's pixels on GT void
  do not count in the union. ``|g|`` is the GT JSON ``area`` field, ``|p|`` is counted in the PNG.
* **FN**: every unmatched non-crowd GT segment. Crowd GT is never a FN.
* **FP**: every unmatched predicted segment, except one of which more than half
  (``> 0.5``) lies on GT void plus the crowd region of its own category. As in panopticapi the
  crowd region of a category is one GT crowd segment (the last one listed, COCO has at most one).
* per category, summed over images: ``PQ = Σ IoU / (TP + FP/2 + FN/2)``, ``SQ = Σ IoU / TP``
  (0 if TP = 0), ``RQ = TP / (TP + FP/2 + FN/2)``. All/Things/Stuff average over the categories
  of the GT ``categories`` list with ``TP + FP + FN > 0``; ``n`` is how many. ``per_class`` lists
  every GT category (int id -> pq/sq/rq, zeros when it has no TP/FP/FN), as panopticapi does.

Differences from panopticapi, none of which changes a score it would return: a group with no
category (``n = 0``) gets ``nan`` instead of a ZeroDivisionError; malformed input (duplicate
segment or image ids, segment id 0 in ``segments_info``, PNG sizes differing, missing GT
``area``) raises :class:`DataError` instead of being scored silently; ``threads`` is honoured
and the result does not depend on it (per-image stats are summed in image order).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trace_edges.errors import DataError
from trace_edges.io import read_json
from trace_edges.panoptic_io import read_panoptic_png

logger = logging.getLogger(__name__)

VOID = 0
OFFSET = 256 ** 3  # segment ids fit in 24 bits, so gt * OFFSET + pred is a unique pair key
MATCH_IOU = 0.5
IGNORE_FRACTION = 0.5


@dataclass
class CategoryStats:
    """Sums for one category: matched IoU, true positives, false positives, false negatives."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: CategoryStats) -> CategoryStats:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


# ---------------------------------------------------------------------- the rules, one each

def segment_iou(intersection: int, gt_area: int, pred_area: int, pred_on_void: int) -> float:
    """Panoptic IoU: the prediction's pixels on GT void are left out of the union."""
    return intersection / (pred_area + gt_area - intersection - pred_on_void)


def is_match(iou: float) -> bool:
    """A same-category, non-crowd pair matches iff IoU is strictly above 0.5."""
    return iou > MATCH_IOU


def is_ignored_prediction(pred_area: int, on_void: int, on_same_category_crowd: int) -> bool:
    """An unmatched prediction is not a FP iff more than half of it is on void + its category's crowd."""
    return (on_void + on_same_category_crowd) / pred_area > IGNORE_FRACTION


def pair_intersections(pan_gt: np.ndarray, pan_pred: np.ndarray) -> dict[tuple[int, int], int]:
    """Pixel count of every co-occurring ``(gt_id, pred_id)`` pair (void included), sorted by key."""
    keys, counts = np.unique(pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64),
                             return_counts=True)
    return {(int(k // OFFSET), int(k % OFFSET)): int(n) for k, n in zip(keys, counts)}


# ------------------------------------------------------------------------------- one image

def image_pq_stats(pan_gt: np.ndarray, pan_pred: np.ndarray, gt_segments: Sequence[Mapping[str, Any]],
                   pred_segments: Sequence[Mapping[str, Any]], categories: Mapping[int, Any], *,
                   image_id: Any = None, pred_png: str | Path | None = None) -> dict[int, CategoryStats]:
    """TP/FP/FN/IoU per category for one image (pure: id maps and ``segments_info`` lists in).

    ``gt_segments`` need ``id``, ``category_id``, ``area`` (and ``iscrowd``, default 0);
    ``pred_segments`` need ``id`` and ``category_id`` (their ``area`` is ignored: counted in
    ``pan_pred``). ``image_id`` and ``pred_png`` only name the culprit in errors.
    """
    if pan_gt.shape != pan_pred.shape:
        raise DataError(f"image {image_id}: prediction is {pan_pred.shape[::-1]} (w, h) but GT is "
                        f"{pan_gt.shape[::-1]}", path=pred_png, fix="predict at the GT image resolution")
    pred_category, pred_area = _check_prediction(pan_pred, pred_segments, categories, image_id, pred_png)
    gt_by_id = {int(seg["id"]): seg for seg in gt_segments}
    pairs = pair_intersections(pan_gt, pan_pred)
    on_void = {pred: n for (gt, pred), n in pairs.items() if gt == VOID}

    stats: dict[int, CategoryStats] = defaultdict(CategoryStats)
    matched_gt, matched_pred = set(), set()
    for (gt, pred), intersection in pairs.items():
        seg = gt_by_id.get(gt)
        if seg is None or pred not in pred_category or seg.get("iscrowd", 0) == 1:
            continue
        if seg["category_id"] != pred_category[pred]:
            continue
        iou = segment_iou(intersection, seg["area"], pred_area[pred], on_void.get(pred, 0))
        if is_match(iou):
            stats[seg["category_id"]].tp += 1
            stats[seg["category_id"]].iou += iou
            matched_gt.add(gt)
            matched_pred.add(pred)

    crowd_of_category: dict[int, int] = {}
    for gt, seg in gt_by_id.items():
        if seg.get("iscrowd", 0) == 1:
            crowd_of_category[seg["category_id"]] = gt
        elif gt not in matched_gt:
            stats[seg["category_id"]].fn += 1

    for pred, category in pred_category.items():
        if pred in matched_pred:
            continue
        crowd = crowd_of_category.get(category)
        on_crowd = pairs.get((crowd, pred), 0) if crowd is not None else 0
        if not is_ignored_prediction(pred_area[pred], on_void.get(pred, 0), on_crowd):
            stats[category].fp += 1
    return dict(stats)


def _check_prediction(pan_pred: np.ndarray, segments: Sequence[Mapping[str, Any]], categories: Mapping[int, Any],
                      image_id: Any, png: str | Path | None) -> tuple[dict[int, int], dict[int, int]]:
    """Category and PNG pixel count of every predicted segment, after panopticapi's sanity checks."""
    where = f"image {image_id}"
    category = {}
    for seg in segments:
        sid = int(seg["id"])
        if sid == VOID or sid in category:
            raise DataError(f"{where}: segments_info lists segment id {sid} "
                            f"{'which is reserved for void' if sid == VOID else 'twice'}", path=png,
                            fix="give every predicted segment a unique id > 0 in the JSON and the PNG")
        category[sid] = seg["category_id"]
    ids, counts = np.unique(pan_pred, return_counts=True)
    area = {int(i): int(n) for i, n in zip(ids, counts) if i != VOID}
    for sid in area:
        if sid not in category:
            raise DataError(f"{where}: segment id {sid} is in the PNG but not in segments_info", path=png,
                            fix="add the segment to the prediction JSON, or paint its pixels 0 (void)")
        if category[sid] not in categories:
            raise DataError(f"{where}: segment {sid} has unknown category_id {category[sid]}", path=png,
                            fix="use category ids of the GT 'categories' list")
    absent = sorted(set(category) - set(area))
    if absent:
        raise DataError(f"{where}: segment ids {absent} are in segments_info but not in the PNG", path=png,
                        fix="drop empty segments from the prediction JSON")
    return category, area


# ----------------------------------------------------------------------------- averaging

def pq_average(stats: Mapping[int, CategoryStats], categories: Mapping[int, Mapping[str, Any]],
               isthing: bool | None) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Mean PQ/SQ/RQ over ``categories`` (things, stuff or all if ``isthing`` is None).

    Categories with ``TP + FP + FN = 0`` are skipped in the mean (reported as zeros per class).
    Returns ``({"pq", "sq", "rq", "n"}, per_class)``; the means are ``nan`` when ``n = 0``.
    """
    per_class: dict[int, dict[str, float]] = {}
    sums = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    n = 0
    for cat_id, info in categories.items():
        if isthing is not None and (info.get("isthing") == 1) != isthing:
            continue
        s = stats.get(cat_id, CategoryStats())
        if s.tp + s.fp + s.fn == 0:
            per_class[cat_id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        denominator = s.tp + 0.5 * s.fp + 0.5 * s.fn
        per_class[cat_id] = {"pq": s.iou / denominator, "sq": s.iou / s.tp if s.tp else 0.0,
                             "rq": s.tp / denominator}
        for key in sums:
            sums[key] += per_class[cat_id][key]
    means = {key: value / n if n else math.nan for key, value in sums.items()}
    return {**means, "n": n}, per_class


def pq_from_stats(stats: Mapping[int, CategoryStats], categories: Mapping[int, Mapping[str, Any]]) -> dict:
    """``{"All", "Things", "Stuff", "per_class"}`` as returned by panopticapi ``pq_compute``."""
    results: dict[str, Any] = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = pq_average(stats, categories, isthing)
        if isthing is None:
            results["per_class"] = per_class
        elif results[name]["n"] == 0:
            logger.warning("PQ %s: no category with TP + FP + FN > 0, reporting nan", name)
    return results


# ------------------------------------------------------------------------------ files

def _score_images(jobs: list[tuple[dict, dict]], gt_folder: Path, pred_folder: Path,
                  categories: dict[int, dict]) -> list[dict[int, CategoryStats]]:
    """Per-image stats for a chunk of ``(gt_annotation, pred_annotation)`` pairs (runs in workers)."""
    out = []
    for gt_ann, pred_ann in jobs:
        pred_png = pred_folder / pred_ann["file_name"]
        if not pred_png.is_file():
            raise DataError(f"prediction PNG for image {gt_ann['image_id']} not found", path=pred_png,
                            fix="write one PNG per prediction annotation into the prediction folder "
                                "(pred_folder, default: the prediction JSON path without .json)")
        out.append(image_pq_stats(read_panoptic_png(gt_folder / gt_ann["file_name"]), read_panoptic_png(pred_png),
                                  gt_ann["segments_info"], pred_ann["segments_info"], categories,
                                  image_id=gt_ann["image_id"], pred_png=pred_png))
    return out


def _chunks(items: list, k: int) -> list[list]:
    """``k`` contiguous chunks whose sizes differ by at most one (as ``numpy.array_split``)."""
    size, extra = divmod(len(items), k)
    bounds = np.cumsum([0] + [size + (i < extra) for i in range(k)])
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _folder(json_file: Path, folder: str | Path | None, what: str) -> Path:
    path = Path(folder) if folder is not None else Path(str(json_file).removesuffix(".json"))
    if not path.is_dir():
        raise DataError(f"{what} PNG folder not found", path=path,
                        fix=f"pass the {what} folder explicitly, or put the PNGs in a folder named "
                            "like the JSON file without .json")
    return path


def pq_compute(gt_json_file: str | Path, pred_json_file: str | Path, gt_folder: str | Path | None = None,
               pred_folder: str | Path | None = None, *, threads: int = 1) -> dict:
    """COCO panoptic quality of a prediction (JSON + PNG folder) against GT (JSON + PNG folder).

    Same inputs and output as panopticapi ``evaluation.pq_compute``: folders default to the JSON
    path without ``.json``; every GT annotation needs a prediction annotation with the same
    ``image_id`` (extra predictions are ignored); returns ``{"All"|"Things"|"Stuff": {"pq", "sq",
    "rq", "n"}, "per_class": {category_id: {"pq", "sq", "rq"}}}`` (see module docstring).
    ``threads = 1`` runs in this process; ``threads > 1`` uses a process pool of that many
    workers (at most one per image) over contiguous image chunks, with identical results; the
    pool uses the platform's default start method, as panopticapi and ``metrics.edges`` do.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    gt_json_file, pred_json_file = Path(gt_json_file), Path(pred_json_file)
    gt = read_json(gt_json_file, what="panoptic GT JSON")
    pred = read_json(pred_json_file, what="panoptic prediction JSON")
    for data, path in ((gt, gt_json_file), (pred, pred_json_file)):
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise DataError("not a COCO panoptic JSON (no 'annotations' list)", path=path,
                            fix="use the COCO panoptic format: {annotations: [{image_id, file_name, segments_info}]}")
    gt_folder = _folder(gt_json_file, gt_folder, "GT")
    pred_folder = _folder(pred_json_file, pred_folder, "prediction")
    categories = {cat["id"]: cat for cat in gt.get("categories", [])}
    _check_gt_annotations(gt, categories, gt_json_file)

    pred_by_image: dict[Any, dict] = {}
    for ann in pred["annotations"]:
        if ann["image_id"] in pred_by_image:
            raise DataError(f"two prediction annotations for image {ann['image_id']}", path=pred_json_file,
                            fix="keep one annotation per image")
        pred_by_image[ann["image_id"]] = ann
    jobs = []
    for gt_ann in gt["annotations"]:
        if gt_ann["image_id"] not in pred_by_image:
            raise DataError(f"no prediction for the image with id {gt_ann['image_id']}", path=pred_json_file,
                            fix="add an annotation (and PNG) for every GT image; an all-void PNG with "
                                "empty segments_info if nothing is predicted")
        jobs.append((gt_ann, pred_by_image[gt_ann["image_id"]]))

    workers = min(threads, len(jobs))
    if threads == 1 or workers <= 1:
        per_image = _score_images(jobs, gt_folder, pred_folder, categories)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:  # platform default start method
            futures = [pool.submit(_score_images, chunk, gt_folder, pred_folder, categories)
                       for chunk in _chunks(jobs, workers)]
            per_image = [stats for future in futures for stats in future.result()]

    total: dict[int, CategoryStats] = defaultdict(CategoryStats)
    for image_stats in per_image:  # image order, whatever the number of workers
        for cat_id, s in image_stats.items():
            total[cat_id] += s
    results = pq_from_stats(total, categories)
    logger.info("PQ over %d images (%s vs %s):\n%s", len(jobs), pred_json_file.name, gt_json_file.name,
                format_pq_table(results))
    return results


def _check_gt_annotations(gt: dict, categories: Mapping[int, Any], path: Path) -> None:
    if not categories:
        raise DataError("GT has no 'categories'", path=path, fix="use a COCO panoptic GT JSON with categories")
    for ann in gt["annotations"]:
        for seg in ann.get("segments_info", []):
            if "area" not in seg or seg.get("category_id") not in categories:
                raise DataError(f"image {ann.get('image_id')}: GT segment {seg.get('id')} lacks 'area' "
                                "or has a category not in 'categories'", path=path,
                                fix="restore the original COCO panoptic GT file")


def format_pq_table(results: Mapping[str, Any]) -> str:
    """The PQ/SQ/RQ/N summary table (percent), as panopticapi prints it."""
    lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} {r['n']:5d}")
    return "\n".join(lines)
