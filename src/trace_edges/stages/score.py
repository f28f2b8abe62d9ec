"""Scoring stages: UIS (class-agnostic mask AP/AR), WPS (PQ/SQ/RQ), edges (ODS/OIS/clDice).

Each writes one metrics JSON (declared as a DVC metric) with the numbers, what was scored and
its provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest, require_ground_truth
from trace_edges.data.images import read_png
from trace_edges.edges.store import EdgeSet
from trace_edges.io import read_json, sha256_file, write_json
from trace_edges.stages._loop import run_items
from trace_edges.stages.shards import ShardJob, read_shard_files


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


class EdgeGT(Mapping):
    """The instance-edge GT of the manifest's images, read one at a time (``gts[id] -> bool[H, W]``)."""

    def __init__(self, images: Sequence[Mapping[str, Any]]):
        self._files = {rec["id"]: rec["edge_gt"] for rec in images}

    def __getitem__(self, image_id: Any) -> np.ndarray:
        return read_png(self._files[image_id], what="edge GT") > 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _protocol(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"thresholds": params["thresholds"], "max_dist": params["max_dist"],
            "apply_thinning": params["apply_thinning"], "apply_nms": params["apply_nms"],
            "matcher": params.get("matcher", "fast")}


def _edge_counts_shard(manifest: Mapping[str, Any], edges: EdgeSet, gts: EdgeGT, out_path: Path,
                       params: Mapping[str, Any], shard: ShardJob) -> None:
    """The per-image BSDS counts of one shard (cached per image), pooled into its shard file."""
    from trace_edges.metrics.edges import checked_image_counts

    count_dir = out_path.with_suffix("") / "counts"
    images = shard.images(manifest["images"])
    stage_params = {"task": "edges", "edge_source": edges.source, **_protocol(params)}

    def work(rec):
        counts = checked_image_counts(rec["id"], edges, gts, **_protocol(params))
        write_json(count_dir / f"{rec['id']}.json", [np.asarray(c).astype(np.int64).tolist() for c in counts],
                   indent=None)

    run_items(images, stage="score", params=stage_params, out_dir=count_dir,
              outputs=lambda rec: [count_dir / f"{rec['id']}.json"], work=work,
              key_parts=lambda rec: [edges.file_sha256(rec["id"]), sha256_file(rec["edge_gt"])],
              desc=f"score-edges:{edges.source}")
    counts = {str(rec["id"]): read_json(count_dir / f"{rec['id']}.json", what="edge-scoring counts")
              for rec in images}
    shard.write(stage="score_edges", images=images, params=stage_params, extra={"counts": counts})


def _pooled_counts(shard_files: Sequence[str | Path], images: Sequence[Mapping[str, Any]]) -> dict[Any, tuple]:
    """Every image's counts from the shard files (checked to cover the manifest), as float64 arrays."""
    pooled = {}
    for shard in read_shard_files(shard_files, images, stage="score_edges"):
        for iid in shard["images"]:
            pooled[iid] = tuple(np.asarray(c, dtype=np.float64) for c in shard["counts"][str(iid)])
    return pooled


def score_edges(manifest_path: str | Path, edges_dir: str | Path, out_path: str | Path, *,
                params: Mapping[str, Any], threads: int = 1, shard: ShardJob | None = None,
                gather: Sequence[str | Path] | None = None) -> dict | None:
    """ODS/OIS/AP/clDice of one edge source. ``shard``: only the per-image counts of one shard
    (its shard file); ``gather``: pool the shards' counts, then the dataset metrics and clDice at
    the ODS threshold (equal to the unsharded evaluation: the counts are the same numbers)."""
    from trace_edges.metrics.edges import evaluate_edges, metrics_from_counts

    manifest = load_manifest(manifest_path)
    require_ground_truth(manifest, manifest_path, "edge scoring")
    edges = EdgeSet(edges_dir)
    gts = EdgeGT(manifest["images"])
    out_path = Path(out_path)
    if shard:
        _edge_counts_shard(manifest, edges, gts, out_path, params, shard)
        return None
    if gather:
        res = metrics_from_counts(_pooled_counts(gather, manifest["images"]), edges, gts, **_protocol(params),
                                  cldice_tolerance_px=params["cldice_tolerance_px"], threads=threads)
    else:
        res = evaluate_edges(edges, gts, **_protocol(params), cldice_tolerance_px=params["cldice_tolerance_px"],
                             threads=threads)
    out = {"task": "edges", "edge_source": edges.source, "dataset": manifest["dataset"],
           "num_images": manifest["num_images"], "metrics": {k: v for k, v in res.items() if k != "per_image"},
           "per_image": res.get("per_image", []),
           "provenance": provenance.record("score", params={"task": "edges", **dict(params)},
                                           config={"score": {"edges": dict(params)}},
                                           inputs=[edges.manifest_path])}
    write_json(out_path, out)
    return out
