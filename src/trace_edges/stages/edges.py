"""Edge stage: one edge source over every image of a data manifest (or one shard of it, and the
gather writing the manifest of the maps the shards wrote; trace_edges.stages.shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest, require_ground_truth
from trace_edges.edges import get_edge_source
from trace_edges.edges.store import edge_map_filename, save_edge_map, write_manifest
from trace_edges.stages._loop import run_items
from trace_edges.stages.shards import ShardJob, read_shard_files


def run_edges(source: str, params: Mapping[str, Any], manifest_path: str | Path, out_dir: str | Path, *,
              shard: ShardJob | None = None, gather: Sequence[str | Path] | None = None) -> Path | None:
    """Compute the maps (all images, or ``shard``'s), or with ``gather`` only check the shard files;
    then write ``<out_dir>/manifest.json`` (not for a shard: its shard file instead)."""
    manifest = load_manifest(manifest_path)
    out_dir = Path(out_dir)
    block = dict(params.get(source, {}))

    def out_file(rec):
        return out_dir / edge_map_filename(rec["id"])

    if gather:
        stage_params = read_shard_files(gather, manifest["images"], stage=f"edges:{source}")[0]["params"]
    else:
        detector = get_edge_source(source, block)
        if detector.needs_ground_truth:  # the ORACLE source: its maps are the GT itself
            require_ground_truth(manifest, manifest_path, f"edge source {source!r} (ORACLE)")
        stage_params = detector.describe()
        images = shard.images(manifest["images"]) if shard else manifest["images"]

        def work(rec):
            save_edge_map(out_file(rec), detector.compute_record(rec))

        run_items(images, stage="edges", params=stage_params, out_dir=out_dir,
                  outputs=lambda rec: [out_file(rec)], work=work, key_parts=detector.record_key,
                  desc=f"edges:{source}")
        if shard:
            shard.write(stage=f"edges:{source}", images=images, params=stage_params)
            return None
    images = {str(rec["id"]): out_file(rec).name for rec in manifest["images"]}
    prov = provenance.record("edges", params=stage_params, inputs=[manifest_path, *(gather or [])],
                             config={"edges": {source: block}})
    return write_manifest(out_dir, source, images, prov)
