"""Edge stage: one edge source over every image of a data manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest, require_ground_truth
from trace_edges.edges import get_edge_source
from trace_edges.edges.store import edge_map_filename, save_edge_map, write_manifest
from trace_edges.stages._loop import run_items


def run_edges(source: str, params: Mapping[str, Any], manifest_path: str | Path, out_dir: str | Path) -> dict:
    manifest = load_manifest(manifest_path)
    out_dir = Path(out_dir)
    block = dict(params.get(source, {}))
    detector = get_edge_source(source, block)
    if detector.needs_ground_truth:  # the ORACLE source: its maps are the GT itself
        require_ground_truth(manifest, manifest_path, f"edge source {source!r} (ORACLE)")
    stage_params = detector.describe()

    def out_file(rec):
        return out_dir / edge_map_filename(rec["id"])

    def work(rec):
        save_edge_map(out_file(rec), detector.compute_record(rec))

    run_items(manifest["images"], stage="edges", params=stage_params, out_dir=out_dir,
              outputs=lambda rec: [out_file(rec)], work=work, key_parts=detector.record_key,
              desc=f"edges:{source}")
    images = {str(rec["id"]): out_file(rec).name for rec in manifest["images"]}
    prov = provenance.record("edges", params=stage_params, inputs=[manifest_path],
                             config={"edges": {source: block}})
    return write_manifest(out_dir, source, images, prov)
