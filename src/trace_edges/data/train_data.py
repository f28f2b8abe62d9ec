"""The student's training images (``student.train_data``), separate from the evaluation images.

The paper's students were distilled on other images than they are evaluated on (the authors'
README: ImageNet); training on the evaluation manifest (``transductive: true``) is an explicit
option, never the default. ``prepare_train`` writes ``results/<preset>/train_data/manifest.json``
in the data-manifest format (``"gt": null``), which the teacher stages label like any manifest:

* the images: ``root/images_dir``; ids and file names from ``image_info`` (a COCO JSON with an
  ``images`` list: COCO ids) or, with ``image_info: null``, every image file under it (ids = 1-based
  positions in sorted path order); ``list`` (a text file of file names, one per line) selects
  and orders them, else ascending id; then the first ``max_images``;
* ``checksums`` (``sha256  ./path`` lines) are verified for the selected images; every image is
  decoded (a corrupt file fails here, named) and checked against ``image_info``'s width/height;
* unless transductive, an image whose content (sha256) or id is also in the evaluation manifest
  is refused: the two sets are disjoint by construction;
* ``list_sha256`` = sha256 of the ordered ``[id, sha256]`` pairs: the training list's identity,
  recorded in the student's ``model.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from trace_edges import provenance
from trace_edges.data.images import load_rgb
from trace_edges.data.selection import list_folder_images
from trace_edges.errors import ConfigError, DataError
from trace_edges.io import read_json, sha256_file, write_json, write_text
from trace_edges.logs import progress

log = logging.getLogger(__name__)

_FIX = "point student.train_data at a folder of training images (docs/student.md, Training data)"


def list_sha256(records: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the ordered ``[[id, sha256], ...]`` of the training images (the list's identity)."""
    pairs = [[str(r["id"]), r["sha256"]] for r in records]
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def _read_sums(root: Path, sums_file: str) -> dict[str, str]:
    path = root / sums_file
    if not path.is_file():
        raise DataError("checksum file not found", path=path,
                        fix="restore it, or set student.train_data.checksums: null to skip verification")
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"line {lineno} is not `<sha256>  <path>`", path=path)
        out[Path(parts[1].lstrip("*")).as_posix().removeprefix("./")] = parts[0].lower()
    return out


def candidate_images(td: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{id, name, width?, height?, coco_url?}]`` of the configured images, selected and ordered
    (``list``, else ascending id), before ``max_images``. ``name`` is relative to ``images_dir``."""
    root = Path(td["root"])
    img_dir = root / td["images_dir"]
    if td.get("image_info"):
        info_path = root / td["image_info"]
        info = read_json(info_path, what="training image info (COCO `images` list)")
        if not isinstance(info, dict) or not isinstance(info.get("images"), list):
            raise DataError("not a COCO image-info JSON (no `images` list)", path=info_path, fix=_FIX)
        recs = [{"id": int(im["id"]), "name": im["file_name"], "width": int(im["width"]),
                 "height": int(im["height"]), **({"coco_url": im["coco_url"]} if im.get("coco_url") else {})}
                for im in info["images"]]
    else:
        if not img_dir.is_dir():
            raise DataError("training image folder not found", path=img_dir, fix=_FIX)
        recs = [{"id": i, "name": n} for i, n in enumerate(list_folder_images(img_dir), 1)]
    recs.sort(key=lambda r: r["id"])
    if td.get("list"):
        list_path = root / td["list"]
        if not list_path.is_file():
            raise DataError("training image list not found", path=list_path, fix=_FIX)
        by_name = {r["name"]: r for r in recs}
        names = [ln.strip() for ln in list_path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"{len(missing)} listed images are not in the training set (first: {missing[0]!r})",
                            path=list_path, fix="list file names relative to student.train_data.images_dir")
        recs = [by_name[n] for n in dict.fromkeys(names)]
    return recs


def select_images(td: Mapping[str, Any]) -> list[dict[str, Any]]:
    recs = candidate_images(td)
    if td.get("max_images"):
        recs = recs[: int(td["max_images"])]
    if not recs:
        raise DataError("no training image selected", path=Path(td["root"]) / td["images_dir"], fix=_FIX)
    return recs


def expected_train_images(td: Mapping[str, Any]) -> int:
    """How many training images prepare_train will select (the Snakefile sizes the teacher's shards
    with it): ``max_images`` for a COCO train2017 download (118 287 images: always that many; its
    450 MB image info is not read at parse time), else counted from the image info / list / folder."""
    if td.get("download") == "coco2017_train" and td.get("max_images"):
        return int(td["max_images"])
    return len(select_images(td))


def prepare_train(td: Mapping[str, Any], out_dir: str | Path, *,
                  eval_manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Verify and describe the training images; write ``out_dir/manifest.json``. ``eval_manifest``
    (the evaluation data manifest) is checked to share no image content and no id with them."""
    if td.get("transductive"):
        raise ConfigError("student.train_data.transductive: the student trains on the evaluation manifest; "
                          "there is no separate training set to prepare")
    root = Path(td["root"])
    img_dir = root / td["images_dir"]
    recs = select_images(td)
    sums = _read_sums(root, td["checksums"]) if td.get("checksums") else None
    rel_dir = Path(td["images_dir"]).as_posix().strip("/")
    records = []
    for r in progress(recs, desc="prepare train"):
        path = img_dir / r["name"]
        if not path.is_file():
            raise DataError(f"training image {r['id']} is missing", path=path,
                            fix="restore or download the training images (snakemake download_coco_train "
                                "for COCO train2017)")
        digest = sha256_file(path)
        if sums is not None:
            key = f"{rel_dir}/{r['name']}" if rel_dir not in ("", ".") else r["name"]
            if key not in sums:
                raise DataError(f"{key} is not listed in {td['checksums']}", path=root / td["checksums"],
                                fix="add its sha256 line, or set student.train_data.checksums: null")
            if sums[key] != digest:
                raise DataError(f"sha256 mismatch (expected {sums[key][:12]}…, got {digest[:12]}…)", path=path,
                                fix="restore the original file")
        h, w = load_rgb(path).shape[:2]
        if "width" in r and (int(w), int(h)) != (r["width"], r["height"]):
            raise DataError(f"decoded size {w}x{h} differs from the image info's {r['width']}x{r['height']}",
                            path=path, fix="restore the original file")
        records.append({"id": r["id"], "name": r["name"], "file": str(path), "width": int(w), "height": int(h),
                        "sha256": digest})
    if eval_manifest is not None:
        # ids compare only when both sides carry dataset ids (COCO); folder positions 1..n say nothing
        check_disjoint(records, eval_manifest,
                       ids=bool(td.get("image_info")) and eval_manifest.get("gt") is not None)
    manifest = {
        "dataset": "train_data",
        "root": str(root),
        "num_images": len(records),
        "images": records,
        "gt": None,
        "list_sha256": list_sha256(records),
        "provenance": provenance.record("prepare_train", params={"train_data": dict(td)},
                                        config={"student": {"train_data": dict(td)}}),
    }
    write_json(Path(out_dir) / "manifest.json", manifest)
    log.info("prepared %d training images from %s (list sha256 %s)", len(records), img_dir,
             manifest["list_sha256"][:12])
    return manifest


