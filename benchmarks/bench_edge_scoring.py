#!/usr/bin/env python
"""Benchmark per-image edge scoring: the reference matcher (pyEdgeEval's BSDS correspond_pixels)
vs the fast matcher (``score.edges.matcher``), and whether their numbers differ.

For each embedded coco_mini image, one process, this times ``image_counts`` (NMS when the map is
soft, thresholding, BSDS thinning, matching: the per-image part of ``score-edges``) at 99
thresholds with each matcher, on a soft map (Sobel, then NMS as ``apply_nms: auto`` does) and a
binary map (Canny). The GT is the workflow's (panoptic instance edges, thinned). Wall seconds and
CPU seconds (``time.process_time``; the stable figure on a shared machine) are recorded, with
the number of thresholds whose matched count differs and the largest difference in pixels.
From the per-image counts it also computes ODS / OIS / AP of both matchers over the images
(pyEdgeEval's aggregation, as ``evaluate_edges``).

It also measures, on the reference run itself, what reusing a match would save when a
threshold's thinned map equals the previous matched one (the reference path matches every
distinct ``pred >= t``): each ``correspond_pixels`` call is timed, and
``reference_reuse_cpu_s`` is the reference time minus the calls whose input repeats the
previous call's.

Writes ``results/benchmarks/edge_scoring.json`` (+ ``.csv``, one row per image and map kind).

    nice python benchmarks/bench_edge_scoring.py [--thresholds 99] [--max-images N]
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _measure import machine_info  # noqa: E402

from trace_edges.data.edge_gt import load_edge_gts  # noqa: E402
from trace_edges.data.images import load_rgb  # noqa: E402
from trace_edges.edges import get_edge_source  # noqa: E402
from trace_edges.io import read_json, write_json, write_text  # noqa: E402
from trace_edges.metrics import edges as me  # noqa: E402

KINDS = {"soft": "sobel", "binary": "canny"}  # map kind -> edge source (schema defaults)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT / "data" / "coco_mini"))
    ap.add_argument("--thresholds", type=int, default=99)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "edge_scoring.json"))
    args = ap.parse_args(argv)

    root = Path(args.root)
    ann = root / "annotations"
    meta = read_json(ann / "instances_mini.json", what="COCO instances JSON")
    ids = sorted(im["id"] for im in meta["images"])[: args.max_images]
    gts = {i: me.bsds_thin(g) for i, g in
           load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", image_ids=ids).items()}
    me.image_counts(np.zeros((8, 8)), np.zeros((8, 8), bool), 3)  # imports, outside the timings

    rows, counts = [], {(k, m): [] for k in KINDS for m in me.MATCHERS}
    calls: list[tuple[bool, float]] = []  # (input equals the previous call's, CPU seconds)
    plain, last = me.correspond_pixels, [None]

    def timed_correspond_pixels(binary, gt, max_dist):
        same = last[0] is not None and np.array_equal(last[0], binary)
        c0 = time.process_time()
        out = plain(binary, gt, max_dist)
        calls.append((same, time.process_time() - c0))
        last[0] = binary
        return out

    me.correspond_pixels = timed_correspond_pixels  # the reference path looks it up at call time
    for i in ids:
        rgb = load_rgb(root / "images" / f"{i:012d}.jpg")
        for kind, source in KINDS.items():
            pred = get_edge_source(source).compute(rgb)
            res = {}
            calls.clear()
            last[0] = None
            for m in ("reference", "fast"):
                res[m] = timed(lambda: me.image_counts(pred, gts[i], args.thresholds, apply_nms="auto",
                                                       matcher=m))
                counts[(kind, m)].append(res[m][0])
            repeated = sum(t for same, t in calls if same)
            ref, fast = res["reference"][0][0], res["fast"][0][0]
            diff = fast - ref
            row = {"image_id": i, "kind": kind, "source": source, "height": pred.shape[0],
                   "width": pred.shape[1], "gt_pixels": int(gts[i].sum()),
                   "reference_s": round(res["reference"][1], 4), "fast_s": round(res["fast"][1], 4),
                   "reference_cpu_s": round(res["reference"][2], 4), "fast_cpu_s": round(res["fast"][2], 4),
                   "speedup_cpu": round(res["reference"][2] / max(res["fast"][2], 1e-9), 2),
                   "reference_calls": len(calls), "reference_calls_repeating": sum(c[0] for c in calls),
                   "reference_reuse_cpu_s": round(res["reference"][2] - repeated, 4),
                   "speedup_reuse_cpu": round(res["reference"][2] / max(res["reference"][2] - repeated, 1e-9), 3),
                   "thresholds_differing": int((diff != 0).sum()),
                   "max_abs_count_diff": int(np.abs(diff).max()),
                   "fast_minus_reference_min": int(diff.min()), "fast_minus_reference_max": int(diff.max())}
            rows.append(row)
            print(row, flush=True)

    summary = {}
    for kind in KINDS:
        r = [x for x in rows if x["kind"] == kind]
        metrics = {}
        for m in me.MATCHERS:
            _, _, overall = me._aggregate(ids, counts[(kind, m)], args.thresholds)
            metrics[m] = {k: float(overall[f"{k}_f1" if k != "AP" else k]) for k in ("ODS", "OIS", "AP")}
        speed = [x["speedup_cpu"] for x in r]
        summary[kind] = {
            "source": KINDS[kind], "images": len(r),
            "reference_cpu_s_per_image": statistics.mean(x["reference_cpu_s"] for x in r),
            "fast_cpu_s_per_image": statistics.mean(x["fast_cpu_s"] for x in r),
            "speedup_total_cpu": sum(x["reference_cpu_s"] for x in r) / sum(x["fast_cpu_s"] for x in r),
            "speedup_per_image_min": min(speed), "speedup_per_image_median": statistics.median(speed),
            "speedup_total_cpu_reuse_only": sum(x["reference_cpu_s"] for x in r)
            / sum(x["reference_reuse_cpu_s"] for x in r),
            "image_threshold_pairs": len(r) * args.thresholds,
            "image_threshold_pairs_differing": sum(x["thresholds_differing"] for x in r),
            "max_abs_count_diff": max(x["max_abs_count_diff"] for x in r),
            "metrics": metrics,
            "metric_gaps": {k: abs(metrics["fast"][k] - metrics["reference"][k]) for k in ("ODS", "OIS", "AP")},
        }
        print(kind, summary[kind], flush=True)

    out = Path(args.out)
    write_json(out, {"benchmark": "edge_scoring", "thresholds": args.thresholds, "dataset": str(root.name),
                     "note": "one process per measurement; 2-core machine shared with other jobs: CPU "
                             "seconds are the stable figure, wall seconds vary with the load",
                     "machine": machine_info(), "summary": summary, "rows": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(out.with_suffix(".csv"), buf.getvalue())
    print("wrote", out, out.with_suffix(".csv"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
