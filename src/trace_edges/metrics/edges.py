"""Edge metrics: ODS / OIS / AP (BSDS protocol through pyEdgeEval) and clDice.

Per image and threshold ``t`` (pyEdgeEval's grid: ``n`` uniform values ``k / (n + 1)``), the
prediction ``pred >= t`` is thinned (``pyEdgeEval.preprocess.binary_thin``) and matched one-to-one
to the GT boundary with the BSDS pixel-correspondence matcher (``pyEdgeEval._lib.correspond_pixels``,
tolerance ``max_dist`` x image diagonal), giving matched/total counts for recall and precision.
This is ``pyEdgeEval.common.binary_label.evaluate_boundaries_threshold``; we run the same steps
with three exact changes (all proved equal to pyEdgeEval's own loop in ``tests/test_metrics_edges.py``):

1. **Deterministic matcher.** The BSDS matcher adds random outlier edges to its assignment graph
   and seeds its RNG (``Random::rand``) from the time of day, so repeated evaluations differ by a
   few matched pixels (we measured up to 7 of 2748 on one crop). We reseed it with
   :data:`MATCHER_SEED` before every call (``Random::reseed`` through ctypes), so each call is a
   pure function of its inputs: results are bit-identical across runs, processes and ``threads``.
2. **Incremental thinning.** ``binary_thin`` re-scans the whole image on every pass; we evaluate
   only the pixels whose neighbourhood changed (``trace_edges.metrics.thin``, identical output),
   7x faster on the dense maps a weak model gives.
3. **Shared thresholds.** Thresholds between the same two consecutive distinct values of the map
   give the same binary map, so it is thinned and matched once (Canny's binary maps: once, not
   33/99 times). An empty binary map is not sent to the matcher (it matches nothing).

With ``matcher="fast"`` (``score.edges.matcher``) the CSA solve of the BSDS matcher is replaced by
:mod:`trace_edges.metrics.fast_match`: the same graph (its real edges, its random outlier sample
rebuilt with the library's own ``kOfN`` after the same reseeding, its overlay), whose matched count
is found with max-flow and Dijkstra instead of CSA. The counts equal the reference's (measured on
every image-threshold pair of coco_mini, docs/edges.md §5); a thinned map equal to the previous
threshold's is matched once.

The dataset aggregation is ``pyEdgeEval.common.binary_label.calculate_metrics`` itself, fed the
per-image counts: ODS = F1 of the pooled counts, maximised by pyEdgeEval's interpolation between
neighbouring thresholds; OIS = F1 of the counts pooled at each image's best threshold; AP =
pyEdgeEval's 100-point interpolated average precision.

clDice (Shit et al., CVPR 2021) on the prediction binarised at the dataset's ODS threshold:
``Tprec = |S(P) ∩ V_L| / |S(P)|``, ``Tsens = |S(L) ∩ V_P| / |S(L)|``, ``clDice = 2 Tprec Tsens /
(Tprec + Tsens)``, S = ``skimage.morphology.skeletonize``, ``V_L`` = GT boundary dilated by a disk
of radius ``cldice_tolerance_px``, ``V_P = P``. An image with neither GT nor predicted skeleton
pixels is skipped; one with only one of them scores 0. The dataset value is the mean over images.
"""

from __future__ import annotations

import collections
import functools
import importlib
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk, skeletonize

from trace_edges.errors import DataError
from trace_edges.metrics.bsds_matcher import (  # noqa: F401  (re-exported: the seeded matcher)
    MATCHER_SEED,
    correspond_pixels,
    matcher_is_seeded,
    matcher_kofn,
    reseed_matcher,
)
from trace_edges.metrics.bsds_matcher import import_pyedgeeval as _import_pyedgeeval
from trace_edges.metrics.thin import fast_binary_thin


# --------------------------------------------------------------------------------------------
# per image
# --------------------------------------------------------------------------------------------
def threshold_grid(thresholds: int | Sequence[float]) -> np.ndarray:
    """pyEdgeEval's thresholds: an int n gives ``linspace(1/(n+1), 1 - 1/(n+1), n)``."""
    _import_pyedgeeval()
    from pyEdgeEval.common.utils import check_thresholds

    return check_thresholds(_thresholds_arg(thresholds))


