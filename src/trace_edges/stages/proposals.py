"""Proposal stage: base instance proposals (UIS baselines) as one COCO results JSON.

The method comes from the registry (:func:`trace_edges.proposals.stage_plan`); this stage only
runs its plan over the manifest's images, caches per image and writes the provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest
from trace_edges.io import write_json
from trace_edges.proposals import stage_plan
from trace_edges.stages._loop import run_items
from trace_edges.stages._results import concat_results, results_for_image


def run_proposals(params: Mapping[str, Any], manifest_path: str | Path, out_path: str | Path) -> int:
    """Write ``out_path`` (COCO results JSON) and ``<out_path>.provenance.json``; return #proposals."""
    manifest = load_manifest(manifest_path)
    out_path = Path(out_path)
    method = params["method"]
    plan = stage_plan(method, params.get(method, {}), manifest["images"])
    stage_params = {"method": method, "params": plan.params}
    per_image = out_path.parent / "per_image"

    def work(rec):
        masks, scores = plan.propose(rec)
        write_json(per_image / f"{rec['id']}.json", results_for_image(rec["id"], masks, scores), indent=None)

    run_items(manifest["images"], stage="proposals", params=stage_params, out_dir=per_image,
              outputs=lambda rec: [per_image / f"{rec['id']}.json"], work=work, key_parts=plan.key_parts,
              desc=f"proposals:{method}")
    # the sidecar first, the declared output last: a kill in between leaves no output, so it reruns
    write_json(out_path.with_suffix(".provenance.json"),
               provenance.record("proposals", params=stage_params, inputs=[manifest_path, *plan.inputs],
                                 model=plan.model, config={"proposals": {"method": method, method: plan.params}}))
    return concat_results([per_image / f"{rec['id']}.json" for rec in manifest["images"]], out_path)
