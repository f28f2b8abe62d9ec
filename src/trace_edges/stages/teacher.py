"""Teacher stages: ``invert`` (sharded) -> ``iep`` -> ``abdiv_labels`` (+ the ``trace_teacher`` edges).

Layout under ``results/<preset>/teacher/<family>/``::

    invert/<id>.safetensors     abdiv: float16 [steps, H, W] (ABDiv at every step), steps: int64 [steps]
    invert/<id>.json            image id, steps, token grid, KL curve (IEP divergence per step)
    invert/shard_<i>.json       the shard's image ids, the model and provenance (declared output)
    iep.json                    per image t* and its curve; the t* histogram; provenance
    abdiv/<id>.safetensors      abdiv: float16 [H, W], the ABDiv map at t*
    labels/grid/<id>.png        ternary pseudo-labels on the token grid (0 interior, 1 edge, 255 ignore)
    labels/image/<id>.png       the same, nearest-upsampled to the image size
    labels/manifest.json        (declared output)

and the edge map at image resolution in ``results/<preset>/edges/trace_teacher/`` (the common
edge-source format), so BGP, WPS and every score use the teacher unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trace_edges import provenance
from trace_edges.data.coco import load_manifest
from trace_edges.data.images import load_rgb, write_png
from trace_edges.edges.store import edge_map_filename, save_edge_map, write_manifest
from trace_edges.errors import ConfigError, DataError
from trace_edges.io import atomic_path, read_json, sha256_file, write_json
from trace_edges.stages._loop import run_items
from trace_edges.stages.shards import num_shards
from trace_edges.teacher.divergence import iep_step
from trace_edges.teacher.labels import ternarize
from trace_edges.backbones.loader import load_configured_backbone
from trace_edges.teacher.trajectory import run_teacher, teacher_edge_map, upsample_to_image

log = logging.getLogger(__name__)

#: the teacher parameters that change what ``invert`` computes (the rest only affect later stages)
INVERT_KEYS = ("backbone", "trajectory", "stride", "mode", "divergence", "neighbourhood", "chunk", "eps")


def shard_images(images: Sequence[Mapping[str, Any]], shard: int, shard_size: int) -> list[Mapping[str, Any]]:
    n = num_shards(len(images), shard_size)
    if not 0 <= shard < n:
        raise ConfigError(f"shard {shard} does not exist: {len(images)} images in shards of {shard_size} "
                          f"make {n} shards", fix="the Snakefile computes the shard count; rerun snakemake")
    return list(images[shard * shard_size:(shard + 1) * shard_size])


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError("teacher artifact not found", path=path, fix="rerun the invert stage (snakemake invert)")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"cannot read safetensors ({exc})", path=path,
                        fix="the file is truncated or corrupt: delete it and rerun the invert stage") from exc


def run_invert(params: Mapping[str, Any], manifest_path: str | Path, shard: int, out_dir: str | Path, *,
               seed: int = 0, backbone: Any = None) -> dict:
    """Walk the trajectory for the images of one shard; write per-image artifacts + the shard file.

    ``backbone``: an already loaded teacher backbone (else loaded on the first image to compute)."""
    manifest = load_manifest(manifest_path)
    out_dir = Path(out_dir)
    images = shard_images(manifest["images"], shard, params["shard_size"])
    stage_params = {k: params[k] for k in INVERT_KEYS} | {"seed": seed}

    def work(rec):
        nonlocal backbone
        if backbone is None:
            backbone = load_configured_backbone(params["backbone"])
        res = run_teacher(backbone, load_rgb(rec["file"]), params, seed=seed)
        _save_tensors(out_dir / f"{rec['id']}.safetensors",
                      {"abdiv": torch.from_numpy(res.abdiv).to(torch.float16),
                       "steps": torch.tensor(res.steps, dtype=torch.int64)})
        write_json(out_dir / f"{rec['id']}.json", {
            "image_id": rec["id"], "steps": res.steps, "grid": list(res.grid),
            "kl_curve": {str(t): v for t, v in res.kl_curve.items()}, "blocks": res.info["blocks"],
        })

    run_items(images, stage="teacher", params=stage_params, out_dir=out_dir,
              outputs=lambda rec: [out_dir / f"{rec['id']}.safetensors", out_dir / f"{rec['id']}.json"],
              work=work, desc=f"invert shard {shard}")
    model = backbone.model_info() if backbone is not None else _model_record(params["backbone"])
    out = {"shard": shard, "images": [rec["id"] for rec in images], "model": model,
           "provenance": provenance.record("teacher", params=stage_params, inputs=[manifest_path], model=model,
                                           config={"teacher": {k: params[k] for k in INVERT_KEYS}, "seed": seed})}
    write_json(out_dir / f"shard_{shard}.json", out)
    return out


def _model_record(backbone: Mapping[str, Any]) -> dict:
    """Model identity without loading it (every image of the shard was reused from cache)."""
    rec = {k: backbone[k] for k in ("family", "model", "revision", "resolution", "dtype")}
    index = Path(backbone["model"]) / "model_index.json"
    if index.is_file():
        rec["model_index_sha256"] = sha256_file(index)
    return rec


def nearest_step(steps: Sequence[int], t: int) -> int:
    """The trajectory step closest to ``t`` (ties: the earlier step)."""
    return min(steps, key=lambda s: (abs(int(s) - int(t)), int(s)))


def run_iep(shard_files: Sequence[str | Path], out_json: str | Path, *, fixed_t: int | None = None) -> dict:
    """Pick t* per image from the stored IEP curves; write iep.json (with the t* histogram).

    ``fixed_t`` (config ``teacher.t_star``) replaces the IEP by one fixed timestep for every image,
    snapped to the nearest trajectory step: the paper's Table 3 (b) ablation (ABDiv at a purely
    semantic timestep, as DiffSeg / DiffCut read attention)."""
    per_image: dict[str, Any] = {}
    model = None
    for sf in shard_files:
        shard = read_json(sf, what="invert shard file")
        model = shard["model"]
        for iid in shard["images"]:
            rec = read_json(Path(sf).parent / f"{iid}.json", what="per-image IEP curve")
            curve = {int(t): float(v) for t, v in rec["kl_curve"].items()}
            t_star = iep_step(curve, rec["steps"]) if fixed_t is None else nearest_step(rec["steps"], fixed_t)
            per_image[str(iid)] = {"t_star": t_star, "kl_curve": rec["kl_curve"], "grid": rec["grid"]}
    hist: dict[str, int] = {}
    for v in per_image.values():
        hist[str(v["t_star"])] = hist.get(str(v["t_star"]), 0) + 1
    out = {"images": per_image, "t_star_histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
           "model": model,
           "t_star_rule": "IEP (argmax of the KL curve, Eq. 1)" if fixed_t is None else f"fixed t = {fixed_t}",
           "provenance": provenance.record("teacher", params={"stage": "iep", "fixed_t": fixed_t},
                                           inputs=list(shard_files))}
    write_json(out_json, out)
    return out


def run_abdiv_labels(params: Mapping[str, Any], manifest_path: str | Path, iep_json: str | Path,
                     invert_dir: str | Path, out_dir: str | Path, edges_dir: str | Path) -> dict:
    """ABDiv at t*, ternary pseudo-labels, and the ``trace_teacher`` edge maps."""
    manifest = load_manifest(manifest_path)
    iep = read_json(iep_json, what="IEP results")
    invert_dir, out_dir, edges_dir = Path(invert_dir), Path(out_dir), Path(edges_dir)
    k = float(params["label_k"])
    stage_params = {k_: params[k_] for k_ in INVERT_KEYS} | {"label_k": k}

    def files(rec):
        return [out_dir / "abdiv" / f"{rec['id']}.safetensors", out_dir / "labels/grid" / f"{rec['id']}.png",
                out_dir / "labels/image" / f"{rec['id']}.png", edges_dir / edge_map_filename(rec["id"])]

    def work(rec):
        entry = iep["images"].get(str(rec["id"]))
        if entry is None:
            raise DataError(f"image {rec['id']} has no IEP entry", path=iep_json, fix="rerun the iep stage")
        t = _load_tensors(invert_dir / f"{rec['id']}.safetensors")
        steps = t["steps"].tolist()
        grid_map = t["abdiv"][steps.index(entry["t_star"])].float().numpy()
        _save_tensors(files(rec)[0], {"abdiv": torch.from_numpy(grid_map).to(torch.float16)})
        labels = ternarize(grid_map, k)
        write_png(files(rec)[1], labels)
        write_png(files(rec)[2], upsample_to_image(labels, rec["height"], rec["width"], mode="nearest")
                  .round().astype(np.uint8))
        save_edge_map(files(rec)[3], teacher_edge_map(grid_map, rec["height"], rec["width"]))

    def key_parts(rec):
        return [rec["sha256"], sha256_file(invert_dir / f"{rec['id']}.safetensors"),
                iep["images"].get(str(rec["id"]), {}).get("t_star")]

    run_items(manifest["images"], stage="teacher", params=stage_params, out_dir=out_dir / "labels",
              outputs=files, work=work, key_parts=key_parts, desc="abdiv_labels")
    prov = provenance.record("teacher", params=stage_params, inputs=[manifest_path, iep_json], model=iep["model"],
                             config={"teacher": {**{k_: params[k_] for k_ in INVERT_KEYS}, "label_k": k}})
    write_manifest(edges_dir, "trace_teacher", {rec["id"]: edge_map_filename(rec["id"]) for rec in manifest["images"]},
                   {**prov, "source": "trace_teacher"})
    out = {"images": {str(rec["id"]): {"t_star": iep["images"][str(rec["id"])]["t_star"],
                                       "abdiv": f"abdiv/{rec['id']}.safetensors",
                                       "labels_grid": f"labels/grid/{rec['id']}.png",
                                       "labels_image": f"labels/image/{rec['id']}.png"}
                      for rec in manifest["images"]},
           "label_values": {"interior": 0, "edge": 1, "ignore": 255},
           "provenance": prov}
    write_json(out_dir / "labels" / "manifest.json", out)
    return out


def run_teacher_cell(params: Mapping[str, Any], manifest_path: str | Path, out_dir: str | Path,
                     edges_dir: str | Path, *, seed: int = 0) -> dict:
    """The whole teacher (invert -> iep -> abdiv_labels) on a small image set, in one process.

    Used by the ablation grids (rules/ablations.smk): every cell is a handful of images, so one job
    (one model load) per cell instead of three. Writes the same artifacts as the three stages, in
    ``out_dir/{invert, iep.json, abdiv, labels}`` and the edge maps in ``edges_dir``, plus
    ``out_dir/latency.json`` (teacher wall seconds per image: the latency column of Table 4; kept
    out of the other artifacts, which are deterministic).
    """
    import time

    import statistics

    out_dir = Path(out_dir)
    manifest = load_manifest(manifest_path)
    if not manifest["images"]:
        raise DataError("the manifest lists no images", path=manifest_path, fix="check data.max_images")
    backbone = load_configured_backbone(params["backbone"])
    one_shard = dict(params, shard_size=len(manifest["images"]))
    run_invert(one_shard, manifest_path, 0, out_dir / "invert", seed=seed, backbone=backbone)
    iep = run_iep([out_dir / "invert" / "shard_0.json"], out_dir / "iep.json", fixed_t=params.get("t_star"))
    out = run_abdiv_labels(params, manifest_path, out_dir / "iep.json", out_dir / "invert", out_dir, edges_dir)
    # latency (Table 4): the whole per-image teacher on the first image; the model is loaded and
    # warm (invert ran it on every image just before)
    rgb = load_rgb(manifest["images"][0]["file"])
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        run_teacher(backbone, rgb, params, seed=seed)
        walls.append(time.perf_counter() - t0)
    write_json(out_dir / "latency.json", {"image": manifest["images"][0]["id"], "walls_s": walls,
                                          "ms_per_image": 1000.0 * statistics.median(walls),
                                          "note": "median of 2 timed run_teacher calls (trajectory + IEP curve "
                                                  "+ ABDiv) right after the invert stage ran on every image"})
    return {"iep": iep, "labels": out}
