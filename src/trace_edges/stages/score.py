"""Scoring stages: UIS (class-agnostic mask AP/AR), WPS (PQ/SQ/RQ), edges (ODS/OIS/clDice).

Each writes one metrics JSON (declared as a DVC metric) with the numbers, what was scored and
its provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest, require_ground_truth
from trace_edges.data.images import read_png
from trace_edges.edges.store import EdgeSet
from trace_edges.io import read_json, write_json


def score_uis(manifest_path: str | Path, results_path: str | Path, out_path: str | Path, *,
              label: str) -> dict:
    from trace_edges.metrics.instances import evaluate_instances

    manifest = load_manifest(manifest_path)
    require_ground_truth(manifest, manifest_path, "UIS scoring")
    gt_path = manifest["gt"]["instances_agnostic"]
    stats = evaluate_instances(gt_path, results_path, iou_type="segm", class_agnostic=True)
    out = {"task": "uis", "edge_source": label, "dataset": manifest["dataset"],
           "num_images": manifest["num_images"], "metrics": stats,
           "provenance": provenance.record("score", params={"task": "uis", "iou_type": "segm",
                                                            "class_agnostic": True},
                                           inputs=[gt_path, results_path])}
    write_json(out_path, out)
    return out


def score_wps(manifest_path: str | Path, pred_json: str | Path, out_path: str | Path, *,
              label: str, threads: int = 1) -> dict:
    from trace_edges.metrics.panoptic import pq_compute

    manifest = load_manifest(manifest_path)
    require_ground_truth(manifest, manifest_path, "WPS scoring")
    pred_json = Path(pred_json)
    res = pq_compute(manifest["gt"]["panoptic_json"], str(pred_json), manifest["gt"]["panoptic_dir"],
                     str(pred_json.with_suffix("")), threads=threads)
    prov = read_json(pred_json.with_suffix(".provenance.json"), what="WPS provenance")
    out = {"task": "wps", "edge_source": label, "dataset": manifest["dataset"],
           "num_images": manifest["num_images"],
           "semantic_source": prov.get("semantic_source"),
           "metrics": {g: res[g] for g in ("All", "Things", "Stuff")},
           "per_class": res["per_class"],
           "provenance": provenance.record("score", params={"task": "wps"},
                                           inputs=[manifest["gt"]["panoptic_json"], pred_json])}
    write_json(out_path, out)
    return out


def score_edges(manifest_path: str | Path, edges_dir: str | Path, out_path: str | Path, *,
                params: Mapping[str, Any], threads: int = 1) -> dict:
    from trace_edges.metrics.edges import evaluate_edges

    manifest = load_manifest(manifest_path)
    require_ground_truth(manifest, manifest_path, "edge scoring")
    edges = EdgeSet(edges_dir)
    preds = {rec["id"]: edges.load(rec["id"]) for rec in manifest["images"]}
    gts = {rec["id"]: read_png(rec["edge_gt"], what="edge GT") > 0 for rec in manifest["images"]}
    res = evaluate_edges(preds, gts, thresholds=params["thresholds"], max_dist=params["max_dist"],
                         apply_thinning=params["apply_thinning"], apply_nms=params["apply_nms"],
                         cldice_tolerance_px=params["cldice_tolerance_px"],
                         matcher=params.get("matcher", "fast"), threads=threads)
    out = {"task": "edges", "edge_source": edges.source, "dataset": manifest["dataset"],
           "num_images": manifest["num_images"], "metrics": {k: v for k, v in res.items() if k != "per_image"},
           "per_image": res.get("per_image", []),
           "provenance": provenance.record("score", params={"task": "edges", **dict(params)},
                                           config={"score": {"edges": dict(params)}},
                                           inputs=[edges.manifest_path])}
    write_json(out_path, out)
    return out
