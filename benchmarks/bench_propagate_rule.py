#!/usr/bin/env python
"""Measure the BGP propagation decision rule (``bgp.propagate.rule``: ``irn`` vs ``per_mask``).

On the embedded coco_mini images: multi-scale Felzenszwalb proposals (schema defaults), the
workflow's Sobel and Canny edge sources (``trace_edges.edges.get_edge_source``, schema defaults),
BGP (``run_bgp``, schema defaults except the rule), class-agnostic COCO mask AP / AP50 / AR100 with
the project's pycocotools wrapper (``trace_edges.metrics.instances.evaluate_instances``) against
``instances_mini.json``. The raw proposals are scored too, as the reference row. The stages are
called in memory, with the same library functions the workflow's proposal / edge / BGP stages
call (the images are used as stored, as the prepare stage does). The TRACE teacher / student edge
sources are not included: they need a model run per image.

Writes ``results/benchmarks/propagate_rule.csv`` (one row per rule x edge source).

    PYTHONPATH=src python benchmarks/bench_propagate_rule.py [--max-images 16]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trace_edges.bgp import run_bgp  # noqa: E402
from trace_edges.data.images import load_rgb  # noqa: E402
from trace_edges.edges import get_edge_source  # noqa: E402
from trace_edges.io import read_json  # noqa: E402
from trace_edges.metrics.instances import evaluate_instances  # noqa: E402
from trace_edges.proposals.felzenszwalb import felzenszwalb_proposals  # noqa: E402
from trace_edges.stages._results import results_for_image  # noqa: E402

RULES = ("irn", "per_mask")


def score(gt: dict, results: list[dict]) -> dict[str, float]:
    s = evaluate_instances(gt, results, iou_type="segm", class_agnostic=True)
    return {"AP": 100 * s["AP"], "AP50": 100 * s["AP50"], "AR100": 100 * s["AR100"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT / "data" / "coco_mini"))
    ap.add_argument("--edges", default="sobel,canny")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "propagate_rule.csv"))
    args = ap.parse_args(argv)

    root = Path(args.root)
    gt = read_json(root / "annotations" / "instances_mini.json", what="COCO instances JSON")
    images = sorted(gt["images"], key=lambda im: im["id"])[: args.max_images]
    gt = {**gt, "images": images,
          "annotations": [a for a in gt["annotations"] if a["image_id"] in {im["id"] for im in images}]}
    sources = args.edges.split(",")

    data = []
    for im in images:
        rgb = load_rgb(root / "images" / im["file_name"])
        masks, scores = felzenszwalb_proposals(rgb)
        data.append((im["id"], masks, scores, {s: get_edge_source(s).compute(rgb) for s in sources}))
        print(f"image {im['id']}: {len(masks)} proposals", flush=True)

    rows = []
    base = score(gt, [r for iid, m, s, _ in data for r in results_for_image(iid, m, s)])
    n_base = sum(len(m) for _, m, _, _ in data)
    rows.append({"rule": "none (raw proposals)", "edge_source": "-", **base, "masks": n_base, "seconds": 0.0})
    for source in sources:
        for rule in RULES:
            t0 = time.perf_counter()
            results, n = [], 0
            for iid, masks, scores, edges in data:
                out, sc = run_bgp(masks, scores, edges[source], {"propagate": {"rule": rule}})
                results += results_for_image(iid, out, sc)
                n += len(out)
            dt = time.perf_counter() - t0
            rows.append({"rule": rule, "edge_source": source, **score(gt, results), "masks": n, "seconds": dt})
            print(f"{source} {rule}: AP {rows[-1]['AP']:.2f} AP50 {rows[-1]['AP50']:.2f} "
                  f"AR100 {rows[-1]['AR100']:.2f} ({n} masks, {dt:.1f}s)", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["rule", "edge_source", "AP", "AP50", "AR100", "masks", "seconds",
                                          "images"])
        w.writeheader()
        for r in rows:
            w.writerow({**{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in r.items()},
                        "images": len(images)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
