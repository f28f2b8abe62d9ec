"""COCO-format datasets: checksum verification, annotation validation and the prepare stage.

``prepare`` turns a dataset root (the embedded ``data/coco_mini`` or a downloaded COCO 2017 val)
into ``results/<preset>/data/``:

- ``manifest.json``: the image list (id, file, size, sha256) and where every ground truth lives;
- ``instances.json``: the instance GT restricted to the selected images (category-aware);
- ``instances_agnostic.json``: the same, every category collapsed to one "object" (CutLER's
  class-agnostic protocol), annotation ids unique and >= 1;
- ``panoptic.json``: the panoptic GT restricted to the selected images;
- ``edge_gt/<image_id>.png``: the instance-edge ground truth (see ``trace_edges.data.edge_gt``).

Stages read the manifest with :func:`trace_edges.data.manifest.load_manifest` (a module of its own,
so that reading a manifest does not make a stage depend on the prepare code).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trace_edges import provenance
from trace_edges.data.images import image_size, load_rgb, write_png
from trace_edges.data.selection import check_ids
from trace_edges.errors import DataError
from trace_edges.io import read_json, sha256_file, write_json
from trace_edges.logs import progress

log = logging.getLogger(__name__)

_ANN_FIX = ("the annotation file is malformed: restore the original (git checkout data/coco_mini, "
            "or delete it and rerun download_coco for the paper preset)")


# --------------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------------
def verify_checksums(root: str | Path, sums_file: str | Path) -> int:
    """Verify every ``sha256  ./relative/path`` line of ``sums_file``; return the number checked."""
    root = Path(root)
    sums_path = root / sums_file
    if not sums_path.is_file():
        raise DataError("checksum file not found", path=sums_path,
                        fix="restore it (git checkout), or set data.checksums: null to skip verification")
    n = 0
    for lineno, line in enumerate(sums_path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"line {lineno} is not `<sha256>  <path>`", path=sums_path)
        expected, rel = parts[0].lower(), parts[1].lstrip("*")
        target = root / rel
        if not target.is_file():
            raise DataError("listed in SHA256SUMS but missing", path=target,
                            fix="restore the dataset (git checkout data/coco_mini) or re-download it")
        actual = sha256_file(target)
        if actual != expected:
            raise DataError(f"sha256 mismatch (expected {expected[:12]}…, got {actual[:12]}…): "
                            "the file is corrupt or was modified", path=target,
                            fix="restore the original file (git checkout / re-download)")
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# annotation validation
# --------------------------------------------------------------------------------------------
def _require(cond: bool, msg: str, path: Path) -> None:
    if not cond:
        raise DataError(msg, path=path, fix=_ANN_FIX)


def validate_instances(gt: Any, path: Path) -> None:
    """Structural checks of a COCO instances file, naming the first offending entry."""
    _require(isinstance(gt, dict), "top level must be a JSON object", path)
    for key in ("images", "annotations", "categories"):
        _require(isinstance(gt.get(key), list), f"missing or non-list `{key}`", path)
    image_ids = set()
    for i, im in enumerate(gt["images"]):
        _require(isinstance(im, dict) and all(k in im for k in ("id", "file_name", "width", "height")),
                 f"images[{i}] lacks one of id/file_name/width/height", path)
        image_ids.add(im["id"])
    cat_ids = {c.get("id") for c in gt["categories"] if isinstance(c, dict)}
    for i, ann in enumerate(gt["annotations"]):
        _require(isinstance(ann, dict), f"annotations[{i}] is not an object", path)
        missing = [k for k in ("id", "image_id", "category_id", "segmentation", "bbox", "area", "iscrowd")
                   if k not in ann]
        _require(not missing, f"annotations[{i}] (id={ann.get('id')}) lacks {missing}", path)
        _require(ann["image_id"] in image_ids,
                 f"annotations[{i}] (id={ann['id']}) refers to unknown image_id {ann['image_id']}", path)
        _require(ann["category_id"] in cat_ids,
                 f"annotations[{i}] (id={ann['id']}) has unknown category_id {ann['category_id']}", path)
        seg = ann["segmentation"]
        ok = (isinstance(seg, list) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg)) \
            or (isinstance(seg, dict) and "counts" in seg and "size" in seg)
        _require(ok, f"annotations[{i}] (id={ann['id']}) has a malformed segmentation", path)
        _require(isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4,
                 f"annotations[{i}] (id={ann['id']}) has a malformed bbox", path)


def validate_panoptic(gt: Any, path: Path) -> None:
    _require(isinstance(gt, dict), "top level must be a JSON object", path)
    for key in ("images", "annotations", "categories"):
        _require(isinstance(gt.get(key), list), f"missing or non-list `{key}`", path)
    cat_ids = set()
    for i, c in enumerate(gt["categories"]):
        _require(isinstance(c, dict) and "id" in c and "isthing" in c,
                 f"categories[{i}] lacks id/isthing", path)
        cat_ids.add(c["id"])
    for i, ann in enumerate(gt["annotations"]):
        _require(isinstance(ann, dict) and all(k in ann for k in ("image_id", "file_name", "segments_info")),
                 f"annotations[{i}] lacks image_id/file_name/segments_info", path)
        for j, seg in enumerate(ann["segments_info"]):
            _require(isinstance(seg, dict) and all(k in seg for k in ("id", "category_id")),
                     f"annotations[{i}].segments_info[{j}] lacks id/category_id", path)
            _require(seg["category_id"] in cat_ids,
                     f"annotations[{i}].segments_info[{j}] has unknown category_id {seg['category_id']}", path)


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------
def _subset(gt: dict, keep: set[int], *, panoptic: bool) -> dict:
    out = {k: v for k, v in gt.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in gt["images"] if im["id"] in keep]
    out["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    return out


def prepare(data: Mapping[str, Any], edge_gt: Mapping[str, Any], out_dir: str | Path, *,
            check_image_ids: Mapping[str, Sequence[int]] | None = None) -> dict:
    """Run the prepare stage; returns the manifest (also written to ``out_dir/manifest.json``).

    ``check_image_ids`` maps config keys (``report.qualitative_images``, ...) to image ids the run
    needs; one the selected images lack is a :class:`ConfigError`, raised before any image is read
    (the workflow checks them at parse time when the annotation file exists already)."""
    from trace_edges.data.edge_gt import edge_gt_from_panoptic
    from trace_edges.metrics.instances import make_class_agnostic
    from trace_edges.panoptic_io import read_panoptic_png

    root = Path(data["root"])
    out_dir = Path(out_dir)
    if not root.is_dir():
        raise DataError("dataset root not found", path=root,
                        fix="for the embedded default, restore data/coco_mini (git checkout); for the "
                            "paper preset, run `snakemake download_coco` first")
    if data.get("checksums"):
        n = verify_checksums(root, data["checksums"])
        log.info("verified %d checksums from %s", n, root / data["checksums"])

    inst_path = root / data["instances_json"]
    pan_path = root / data["panoptic_json"]
    pan_dir = root / data["panoptic_dir"]
    inst = read_json(inst_path, what="instances annotation file")
    validate_instances(inst, inst_path)
    pan = read_json(pan_path, what="panoptic annotation file")
    validate_panoptic(pan, pan_path)
    if data.get("panoptic_categories"):
        cat_path = root / data["panoptic_categories"]
        cats = read_json(cat_path, what="panoptic categories file")
        if not isinstance(cats, list) or not all(isinstance(c, dict) and "id" in c and "isthing" in c for c in cats):
            raise DataError("expected a list of {id, isthing, ...} categories", path=cat_path, fix=_ANN_FIX)
    else:
        cats = pan["categories"]

    images = sorted(inst["images"], key=lambda im: im["id"])
    pan_by_id = {a["image_id"]: a for a in pan["annotations"]}
    if data.get("max_images"):
        images = images[: data["max_images"]]
    keep = {im["id"] for im in images}
    for key, ids in (check_image_ids or {}).items():
        check_ids(key, ids, [im["id"] for im in images], data)
    missing_pan = sorted(keep - set(pan_by_id))
    if missing_pan:
        raise DataError(f"images {missing_pan[:5]} have no panoptic annotation", path=pan_path, fix=_ANN_FIX)

    edge_dir = out_dir / "edge_gt"
    records = []
    for im in progress(images, desc="prepare"):
        img_path = root / data["images_dir"] / im["file_name"]
        load_rgb(img_path)  # decodes fully: a corrupt/truncated file fails here, named
        w, h = image_size(img_path)
        if (w, h) != (im["width"], im["height"]):
            raise DataError(f"image is {w}x{h} but the annotations say {im['width']}x{im['height']}",
                            path=img_path, fix="the image and annotation file do not belong together")
        pan_ann = pan_by_id[im["id"]]
        png_path = pan_dir / pan_ann["file_name"]
        ids = read_panoptic_png(png_path)
        if ids.shape != (h, w):
            raise DataError(f"panoptic PNG is {ids.shape[1]}x{ids.shape[0]}, image is {w}x{h}",
                            path=png_path, fix=_ANN_FIX)
        known = {s["id"] for s in pan_ann["segments_info"]}
        present = set(np.unique(ids).tolist()) - {0}
        if present - known:
            raise DataError(f"segment ids {sorted(present - known)[:5]} are in the PNG but not in segments_info",
                            path=png_path, fix=_ANN_FIX)
        crowd = [s["id"] for s in pan_ann["segments_info"] if s.get("iscrowd", 0)]
        gt_edges = edge_gt_from_panoptic(ids, crowd_ids=crowd, include_void=edge_gt["include_void"],
                                         include_crowd=edge_gt["include_crowd"], thin=edge_gt["thin"])
        edge_file = edge_dir / f"{im['id']}.png"
        write_png(edge_file, gt_edges.astype(np.uint8) * 255)
        records.append({
            "id": int(im["id"]),
            "file": str(img_path),
            "width": int(w),
            "height": int(h),
            "sha256": sha256_file(img_path),
            "panoptic_png": str(png_path),
            "edge_gt": str(edge_file.relative_to(out_dir)),
        })

    write_json(out_dir / "instances.json", _subset(inst, keep, panoptic=False))
    write_json(out_dir / "instances_agnostic.json", make_class_agnostic(_subset(inst, keep, panoptic=False)))
    pan_sub = _subset(pan, keep, panoptic=True)
    pan_sub["categories"] = cats
    write_json(out_dir / "panoptic.json", pan_sub)

    manifest = {
        "dataset": data["dataset"],
        "root": str(root),
        "num_images": len(records),
        "images": records,
        "gt": {
            "instances": "instances.json",
            "instances_agnostic": "instances_agnostic.json",
            "panoptic_json": "panoptic.json",
            "panoptic_dir": str(pan_dir),
            "edge_gt_dir": "edge_gt",
        },
        "provenance": provenance.record("prepare", params={"data": dict(data), "edge_gt": dict(edge_gt)},
                                        config={"data": dict(data), "edge_gt": dict(edge_gt)},
                                        inputs=[inst_path, pan_path]),
    }
    write_json(out_dir / "manifest.json", manifest)
    log.info("prepared %d images into %s", len(records), out_dir)
    return manifest
