"""BGP stage: base proposals + one edge source -> refined instance masks (COCO results JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


from trace_edges import provenance
from trace_edges.bgp import run_bgp
from trace_edges.data.manifest import load_manifest
from trace_edges.edges.store import EdgeSet
from trace_edges.io import read_json, sha256_file, write_json
from trace_edges.masks import decode_rle
from trace_edges.stages._loop import run_items
from trace_edges.stages._results import concat_results, group_by_image, results_for_image


def run_bgp_stage(params: Mapping[str, Any], manifest_path: str | Path, proposals_path: str | Path,
                  edges_dir: str | Path, out_path: str | Path) -> int:
    manifest = load_manifest(manifest_path)
    out_path = Path(out_path)
    per_image = out_path.parent / "per_image"
    edges = EdgeSet(edges_dir)
    proposals = group_by_image(read_json(proposals_path, what="proposals results JSON"))
    prop_sha = sha256_file(proposals_path)
    stage_params = {"bgp": dict(params), "edge_source": edges.source}

    def work(rec):
        entries = proposals.get(rec["id"], [])
        masks = [decode_rle(e["segmentation"]) for e in entries]
        scores = [float(e["score"]) for e in entries]
        if masks:
            masks, scores = run_bgp(masks, scores, edges.load(rec["id"]), params)
        write_json(per_image / f"{rec['id']}.json", results_for_image(rec["id"], masks, scores), indent=None)

    run_items(manifest["images"], stage="bgp", params=stage_params, out_dir=per_image,
              outputs=lambda rec: [per_image / f"{rec['id']}.json"], work=work,
              key_parts=lambda rec: [rec["sha256"], prop_sha, edges.file_sha256(rec["id"])],
              desc=f"bgp:{edges.source}")
    write_json(out_path.with_suffix(".provenance.json"),
               provenance.record("bgp", params=stage_params, config={"bgp": dict(params)},
                                 inputs=[manifest_path, proposals_path, edges.manifest_path]))
    return concat_results([per_image / f"{rec['id']}.json" for rec in manifest["images"]], out_path)
