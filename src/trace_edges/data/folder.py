"""Images-only datasets (``data.dataset: images``): a folder of photos, no annotations.

``prepare_images`` writes ``results/<preset>/data/manifest.json`` with ``"gt": null``: every image
under ``data.root`` (recursively; JPEG, PNG, WebP, see :mod:`trace_edges.data.selection` for the
order and the ids) is decoded once with :func:`trace_edges.data.images.load_rgb` (EXIF rotation
applied; grayscale, CMYK, palette and alpha images become RGB; an unreadable file is refused,
named). ``width``/``height`` are the decoded (EXIF-rotated) size, the size of every edge map and
mask of the image. ``name`` is the image's path relative to ``data.root``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from trace_edges import provenance
from trace_edges.data.images import load_rgb
from trace_edges.data.selection import IMAGE_EXTENSIONS, list_folder_images
from trace_edges.errors import DataError
from trace_edges.io import sha256_file, write_json
from trace_edges.logs import progress

log = logging.getLogger(__name__)


def prepare_images(data: Mapping[str, Any], out_dir: str | Path) -> dict:
    """The manifest of an images-only dataset (no ground truth); written to ``out_dir/manifest.json``."""
    root = Path(data["root"])
    out_dir = Path(out_dir)
    if not root.is_dir():
        raise DataError("image folder not found", path=root,
                        fix="point data.root at the folder of your images (data.dataset: images)")
    names = list_folder_images(root)
    if data.get("max_images"):
        names = names[: data["max_images"]]
    if not names:
        raise DataError(f"no image ({', '.join(IMAGE_EXTENSIONS)}) under this folder", path=root,
                        fix="put your JPEG/PNG/WebP files there (subfolders are searched too)")
    records = []
    for i, name in enumerate(progress(names, desc="prepare"), 1):
        path = root / name
        h, w = load_rgb(path).shape[:2]  # decodes fully: a corrupt/truncated file fails here, named
        records.append({"id": i, "name": name, "file": str(path), "width": int(w), "height": int(h),
                        "sha256": sha256_file(path)})
    manifest = {
        "dataset": data["dataset"],
        "root": str(root),
        "num_images": len(records),
        "images": records,
        "gt": None,
        # the images' sha256 are in `images` already: not hashed a second time as provenance inputs
        "provenance": provenance.record("prepare", params={"data": dict(data)}, config={"data": dict(data)}),
    }
    write_json(out_dir / "manifest.json", manifest)
    log.info("prepared %d images (no ground truth) into %s", len(records), out_dir)
    return manifest


__all__ = ["prepare_images"]
