"""Proposal stage: base instance proposals (UIS baselines) as one COCO results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trace_edges import provenance
from trace_edges.data.coco import load_manifest
from trace_edges.data.images import load_rgb
from trace_edges.io import sha256_file, write_json
from trace_edges.stages._loop import run_items
from trace_edges.stages._results import concat_results, results_for_image


def run_proposals(params: Mapping[str, Any], manifest_path: str | Path, out_path: str | Path) -> int:
    """Write ``out_path`` (COCO results JSON) and ``<out_path>.provenance.json``; return #proposals."""
    manifest = load_manifest(manifest_path)
    out_path = Path(out_path)
    method = params["method"]
    block = dict(params.get(method, {}))
    stage_params = {"method": method, "params": block}
    per_image = out_path.parent / "per_image"
    inputs = [manifest_path]
    model = None

    if method == "felzenszwalb":
        from trace_edges.proposals.felzenszwalb import felzenszwalb_proposals

        def work(rec):
            masks, scores = felzenszwalb_proposals(load_rgb(rec["file"]), block)
            write_json(per_image / f"{rec['id']}.json", results_for_image(rec["id"], masks, scores), indent=None)

        key_parts = lambda rec: rec["sha256"]  # noqa: E731
    elif method == "maskcut":
        from trace_edges.proposals.maskcut import maskcut_params, maskcut_proposals, model_info

        block = maskcut_params(block)
        stage_params = {"method": method, "params": block}
        model = model_info(block)  # loads the ViT once, checks patch size / resolution
        weights = _model_files(block["model"])
        inputs.extend(weights)
        # the weights' bytes (local tiny model) or the resolved hub commit identify the model
        model_key = [sha256_file(f) for f in weights] or [model["commit"]]

        def work(rec):
            masks, scores = maskcut_proposals(load_rgb(rec["file"]), block)
            write_json(per_image / f"{rec['id']}.json", results_for_image(rec["id"], masks, scores), indent=None)

        key_parts = lambda rec: [rec["sha256"], *model_key]  # noqa: E731
    elif method == "external":
        from trace_edges.errors import ConfigError
        from trace_edges.proposals.external import load_external

        if not block.get("path"):
            raise ConfigError("proposals.method is 'external' but proposals.external.path is not set",
                              fix="point proposals.external.path at a COCO results JSON (MaskCut, ProMerge, CutLER, ...)")
        sizes = {rec["id"]: (rec["height"], rec["width"]) for rec in manifest["images"]}
        loaded = load_external(block["path"], list(sizes), sizes=sizes, min_score=block["min_score"])
        ext_sha = sha256_file(block["path"])
        inputs.append(block["path"])

        def work(rec):
            pairs = loaded.get(rec["id"], [])
            write_json(per_image / f"{rec['id']}.json",
                       results_for_image(rec["id"], [m for m, _ in pairs], [s for _, s in pairs]), indent=None)

        key_parts = lambda rec: [rec["sha256"], ext_sha]  # noqa: E731
    else:  # pragma: no cover - the schema's enum prevents this
        raise ValueError(method)

    run_items(manifest["images"], stage="proposals", params=stage_params, out_dir=per_image,
              outputs=lambda rec: [per_image / f"{rec['id']}.json"], work=work, key_parts=key_parts,
              desc=f"proposals:{method}")
    # the sidecar first, the declared output last: a kill in between leaves no output, so it reruns
    write_json(out_path.with_suffix(".provenance.json"),
               provenance.record("proposals", params=stage_params, inputs=inputs, model=model,
                                 config={"proposals": {"method": method, method: block}}))
    return concat_results([per_image / f"{rec['id']}.json" for rec in manifest["images"]], out_path)


def _model_files(model: str) -> list[Path]:
    """The config and weight files of a local model directory (sorted); [] for a hub id."""
    root = Path(model)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
