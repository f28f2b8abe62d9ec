"""Which images a run uses, known before any job runs, and the figure images chosen among them.

Read by the Snakefile at parse time (light: no numpy, no PIL) and by the prepare stage:

* :func:`list_folder_images` -- the images of an images-only dataset (``data.dataset: images``):
  every JPEG/PNG/WebP file under ``data.root``, recursively, sorted by relative POSIX path. Image
  ids are the 1-based positions in that order (``photos/a.jpg`` -> 1, ``photos/b/c.png`` -> 2, ...):
  small integers, as COCO results JSON (``image_id``) and the edge store's file names expect.
  Adding or removing a file renumbers the ones after it; per-image caches key on the image's
  sha256, so a renumbered image is recomputed, never confused with another one.
* :func:`selected_image_ids` -- the ids the prepare stage will select (sorted ids of the
  annotation file, or the folder's ids, cut to ``data.max_images``), or ``None`` when they cannot
  be known yet (COCO 2017 val before its download).
* :func:`figure_images` -- the image ids of the figures (``report.*``), checked against that
  selection: a configured id the run does not have is a :class:`ConfigError` naming the key, the
  missing ids and a few valid ones.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from trace_edges.errors import ConfigError

#: file extensions of an images-only dataset (case-insensitive)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
#: images of the qualitative figure when report.qualitative_images is null
NUM_QUALITATIVE = 4


def has_ground_truth(data: Mapping[str, Any]) -> bool:
    """False for an images-only dataset (no instance or panoptic GT: nothing can be scored)."""
    return data.get("dataset") != "images"


def list_folder_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of every image under ``root`` (recursive, hidden entries skipped), sorted."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def selected_image_ids(data: Mapping[str, Any]) -> list[int] | None:
    """The image ids prepare will select, in manifest order, or None when not knowable yet."""
    root = Path(data["root"])
    if not has_ground_truth(data):
        if not root.is_dir():
            raise ConfigError(f"data.root {str(root)!r} is not a directory (data.dataset: images)",
                              fix="point data.root at the folder holding your images (relative to the project root)")
        ids = list(range(1, len(list_folder_images(root)) + 1))
        if not ids:
            raise ConfigError(f"data.root {str(root)!r} holds no image ({'/'.join(IMAGE_EXTENSIONS)}, searched "
                              f"recursively)", fix="put JPEG/PNG/WebP files in that folder")
    else:
        inst = root / data["instances_json"]
        if not inst.is_file():
            return None
        ids = list(_annotation_ids(str(inst), inst.stat().st_mtime_ns))
    return ids[: data["max_images"]] if data.get("max_images") else ids


@functools.lru_cache(maxsize=4)
def _annotation_ids(path: str, mtime_ns: int) -> tuple[int, ...]:
    """Sorted image ids of a COCO annotation file (read once per parse: COCO 2017 val's is 25 MB)."""
    with open(path, "rb") as fh:
        return tuple(sorted(im["id"] for im in json.load(fh)["images"]))


def _where(data: Mapping[str, Any], n: int) -> str:
    cut = f", the first data.max_images = {data['max_images']}" if data.get("max_images") else ""
    return f"the {n} images of {data['root']} ({data['dataset']}{cut})"


def check_ids(key: str, ids: Sequence[int], available: Sequence[int], data: Mapping[str, Any]) -> None:
    """Refuse ids of ``key`` that the run's images lack (named, with a few valid ids)."""
    have = set(available)
    missing = [i for i in ids if i not in have]
    if missing:
        raise ConfigError(
            f"config {key}: image id(s) {missing} are not among {_where(data, len(available))}; valid ids "
            f"are e.g. {list(available[:6])}",
            fix=f"set {key} to ids of this dataset, or to null (the first images of the dataset)")


def figure_images(config: Mapping[str, Any], available: Sequence[int] | None) -> dict[str, Any]:
    """The figures' image ids: ``{"qualitative": [ids], "bgp": id | None}``.

    ``report.qualitative_images`` / ``report.bgp_image`` given explicitly are checked against
    ``available`` (skipped when it is None: prepare checks them then). When
    ``qualitative_images`` is null (or empty), the curated ids of ``report.curated_images`` for
    this ``data.root`` apply (only those the run has), else the first :data:`NUM_QUALITATIVE`
    images. An empty list means "the command picks the first images of the manifest".
    ``bgp`` None = the first qualitative image (or the manifest's first).
    """
    data, report = config["data"], config["report"]
    explicit = list(report.get("qualitative_images") or [])
    bgp = report.get("bgp_image")
    if available is not None:
        if explicit:
            check_ids("report.qualitative_images", explicit, available, data)
        if bgp is not None:
            check_ids("report.bgp_image", [bgp], available, data)
    if explicit:
        qualitative = explicit
    else:
        curated = {os.path.normpath(k): v for k, v in (report.get("curated_images") or {}).items()}
        chosen = curated.get(os.path.normpath(data["root"])) if has_ground_truth(data) else None
        have = set(available or ())
        qualitative = [i for i in chosen or () if i in have]
        if not qualitative and available is not None:
            qualitative = list(available[:NUM_QUALITATIVE])
    return {"qualitative": qualitative, "bgp": bgp if bgp is not None else (qualitative or [None])[0]}


__all__ = ["IMAGE_EXTENSIONS", "NUM_QUALITATIVE", "check_ids", "figure_images", "has_ground_truth",
           "list_folder_images", "selected_image_ids"]
