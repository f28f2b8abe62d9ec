#!/usr/bin/env python
"""Measure the BGP propagation decision rule (``bgp.propagate.rule``: ``irn`` vs ``per_mask``).

On the embedded coco_mini images, with EVERY edge source of the workflow (``edges.sources`` of
``config.yaml``: Sobel, Canny, HED, the ORACLE ``oracle_gt``, the TRACE teacher and student):
multi-scale Felzenszwalb proposals (``proposals.felzenszwalb`` of the config), BGP (``run_bgp``
with the config's ``bgp`` block except the rule), class-agnostic COCO mask AP / AP50 / AR100 with
the project's pycocotools wrapper (``trace_edges.metrics.instances.evaluate_instances``) against
``instances_mini.json``. The raw proposals are scored too, as the reference row.

Edge maps: a source whose maps a workflow run stored under ``<run>/edges/<source>/`` is read from
there (``EdgeSet``: exactly what the workflow's BGP stage reads). Otherwise Sobel, Canny and HED
are computed here with the config's block (HED needs its weights: rule ``fetch_hed`` or
``trace-edges fetch-hed``), the ORACLE from the panoptic GT with the config's ``edge_gt`` options
(the prepare stage's computation). The TRACE sources (staged: a model run per image) only come
from a run; build them first with

    snakemake --cores 2 results/embedded/edges/trace_teacher/manifest.json \\
        results/embedded/edges/trace_student/manifest.json

(on the embedded config the TRACE models are TINY RANDOM stand-ins: machinery, not the paper's).
Writes ``results/benchmarks/propagate_rule.csv`` (one row per rule x edge source).

    PYTHONPATH=src python benchmarks/bench_propagate_rule.py [--run results/embedded] [--max-images 16]
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
from trace_edges.config import deep_merge, load_config  # noqa: E402
from trace_edges.data.edge_gt import PanopticEdgeGT  # noqa: E402
from trace_edges.data.images import load_rgb  # noqa: E402
from trace_edges.edges import display_name, get_edge_source, gt_sources, staged_sources  # noqa: E402
from trace_edges.edges.store import EdgeSet  # noqa: E402
from trace_edges.errors import ConfigError  # noqa: E402
from trace_edges.io import atomic_path, read_json  # noqa: E402
from trace_edges.metrics.instances import evaluate_instances  # noqa: E402
from trace_edges.proposals.felzenszwalb import felzenszwalb_proposals  # noqa: E402
from trace_edges.stages._results import results_for_image  # noqa: E402

RULES = ("irn", "per_mask")
FIELDS = ["rule", "edge_source", "AP", "AP50", "AR100", "masks", "seconds", "images", "maps_from"]


def score(gt: dict, results: list[dict]) -> dict[str, float]:
    s = evaluate_instances(gt, results, iou_type="segm", class_agnostic=True)
    return {"AP": 100 * s["AP"], "AP50": 100 * s["AP50"], "AR100": 100 * s["AR100"]}


def edge_maps(source: str, images: list[dict], rgbs: dict, *, root: Path, run: Path | None,
              cfg: dict) -> tuple[dict, str]:
    """``({image_id: float32[H, W]}, where the maps came from)`` for one edge source."""
    stored = run / "edges" / source if run is not None else None
    if stored is not None and (stored / "manifest.json").is_file():
        es = EdgeSet(stored)
        es.require([im["id"] for im in images])
        return ({im["id"]: es.load(im["id"], shape=(im["height"], im["width"])) for im in images},
                str(stored.relative_to(ROOT) if stored.is_relative_to(ROOT) else stored))
    if source in staged_sources():
        target = f"results/<preset>/edges/{source}/manifest.json" if stored is None else f"{stored}/manifest.json"
        raise ConfigError(f"edge source {source!r} is written by its own workflow stage: no stored maps "
                          f"({'no --run given' if stored is None else f'{stored} has none'})",
                          fix=f"run `snakemake --cores 2 {target}` first and pass --run results/<preset>")
    if source in gt_sources():
        gt = PanopticEdgeGT(root / "annotations" / "panoptic_mini.json", root / "annotations" / "panoptic_mini",
                            image_ids=[im["id"] for im in images], **cfg["edge_gt"])
        return {im["id"]: gt[im["id"]].astype("float32") for im in images}, "computed (panoptic GT, edge_gt)"
    src = get_edge_source(source, cfg["edges"].get(source))
    return {im["id"]: src.compute(rgbs[im["id"]]) for im in images}, "computed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--root", default=None, help="dataset root (default: the config's data.root)")
    ap.add_argument("--run", default=str(ROOT / "results" / "embedded"),
                    help="a workflow run whose stored edge maps are used ('' = compute every source here)")
    ap.add_argument("--edges", default=None, help="comma-separated sources (default: the config's edges.sources)")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "propagate_rule.csv"))
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    root = Path(args.root or cfg["data"]["root"])
    root = root if root.is_absolute() else ROOT / root
    run = Path(args.run) if args.run else None
    # a relative HED weights path is relative to the project root, as in the workflow
    hed = cfg["edges"].get("hed") or {}
    if hed.get("weights") and not Path(hed["weights"]).is_absolute():
        cfg["edges"]["hed"] = {**hed, "weights": str(ROOT / hed["weights"])}
    sources = args.edges.split(",") if args.edges else list(cfg["edges"]["sources"])

    gt = read_json(root / "annotations" / "instances_mini.json", what="COCO instances JSON")
    images = sorted(gt["images"], key=lambda im: im["id"])[: args.max_images]
    ids = {im["id"] for im in images}
    gt = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}

    rgbs, proposals = {}, {}
    for im in images:
        rgbs[im["id"]] = load_rgb(root / "images" / im["file_name"])
        proposals[im["id"]] = felzenszwalb_proposals(rgbs[im["id"]], cfg["proposals"]["felzenszwalb"])
        print(f"image {im['id']}: {len(proposals[im['id']][0])} proposals", flush=True)

    rows = []
    base = score(gt, [r for iid, (m, s) in proposals.items() for r in results_for_image(iid, m, s)])
    rows.append({"rule": "none (raw proposals)", "edge_source": "-", **base,
                 "masks": sum(len(m) for m, _ in proposals.values()), "seconds": 0.0, "maps_from": "-"})
    for source in sources:
        maps, where = edge_maps(source, images, rgbs, root=root, run=run, cfg=cfg)
        print(f"{source}: maps {where}", flush=True)
        for rule in RULES:
            params = deep_merge(cfg["bgp"], {"propagate": {"rule": rule}})
            t0 = time.perf_counter()
            results, n = [], 0
            for iid, (masks, scores) in proposals.items():
                out, sc = run_bgp(masks, scores, maps[iid], params)
                results += results_for_image(iid, out, sc)
                n += len(out)
            dt = time.perf_counter() - t0
            rows.append({"rule": rule, "edge_source": display_name(source), **score(gt, results), "masks": n,
                         "seconds": dt, "maps_from": where})
            print(f"{display_name(source)} {rule}: AP {rows[-1]['AP']:.2f} AP50 {rows[-1]['AP50']:.2f} "
                  f"AR100 {rows[-1]['AR100']:.2f} ({n} masks, {dt:.1f}s)", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in r.items()},
                        "images": len(images)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