def _thresholds_arg(thresholds: int | Sequence[float]) -> int | list[float]:
    if isinstance(thresholds, (int, np.integer)) and not isinstance(thresholds, bool):
        if thresholds < 1:
            raise ValueError(f"thresholds must be >= 1, got {thresholds}")
        return int(thresholds)
    values = np.asarray(thresholds, dtype=np.float64).ravel()
    if values.size == 0 or np.any(np.diff(values) <= 0) or values[0] < 0 or values[-1] > 1:
        raise ValueError("explicit thresholds must be strictly increasing values in [0, 1]")
    return [float(t) for t in values]


def bsds_thin(binary: np.ndarray) -> np.ndarray:
    """The BSDS protocol's thinning (pyEdgeEval's ``binary_thin``) of a boolean map, computed
    incrementally (:func:`trace_edges.metrics.thin.fast_binary_thin`, identical output)."""
    _import_pyedgeeval()
    return fast_binary_thin(np.asarray(binary, dtype=bool))


def edge_nms(pred: np.ndarray) -> np.ndarray:
    """Structured-edge non-maximum suppression (Dollár's ``edgesNmsMex`` via pyEdgeEval's
    ``fast_nms``, default r=1, s=5, m=1.01), as the HED/PiDiNet evaluation applies before BSDS
    matching; clipped back to [0, 1]."""
    _import_pyedgeeval()
    from pyEdgeEval.preprocess import fast_nms

    return np.clip(fast_nms(np.asarray(pred, dtype=np.float64)), 0.0, 1.0)


def wants_nms(pred: np.ndarray, apply_nms: bool | str) -> bool:
    """``apply_nms`` is True, False or ``"auto"``: NMS for soft maps, none for binary maps (a binary
    map such as Canny's is already a thin edge set; NMS would smear its plateaus)."""
    if apply_nms == "auto":
        return np.unique(pred).size > 2
    return bool(apply_nms)


def _match_counts(binary: np.ndarray, *, gt: np.ndarray, gt_sum: int, max_dist: float) -> tuple[int, int, int, int]:
    """``(count_r, sum_r, count_p, sum_p)`` of one (thinned) binary map, as pyEdgeEval counts them."""
    pred_sum = int(binary.sum())
    if gt_sum == 0:
        return 0, 0, 0, pred_sum  # no GT: every predicted pixel is a false positive
    if pred_sum == 0:
        return 0, gt_sum, 0, 0  # nothing to match
    match1, match2, _, _ = correspond_pixels(binary, gt, max_dist)
    return int((match2 > 0).sum()), gt_sum, int((match1 > 0).sum()), pred_sum


#: the per-image matchers of ``score.edges.matcher``
MATCHERS = ("fast", "reference")
MATCHER_IMPL = {
    "reference": "pyEdgeEval._lib.correspond_pixels (BSDS matchEdgeMaps, outlier_cost 100)",
    "fast": "trace_edges.metrics.fast_match (the BSDS graph with its seeded outlier sample; max-flow + Dijkstra)",
}


