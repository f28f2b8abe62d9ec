"""WPS stage: a semantic source + one edge source -> pseudo-panoptic PNGs + JSON (COCO panoptic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trace_edges import provenance
from trace_edges.bgp.panoptic import pseudo_panoptic
from trace_edges.data.manifest import load_manifest, require_ground_truth
from trace_edges.data.images import read_png
from trace_edges.edges.store import EdgeSet
from trace_edges.errors import ConfigError, DataError
from trace_edges.io import read_json, sha256_file, write_json
from trace_edges.panoptic_io import read_panoptic_png, write_panoptic_png
from trace_edges.stages._loop import run_items
from trace_edges.stages.shards import ShardJob, read_shard_files


def oracle_semantics(ids: np.ndarray, segments_info: list[Mapping[str, Any]]) -> np.ndarray:
    """Category-id map from a GT panoptic id map (0 = void): the ORACLE semantic source."""
    sem = np.zeros(ids.shape, dtype=np.int32)
    for seg in segments_info:
        sem[ids == seg["id"]] = int(seg["category_id"])
    return sem


def run_wps_stage(params: Mapping[str, Any], manifest_path: str | Path, edges_dir: str | Path | None,
                  out_json: str | Path, *, shard: ShardJob | None = None,
                  gather: Sequence[str | Path] | None = None) -> int | None:
    """Pseudo-panoptic labels of every image (or of ``shard``'s, writing its shard file only; with
    ``gather``, of none: the shard files name what the shards wrote), then the panoptic JSON."""
    manifest = load_manifest(manifest_path)
    require_ground_truth(manifest, manifest_path, "WPS (the panoptic categories and oracle semantics)")
    out_json = Path(out_json)
    png_dir = out_json.with_suffix("")  # panopticapi convention: <name>.json + <name>/
    gt = read_json(manifest["gt"]["panoptic_json"], what="panoptic GT")
    categories = gt["categories"]
    gt_by_id = {a["image_id"]: a for a in gt["annotations"]}
    edges = EdgeSet(edges_dir) if edges_dir is not None else None
    source = params["semantic_source"]
    if source == "directory" and not params.get("semantic_dir"):
        raise ConfigError("wps.semantic_source is 'directory' but wps.semantic_dir is not set",
                          fix="point wps.semantic_dir at a folder of <image_id>.png category-id maps")
    stage_params = {"wps": dict(params), "edge_source": edges.source if edges else "none"}
    seg_dir = png_dir / "segments"

    def semantic_for(rec):
        if source == "oracle_gt":
            return oracle_semantics(read_panoptic_png(rec["panoptic_png"]), gt_by_id[rec["id"]]["segments_info"])
        path = Path(params["semantic_dir"]) / f"{rec['id']}.png"
        sem = read_png(path, what="semantic PNG")
        if sem.ndim != 2 or sem.shape != (rec["height"], rec["width"]):
            raise DataError(f"semantic map must be a single-channel {rec['width']}x{rec['height']} PNG, "
                            f"got shape {sem.shape}", path=path,
                            fix="write one category-id PNG per image (0 = void)")
        return sem.astype(np.int32)

    def work(rec):
        ids, segments = pseudo_panoptic(semantic_for(rec), categories,
                                        edges.load(rec["id"]) if edges else None, params,
                                        edge_threshold=params["edge_threshold"])
        write_panoptic_png(png_dir / f"{rec['id']:012d}.png", ids)
        write_json(seg_dir / f"{rec['id']}.json", segments, indent=None)

    def key_parts(rec):
        parts = [rec["sha256"], sha256_file(rec["panoptic_png"])]
        if edges:
            parts.append(edges.file_sha256(rec["id"]))
        return parts

    if gather:
        read_shard_files(gather, manifest["images"], stage="wps")
    else:
        images = shard.images(manifest["images"]) if shard else manifest["images"]
        run_items(images, stage="wps", params=stage_params, out_dir=seg_dir,
                  outputs=lambda rec: [png_dir / f"{rec['id']:012d}.png", seg_dir / f"{rec['id']}.json"],
                  work=work, key_parts=key_parts, desc=f"wps:{stage_params['edge_source']}")
        if shard:
            shard.write(stage="wps", images=images, params=stage_params)
            return None
    annotations = [{
        "image_id": rec["id"],
        "file_name": f"{rec['id']:012d}.png",
        "segments_info": read_json(seg_dir / f"{rec['id']}.json"),
    } for rec in manifest["images"]]
    inputs = [manifest_path] + ([edges.manifest_path] if edges else [])
    write_json(out_json.with_suffix(".provenance.json"),
               provenance.record("wps", params=stage_params, inputs=inputs, config={"wps": dict(params)},
                                 extra={"semantic_source": "ORACLE: ground-truth semantics" if source == "oracle_gt"
                                        else params["semantic_dir"]}))
    write_json(out_json, {"annotations": annotations, "categories": categories}, indent=None)
    return len(annotations)
