"""Proposal stage: base instance proposals (UIS baselines) as one COCO results JSON.

The method comes from the registry (:func:`trace_edges.proposals.stage_plan`); this stage only
runs its plan over the manifest's images (or one shard of them, trace_edges.stages.shards), caches
per image and writes the provenance; the gather concatenates what the shards wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest
from trace_edges.io import write_json
from trace_edges.proposals import stage_plan
from trace_edges.stages._loop import run_items
from trace_edges.stages._results import concat_results, results_for_image
from trace_edges.stages.shards import ShardJob, read_shard_files


def run_proposals(params: Mapping[str, Any], manifest_path: str | Path, out_path: str | Path, *,
                  shard: ShardJob | None = None, gather: Sequence[str | Path] | None = None) -> int | None:
    """Write ``out_path`` (COCO results JSON) and ``<out_path>.provenance.json``; return #proposals.
    ``shard``: compute one shard and write its shard file only; ``gather``: the shard files."""
    manifest = load_manifest(manifest_path)
    out_path = Path(out_path)
    method = params["method"]
    per_image = out_path.parent / "per_image"
    if gather:  # the plan as the shards ran it (building it would load MaskCut's ViT again)
        first = read_shard_files(gather, manifest["images"], stage="proposals")[0]
        stage_params, plan_inputs, model = first["params"], first["inputs"], first["model"]
    else:
        images = shard.images(manifest["images"]) if shard else manifest["images"]
        plan = stage_plan(method, params.get(method, {}), images)
        stage_params = {"method": method, "params": plan.params}
        plan_inputs, model = [str(p) for p in plan.inputs], plan.model

        def work(rec):
            masks, scores = plan.propose(rec)
            write_json(per_image / f"{rec['id']}.json", results_for_image(rec["id"], masks, scores), indent=None)

        run_items(images, stage="proposals", params=stage_params, out_dir=per_image,
                  outputs=lambda rec: [per_image / f"{rec['id']}.json"], work=work, key_parts=plan.key_parts,
                  desc=f"proposals:{method}")
        if shard:
            shard.write(stage="proposals", images=images, params=stage_params,
                        extra={"inputs": plan_inputs, "model": model})
            return None
    # the sidecar first, the declared output last: a kill in between leaves no output, so it reruns
    write_json(out_path.with_suffix(".provenance.json"),
               provenance.record("proposals", params=stage_params, inputs=[manifest_path, *plan_inputs],
                                 model=model, config={"proposals": {"method": method,
                                                                    method: stage_params["params"]}}))
    return concat_results([per_image / f"{rec['id']}.json" for rec in manifest["images"]], out_path)