def check_disjoint(train: Sequence[Mapping[str, Any]], eval_manifest: Mapping[str, Any], *, ids: bool = True) -> None:
    """Refuse a training image whose content (or, with ``ids``, whose id) is also an evaluation image's."""
    ev_hash = {r["sha256"]: r for r in eval_manifest["images"]}
    ev_ids = {str(r["id"]) for r in eval_manifest["images"]}
    fix = ("remove it from the training set, or set student.train_data.transductive: true to train on the "
           "evaluation images on purpose")
    for r in train:
        if r["sha256"] in ev_hash:
            raise DataError(f"training image {r['name']} is evaluation image {ev_hash[r['sha256']]['id']} "
                            "(same content)", path=r["file"], fix=fix)
        if ids and str(r["id"]) in ev_ids:
            raise DataError(f"training image {r['name']} has the id {r['id']} of an evaluation image",
                            path=r["file"], fix=fix)


def download_train_images(td: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """Fetch the selected images (``download: coco2017_train``) from their ``coco_url`` into
    ``root/images_dir`` (an image already there that decodes to its annotated size is kept), write
    ``root/checksums`` (sha256 of each fetched file: COCO publishes none per image, so this records
    what was fetched and ``prepare_train`` verifies it from then on) and the completion record ``out``."""
    from trace_edges.data.download import fetch_file
    from trace_edges.data.images import load_rgb as _load

    if td.get("download") != "coco2017_train":
        raise ConfigError("student.train_data.download is not coco2017_train: nothing to download")
    root = Path(td["root"])
    img_dir = root / td["images_dir"]
    recs = select_images(td)
    done = []
    for r in progress(recs, desc="download train"):
        if "coco_url" not in r:
            raise DataError(f"image {r['id']} has no coco_url in the image info", path=root / td["image_info"],
                            fix="use COCO's instances_train2017.json as student.train_data.image_info")
        path = img_dir / r["name"]
        ok = False
        if path.is_file():
            try:
                h, w = _load(path).shape[:2]
                ok = (int(w), int(h)) == (r["width"], r["height"])
            except DataError:
                ok = False
        if not ok:
            fetch_file(r["coco_url"], path)
            h, w = _load(path).shape[:2]
            if (int(w), int(h)) != (r["width"], r["height"]):
                path.unlink()
                raise DataError(f"{r['coco_url']} decodes to {w}x{h}, the annotation says "
                                f"{r['width']}x{r['height']}", path=path, fix="rerun; if it persists the URL "
                                "serves another file")
        done.append({"id": r["id"], "name": r["name"], "sha256": sha256_file(path)})
    if td.get("checksums"):
        rel = Path(td["images_dir"]).as_posix().strip("/")
        lines = [f"{d['sha256']}  {rel + '/' if rel not in ('', '.') else ''}{d['name']}" for d in done]
        write_text(root / td["checksums"], "\n".join(lines) + "\n")
    record = {"images": done, "list_sha256": list_sha256(done), "source": "COCO train2017 (images.cocodataset.org)",
              "provenance": provenance.record("download_train", params={"train_data": dict(td)})}
    write_json(out, record)
    return record


__all__ = ["candidate_images", "check_disjoint", "download_train_images", "expected_train_images", "list_sha256",
           "prepare_train", "select_images"]
