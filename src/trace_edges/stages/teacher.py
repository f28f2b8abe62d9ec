"""Teacher stages, one straight chain: ``trajectory`` (sharded) -> ``iep`` (gather) and ``labels``.

t* is computed once per image, in ``trajectory``; the gather only pools what the shards wrote.
Layout under ``results/<preset>/teacher/<family>/``::

    trajectory/<id>.safetensors  abdiv: float16 [H, W], the ABDiv map at t* (token grid)
    trajectory/<id>.json         image id, steps, token grid, t*, the divergence and its curve
                                 D(SA(τ_{k-1}) ‖ SA(τ_k)) per step (the IEP curve, Eq. 1)
    trajectory/shard_<i>.json    the shard's image ids, the model and provenance (declared output)
    iep.json                     every image's t* and curve, the t* histogram (gather; figures, reports)
    labels/<id>.png              ternary pseudo-labels at the student's training size R×R
                                 (R = teacher.backbone.resolution; 0 interior, 1 edge, 255 ignore)
    labels/manifest.json         (declared output)

and the edge maps at image resolution in ``results/<preset>/edges/trace_teacher/`` (the common
edge-source format), so BGP, WPS and every score use the teacher unchanged. ``labels`` reads the
trajectory shards, not iep.json: the map at t* is already there.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trace_edges import provenance
from trace_edges.backbones.loader import load_configured_backbone
from trace_edges.config import result_block
from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import load_rgb, write_png
from trace_edges.edges.store import edge_map_filename, save_edge_map, write_manifest
from trace_edges.errors import DataError
from trace_edges.io import atomic_path, read_json, sha256_file, write_json
from trace_edges.stages._loop import run_items
from trace_edges.stages.shards import shard_images
from trace_edges.teacher.labels import ternarize
from trace_edges.teacher.trajectory import run_teacher, teacher_edge_map, upsample_to_image

log = logging.getLogger(__name__)

#: teacher keys only the labels stage reads: left out of the trajectory's per-image cache key
#: (everything else in the validated ``teacher`` block is part of it, see config.NON_RESULT_KEYS)
LABEL_ONLY_KEYS = ("label_k",)

LABEL_VALUES = {"interior": 0, "edge": 1, "ignore": 255}


def trajectory_key(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """What the trajectory's per-image results depend on: the whole validated teacher block but
    its non-result keys (fan-out, device) and the labels-only keys, plus the seed."""
    return {"teacher": result_block("teacher", params, drop=LABEL_ONLY_KEYS), "seed": int(seed)}


def nearest_step(steps: Sequence[int], t: int) -> int:
    """The trajectory step closest to ``t`` (ties: the earlier step)."""
    return min(steps, key=lambda s: (abs(int(s) - int(t)), int(s)))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def load_abdiv(path: str | Path) -> np.ndarray:
    """The stored ABDiv map at t* of one image (float16 on disk) as float32 [H, W]."""
    path = Path(path)
    if not path.is_file():
        raise DataError("teacher trajectory artifact not found", path=path,
                        fix="rerun the trajectory stage (snakemake trajectory)")
    try:
        return load_file(str(path))["abdiv"].float().numpy()
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"cannot read safetensors ({exc})", path=path,
                        fix="the file is truncated or corrupt: delete it and rerun the trajectory stage") from exc


def _model_record(backbone: Mapping[str, Any]) -> dict:
    """Model identity without loading it (every image of the shard was reused from cache)."""
    rec = {k: backbone[k] for k in ("family", "model", "revision", "resolution", "dtype")}
    index = Path(backbone["model"]) / "model_index.json"
    if index.is_file():
        rec["model_index_sha256"] = sha256_file(index)
    return rec


def _t_star_rule(fixed_t: int | None) -> str:
    return "IEP (argmax of the divergence curve, Eq. 1)" if fixed_t is None else f"fixed t = {fixed_t}"


def run_trajectory(params: Mapping[str, Any], manifest_path: str | Path, shard: int, out_dir: str | Path, *,
                   seed: int = 0, backbone: Any = None, latency_out: str | Path | None = None,
                   null_prompt: str | Path | None = None) -> dict:
    """Walk the trajectory for the images of one shard: per image t* (the IEP, or the configured
    fixed ``t_star`` snapped to the nearest step), the divergence curve and the ABDiv map at t*.

    ``backbone``: an already loaded teacher backbone (else loaded on the first image to compute,
    without text encoders when ``null_prompt``, the null_prompt stage's embeddings, is given).
    ``latency_out``: also time the whole per-image teacher (2 runs on the shard's first image, the
    model warm) into this JSON, the latency column of Table 4 (wall times: kept out of the
    deterministic artifacts)."""
    manifest = load_manifest(manifest_path)
    out_dir = Path(out_dir)
    images = shard_images(manifest["images"], shard, params["shard_size"])
    key = trajectory_key(params, seed)
    fixed_t = params["t_star"]

    def ensure_backbone():
        nonlocal backbone
        if backbone is None:
            backbone = load_configured_backbone(params["backbone"], null_prompt=null_prompt)
        return backbone

    def work(rec):
        res = run_teacher(ensure_backbone(), load_rgb(rec["file"]), params, seed=seed)
        t_star = res.t_star if fixed_t is None else nearest_step(res.steps, fixed_t)
        _save_tensors(out_dir / f"{rec['id']}.safetensors",
                      {"abdiv": torch.from_numpy(res.abdiv_at(t_star)).to(torch.float16)})
        write_json(out_dir / f"{rec['id']}.json", {
            "image_id": rec["id"], "steps": res.steps, "grid": list(res.grid), "t_star": t_star,
            "t_star_rule": _t_star_rule(fixed_t), "divergence": params["divergence"],
            "divergence_curve": {str(t): v for t, v in res.divergence_curve.items()}, "blocks": res.info["blocks"],
        })

    run_items(images, stage="teacher", params=key, out_dir=out_dir,
              outputs=lambda rec: [out_dir / f"{rec['id']}.safetensors", out_dir / f"{rec['id']}.json"],
              work=work, desc=f"trajectory shard {shard}")
    if latency_out is not None and images:
        _time_teacher(ensure_backbone(), params, images[0], latency_out, seed=seed)
    model = backbone.model_info() if backbone is not None else _model_record(params["backbone"])
    out = {"shard": shard, "images": [rec["id"] for rec in images], "model": model,
           "provenance": provenance.record("teacher", params=key, inputs=[manifest_path], model=model,
                                           config={"teacher": key["teacher"], "seed": int(seed)})}
    write_json(out_dir / f"shard_{shard}.json", out)
    return out


def _time_teacher(backbone: Any, params: Mapping[str, Any], rec: Mapping[str, Any], out: str | Path, *,
                  seed: int) -> None:
    rgb = load_rgb(rec["file"])
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        run_teacher(backbone, rgb, params, seed=seed)
        walls.append(time.perf_counter() - t0)
    write_json(out, {"image": rec["id"], "walls_s": walls, "ms_per_image": 1000.0 * statistics.median(walls),
                     "note": "median of 2 timed run_teacher calls (trajectory + IEP curve + ABDiv), the model "
                             "loaded and warm (the trajectory stage ran it on its images just before)"})


def _shard_entries(shard_files: Sequence[str | Path]):
    """``(shard record, shard dir, image id, per-image record)`` for every image of the shards."""
    for sf in shard_files:
        shard = read_json(sf, what="trajectory shard file")
        for iid in shard["images"]:
            rec = read_json(Path(sf).parent / f"{iid}.json", what="per-image trajectory record")
            yield shard, Path(sf).parent, iid, rec


def run_iep(shard_files: Sequence[str | Path], out_json: str | Path) -> dict:
    """Pool the shards' per-image t* and divergence curves into iep.json (+ the t* histogram).
    Nothing is recomputed: t* was picked once, by the trajectory stage."""
    per_image: dict[str, Any] = {}
    model, rules = None, set()
    for shard, _, iid, rec in _shard_entries(shard_files):
        model = shard["model"]
        rules.add(rec["t_star_rule"])
        per_image[str(iid)] = {k: rec[k] for k in ("t_star", "divergence", "divergence_curve", "grid")}
    hist: dict[str, int] = {}
    for v in per_image.values():
        hist[str(v["t_star"])] = hist.get(str(v["t_star"]), 0) + 1
    out = {"images": per_image, "t_star_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
           "model": model, "t_star_rule": " / ".join(sorted(rules)),
           "provenance": provenance.record("teacher", params={"stage": "iep"}, inputs=list(shard_files))}
    write_json(out_json, out)
    return out


def run_labels(params: Mapping[str, Any], manifest_path: str | Path, shard_files: Sequence[str | Path],
               out_dir: str | Path, edges_dir: str | Path) -> dict:
    """Ternary pseudo-labels at the student's training size and the ``trace_teacher`` edge maps,
    from the ABDiv map at t* each trajectory shard stored."""
    manifest = load_manifest(manifest_path)
    out_dir, edges_dir = Path(out_dir), Path(edges_dir)
    by_id = {str(iid): (d, rec, shard["model"]) for shard, d, iid, rec in _shard_entries(shard_files)}
    size = int(params["backbone"]["resolution"])
    k = float(params["label_k"])
    key = {"teacher": result_block("teacher", params)}

    def entry(rec):
        found = by_id.get(str(rec["id"]))
        if found is None:
            raise DataError(f"image {rec['id']} is in no trajectory shard", path=shard_files[0],
                            fix="rerun the trajectory stage on this manifest")
        return found

    def files(rec):
        return [out_dir / f"{rec['id']}.png", edges_dir / edge_map_filename(rec["id"])]

    def work(rec):
        grid_map = load_abdiv(entry(rec)[0] / f"{rec['id']}.safetensors")
        labels = ternarize(grid_map, k)
        write_png(files(rec)[0], upsample_to_image(labels, size, size, mode="nearest").round().astype(np.uint8))
        save_edge_map(files(rec)[1], teacher_edge_map(grid_map, rec["height"], rec["width"]))

    def key_parts(rec):
        return [rec["sha256"], sha256_file(entry(rec)[0] / f"{rec['id']}.safetensors")]

    run_items(manifest["images"], stage="teacher", params=key, out_dir=out_dir, outputs=files, work=work,
              key_parts=key_parts, desc="labels")
    model = next(iter(by_id.values()))[2] if by_id else None
    prov = provenance.record("teacher", params=key, inputs=[manifest_path, *shard_files], model=model,
                             config={"teacher": key["teacher"]})
    write_manifest(edges_dir, "trace_teacher", {rec["id"]: edge_map_filename(rec["id"]) for rec in manifest["images"]},
                   {**prov, "source": "trace_teacher"})
    out = {"images": {str(rec["id"]): {"t_star": entry(rec)[1]["t_star"], "labels": f"{rec['id']}.png"}
                      for rec in manifest["images"]},
           "size": [size, size], "label_values": LABEL_VALUES, "provenance": prov}
    write_json(out_dir / "manifest.json", out)
    return out


__all__ = ["LABEL_ONLY_KEYS", "LABEL_VALUES", "load_abdiv", "nearest_step", "run_iep", "run_labels",
           "run_trajectory", "shard_images", "trajectory_key"]
