"""BGP stage: base proposals + one edge source -> refined instance masks (COCO results JSON);
sharded: one shard of the images per job, the gather concatenates (trace_edges.stages.shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


from trace_edges import provenance
from trace_edges.bgp import run_bgp
from trace_edges.data.manifest import load_manifest
from trace_edges.edges.store import EdgeSet
from trace_edges.io import read_json, sha256_json, write_json
from trace_edges.masks import decode_rle
from trace_edges.stages._loop import run_items
from trace_edges.stages._results import concat_results, group_by_image, results_for_image
from trace_edges.stages.shards import ShardJob, read_shard_files


def run_bgp_stage(params: Mapping[str, Any], manifest_path: str | Path, proposals_path: str | Path,
                  edges_dir: str | Path, out_path: str | Path, *, shard: ShardJob | None = None,
                  gather: Sequence[str | Path] | None = None) -> int | None:
    manifest = load_manifest(manifest_path)
    out_path = Path(out_path)
    per_image = out_path.parent / "per_image"
    edges = EdgeSet(edges_dir)
    stage_params = {"bgp": dict(params), "edge_source": edges.source}

    if gather:
        read_shard_files(gather, manifest["images"], stage="bgp")
    else:
        proposals = group_by_image(read_json(proposals_path, what="proposals results JSON"))
        images = shard.images(manifest["images"]) if shard else manifest["images"]

        def work(rec):
            entries = proposals.get(rec["id"], [])
            masks = [decode_rle(e["segmentation"]) for e in entries]
            scores = [float(e["score"]) for e in entries]
            if masks:
                masks, scores = run_bgp(masks, scores, edges.load(rec["id"]), params)
            write_json(per_image / f"{rec['id']}.json", results_for_image(rec["id"], masks, scores), indent=None)

        # an image's key holds its own proposals (not the whole file's digest): images added to
        # the run leave the others' refinements valid
        run_items(images, stage="bgp", params=stage_params, out_dir=per_image,
                  outputs=lambda rec: [per_image / f"{rec['id']}.json"], work=work,
                  key_parts=lambda rec: [rec["sha256"], sha256_json(proposals.get(rec["id"], [])),
                                         edges.file_sha256(rec["id"])],
                  desc=f"bgp:{edges.source}")
        if shard:
            shard.write(stage="bgp", images=images, params=stage_params)
            return None
    write_json(out_path.with_suffix(".provenance.json"),
               provenance.record("bgp", params=stage_params, config={"bgp": dict(params)},
                                 inputs=[manifest_path, proposals_path, edges.manifest_path]))
    return concat_results([per_image / f"{rec['id']}.json" for rec in manifest["images"]], out_path)