def image_counts(pred: np.ndarray, gt: np.ndarray, thresholds: int | Sequence[float], *,
                 max_dist: float = 0.0075, apply_thinning: bool = True, apply_nms: bool | str = False,
                 matcher: str = "reference") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-threshold ``(count_r, sum_r, count_p, sum_p)`` of one image (float64 arrays).

    ``matcher="reference"`` is ``pyEdgeEval.common.binary_label.evaluate_boundaries_threshold``
    with the seeded matcher (see the module docstring). ``matcher="fast"`` computes the same
    thresholds, thinning and totals, with the matched counts of the same BSDS graph counted by
    :mod:`trace_edges.metrics.fast_match` (equal to the reference's, docs/edges.md §5), and it
    matches a thinned map equal to the previous threshold's only once.
    """
    if matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
    thr = threshold_grid(thresholds)
    pred = np.asarray(pred, dtype=np.float64)
    if wants_nms(pred, apply_nms):
        pred = edge_nms(pred)
    gt = np.asarray(gt).astype(bool)
    gt_sum = int(gt.sum())
    # pred >= t depends on t only through how many distinct values of pred lie below t
    levels = np.searchsorted(np.unique(pred), thr, side="left")
    out = np.zeros((4, thr.shape[0]), dtype=np.float64)
    done: dict[int, tuple[int, int, int, int]] = {}
    match = functools.partial(_match_counts, gt=gt, gt_sum=gt_sum, max_dist=max_dist)
    if matcher == "fast":
        match = _FastCounts(gt, gt_sum, max_dist)
    for i, (t, level) in enumerate(zip(thr, levels)):
        level = int(level)
        if level not in done:
            binary = pred >= t
            if apply_thinning:
                binary = bsds_thin(binary)
            done[level] = match(binary)
        out[:, i] = done[level]
    count_r, sum_r, count_p, sum_p = out
    return count_r, sum_r, count_p, sum_p


class _FastCounts:
    """``_match_counts`` with the fast matcher; the GT neighbourhood is built once per image and
    a binary map equal to the previous one reuses its counts."""

    def __init__(self, gt: np.ndarray, gt_sum: int, max_dist: float):
        from trace_edges.metrics.fast_match import GTNeighbourhood

        self.gt_sum = gt_sum
        self.nb = GTNeighbourhood(gt, max_dist) if gt_sum else None
        self.last: tuple[np.ndarray, tuple[int, int, int, int]] | None = None
        self.reference = None
        if self.nb is not None and matcher_kofn() is None:  # cannot rebuild the outlier sample
            warnings.warn("pyEdgeEval's kOfN symbol not found: matcher 'fast' runs the reference "
                          "matcher", RuntimeWarning, stacklevel=2)
            self.reference = functools.partial(_match_counts, gt=gt, gt_sum=gt_sum, max_dist=max_dist)

    def __call__(self, binary: np.ndarray) -> tuple[int, int, int, int]:
        if self.last is not None and np.array_equal(self.last[0], binary):
            return self.last[1]
        pred_sum = int(binary.sum())
        if self.nb is None:
            counts = (0, 0, 0, pred_sum)
        elif pred_sum == 0:
            counts = (0, self.gt_sum, 0, 0)
        elif self.reference is not None:
            counts = self.reference(binary)
        else:
            k = self.nb.match_count(binary)
            counts = (k, self.gt_sum, k, pred_sum)
        self.last = (binary, counts)
        return counts


def _image_task(args: tuple) -> tuple[np.ndarray, ...]:
    pred, gt, thresholds, max_dist, apply_thinning, apply_nms, matcher = args
    return image_counts(pred, gt, thresholds, max_dist=max_dist, apply_thinning=apply_thinning,
                        apply_nms=apply_nms, matcher=matcher)


# --------------------------------------------------------------------------------------------
# clDice
# --------------------------------------------------------------------------------------------
def cldice(pred: np.ndarray, gt: np.ndarray, *, tolerance_px: int = 0) -> dict[str, float | None]:
    """clDice of binary ``pred`` against binary GT boundary ``gt``.

    Returns ``{"clDice", "Tprec", "Tsens"}``; ``clDice`` is None when neither map has skeleton
    pixels (the image is skipped), 0 when only one of them has. ``Tprec`` / ``Tsens`` are None
    where undefined (empty skeleton).
    """
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    s_pred = skeletonize(pred)
    s_gt = skeletonize(gt)
    n_sp, n_sg = int(s_pred.sum()), int(s_gt.sum())
    if n_sp == 0 and n_sg == 0:
        return {"clDice": None, "Tprec": None, "Tsens": None}
    v_gt = ndi.binary_dilation(gt, structure=disk(tolerance_px)) if tolerance_px > 0 else gt
    tprec = float((s_pred & v_gt).sum()) / n_sp if n_sp else None
    tsens = float((s_gt & pred).sum()) / n_sg if n_sg else None
    if tprec is None or tsens is None or tprec + tsens == 0:
        value = 0.0
    else:
        value = 2.0 * tprec * tsens / (tprec + tsens)
    return {"clDice": value, "Tprec": tprec, "Tsens": tsens}


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------
def _aggregate(names: list[Any], counts: list[tuple[np.ndarray, ...]],
               thresholds: int | Sequence[float]):
    """``pyEdgeEval``'s ``calculate_metrics`` on precomputed per-image counts (no progress bar)."""
    _import_pyedgeeval()
    cm = importlib.import_module("pyEdgeEval.common.binary_label.calculate_metrics")
    samples = [{"name": n, "counts": c} for n, c in zip(names, counts)]
    original = cm.track_progress
    cm.track_progress = functools.partial(original, no_bar=True)
    try:
        return cm.calculate_metrics(eval_single=_precomputed, thresholds=_thresholds_arg(thresholds),
                                    samples=samples, nproc=1)
    finally:
        cm.track_progress = original


def _precomputed(sample: Mapping[str, Any]):
    return sample["counts"]


def _sort_ids(ids) -> list[Hashable]:
    return sorted(ids, key=lambda i: (0, int(i), "") if _is_int(i) else (1, 0, str(i)))


def _is_int(x: Any) -> bool:
    try:
        int(x)
        return not isinstance(x, float)
    except (TypeError, ValueError):
        return False


def _f(x: Any) -> float:
    return float(x)


def _load_pair(image_id: Hashable, preds: Any, gts: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(preds[image_id])
    g = np.asarray(gts[image_id]).astype(bool)
    if p.ndim != 2 or p.shape != g.shape:
        raise DataError(f"image {image_id}: edge map shape {p.shape} differs from GT shape {g.shape}",
                        fix="edge maps must be at image resolution")
    if p.dtype == bool:
        p = p.astype(np.float32)
    if not np.issubdtype(p.dtype, np.floating):
        raise DataError(f"image {image_id}: edge map must be float in [0, 1], got {p.dtype}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise DataError(f"image {image_id}: edge map values must be finite and in [0, 1]")
    return p, g


def _ordered_map(fn: Callable, tasks: Iterator, workers: int) -> Iterator:
    """``map(fn, tasks)`` in order; with ``workers > 1`` in a process pool holding at most
    ``2 * workers`` tasks in flight, so inputs are produced (loaded) only as they are needed."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _cldice_task(args: tuple) -> tuple[int, dict[str, float | None]]:
    pred, gt, threshold, tolerance_px, apply_nms = args
    pred = edge_nms(pred) if wants_nms(pred, apply_nms) else pred.astype(np.float64)
    return int(gt.sum()), cldice(pred >= threshold, gt, tolerance_px=tolerance_px)


def evaluate_edges(
    preds: Mapping[Hashable, np.ndarray],
    gts: Mapping[Hashable, np.ndarray],
    *,
    thresholds: int | Sequence[float] = 33,
    max_dist: float = 0.0075,
    apply_thinning: bool = True,
    apply_nms: bool | str = False,
    cldice_tolerance_px: int = 2,
    matcher: str = "reference",
    threads: int = 1,
) -> dict[str, Any]:
    """ODS, OIS, AP and clDice of edge maps ``preds`` (float in [0, 1]) against boolean ``gts``.

    Evaluates every image of ``gts`` (ids sorted); ``preds`` must hold a map of the same shape for
    each (extra predictions are ignored). Both only need ``in`` and ``[id]``, so an
    :class:`~trace_edges.edges.store.EdgeSet` or a lazy mapping works and maps are loaded one at a
    time. ``threads > 1`` runs the per-image work in a process pool; the result is identical to
    ``threads = 1``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if cldice_tolerance_px < 0:
        raise ValueError(f"cldice_tolerance_px must be >= 0, got {cldice_tolerance_px}")
    if not max_dist > 0:
        raise ValueError(f"max_dist must be > 0, got {max_dist}")
    if matcher not in MATCHERS:
        raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
    ids = _sort_ids(gts.keys())
    if not ids:
        raise DataError("no images to evaluate (the edge ground truth is empty)")
    _require_ids(ids, preds, "predicted edge map",
                 fix="rerun the edges stage on the same image list as the ground truth")

    thr_arg = _thresholds_arg(thresholds)
    workers = min(int(threads), len(ids))
    count_tasks = ((*_load_pair(i, preds, gts), thr_arg, float(max_dist), bool(apply_thinning), apply_nms,
                    matcher) for i in ids)
    counts = list(_ordered_map(_image_task, count_tasks, workers))
    return metrics_from_counts(dict(zip(ids, counts)), preds, gts, thresholds=thresholds, max_dist=max_dist,
                               apply_thinning=apply_thinning, apply_nms=apply_nms,
                               cldice_tolerance_px=cldice_tolerance_px, matcher=matcher, threads=threads)


def _require_ids(ids: Sequence[Hashable], have: Mapping[Hashable, Any], what: str, *, fix: str) -> None:
    """DataError naming (up to 10 of) the ``ids`` missing from ``have``."""
    missing = [i for i in ids if i not in have]
    if missing:
        raise DataError(f"no {what} for image id(s) {missing[:10]}"
                        + (f" ... ({len(missing)} in all)" if len(missing) > 10 else ""), fix=fix)


def checked_image_counts(image_id: Hashable, preds: Mapping[Hashable, np.ndarray],
                         gts: Mapping[Hashable, np.ndarray], *, thresholds: int | Sequence[float],
                         max_dist: float, apply_thinning: bool, apply_nms: bool | str,
                         matcher: str) -> tuple[np.ndarray, ...]:
    """:func:`image_counts` of one image of ``preds`` / ``gts``, checked as :func:`evaluate_edges`
    checks it: the per-image half of a sharded evaluation (:func:`metrics_from_counts` pools)."""
    pred, gt = _load_pair(image_id, preds, gts)
    return image_counts(pred, gt, _thresholds_arg(thresholds), max_dist=float(max_dist),
                        apply_thinning=bool(apply_thinning), apply_nms=apply_nms, matcher=matcher)


def metrics_from_counts(
    counts: Mapping[Hashable, tuple[np.ndarray, ...]],
    preds: Mapping[Hashable, np.ndarray],
    gts: Mapping[Hashable, np.ndarray],
    *,
    thresholds: int | Sequence[float],
    max_dist: float,
    apply_thinning: bool,
    apply_nms: bool | str,
    cldice_tolerance_px: int,
    matcher: str,
    threads: int = 1,
) -> dict[str, Any]:
    """:func:`evaluate_edges` from the per-image counts already computed (``image_counts`` of every
    image of ``gts``, with the same protocol): pyEdgeEval's aggregation, then clDice at the ODS
    threshold, which needs every image. A sharded run computes the counts per shard and calls
    this once, in its gather (``trace_edges.stages.score``)."""
    ids = _sort_ids(gts.keys())
    _require_ids(ids, counts, "edge-scoring counts",
                 fix="rerun the score_edges shards on the same image list as the ground truth")
    thr = threshold_grid(thresholds)
    workers = min(int(threads), len(ids))
    sample_results, threshold_results, overall = _aggregate(ids, [counts[i] for i in ids], thresholds)
    ods_t = _f(overall["ODS_threshold"])

    per_image: list[dict[str, Any]] = []
    cl_values: list[float] = []
    cl_tasks = ((*_load_pair(i, preds, gts), ods_t, int(cldice_tolerance_px), apply_nms) for i in ids)
    cl_results = _ordered_map(_cldice_task, cl_tasks, workers)
    for i, s, (gt_pixels, cl) in zip(ids, sample_results, cl_results):
        if cl["clDice"] is not None:
            cl_values.append(cl["clDice"])
        per_image.append({
            "image_id": i,
            "gt_pixels": gt_pixels,
            "OIS_threshold": _f(s["threshold"]),
            "OIS_precision": _f(s["precision"]),
            "OIS_recall": _f(s["recall"]),
            "OIS_f1": _f(s["f1"]),
            "clDice": cl["clDice"],
            "Tprec": cl["Tprec"],
            "Tsens": cl["Tsens"],
        })

    return {
        "ODS": _f(overall["ODS_f1"]),
        "OIS": _f(overall["OIS_f1"]),
        "ODS_threshold": ods_t,
        "ODS_precision": _f(overall["ODS_precision"]),
        "ODS_recall": _f(overall["ODS_recall"]),
        "OIS_precision": _f(overall["OIS_precision"]),
        "OIS_recall": _f(overall["OIS_recall"]),
        "AP": _f(overall["AP"]),
        "clDice": float(np.mean(cl_values)) if cl_values else None,
        "clDice_images": len(cl_values),
        "n_images": len(ids),
        "curve": [{"threshold": _f(r["threshold"]), "precision": _f(r["precision"]),
                   "recall": _f(r["recall"]), "f1": _f(r["f1"])} for r in threshold_results],
        "per_image": per_image,
        "protocol": {
            "thresholds": [float(t) for t in thr],
            "max_dist": float(max_dist),
            "apply_thinning": bool(apply_thinning),
            "apply_nms": apply_nms,
            "cldice_tolerance_px": int(cldice_tolerance_px),
            "matcher": matcher,
            "matcher_impl": (MATCHER_IMPL[matcher]),
            "matcher_seed": MATCHER_SEED if matcher_is_seeded() else None,  # both matchers draw its outlier sample
        },
    }


__all__ = ["MATCHERS", "MATCHER_SEED", "cldice", "correspond_pixels", "evaluate_edges", "image_counts",
           "checked_image_counts", "matcher_is_seeded", "metrics_from_counts", "threshold_grid"]

