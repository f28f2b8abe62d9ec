"""The one on-disk format for edge maps (``png16-unit``).

A directory of edge maps of one source::

    <dir>/manifest.json       {"source": "sobel", "format": "png16-unit",
                               "images": {"397133": "000000397133.png", ...},
                               "provenance": {...}}
    <dir>/000000397133.png    16-bit grayscale PNG, value = round(E * 65535)

``E`` is the map in [0, 1]; it is stored with 16-bit precision, so a round trip changes a value
by at most 0.5 / 65535 (7.6e-6). PNG is lossless, viewable in any image viewer and keeps every map
a separate file, so the edges stage can write image by image (atomically) and resume. Every file
is written atomically; the manifest is written last, so a directory with a manifest is complete.

Every consumer (BGP, WPS, scoring, report) reads maps only through :class:`EdgeSet`; no code
special-cases a source.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import numpy as np

from trace_edges.data.images import read_png, write_png
from trace_edges.errors import DataError
from trace_edges.io import read_json, write_json

FORMAT = "png16-unit"
MANIFEST = "manifest.json"
SCALE = 65535.0
#: maximum round-trip error of one value
MAX_ROUNDTRIP_ERROR = 0.5 / SCALE


def edge_map_filename(image_id: int | str) -> str:
    """File name of an image's map: COCO-style 12-digit zero-padded id for integer ids."""
    try:
        return f"{int(image_id):012d}.png"
    except (TypeError, ValueError):
        return f"{image_id}.png"


def encode_edge_map(edge: np.ndarray) -> np.ndarray:
    """``uint16`` array round(E * 65535) of a float map in [0, 1] (validated)."""
    edge = np.asarray(edge)
    if edge.ndim != 2 or 0 in edge.shape:
        raise ValueError(f"edge map must be a 2-D [H, W] array, got shape {edge.shape}")
    if edge.dtype == bool:
        edge = edge.astype(np.float64)
    if not np.issubdtype(edge.dtype, np.floating):
        raise ValueError(f"edge map must be float (values in [0, 1]), got dtype {edge.dtype}")
    edge = edge.astype(np.float64)
    if not np.all(np.isfinite(edge)):
        raise ValueError("edge map contains NaN or inf")
    lo, hi = float(edge.min()), float(edge.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"edge map values must lie in [0, 1], got [{lo}, {hi}]")
    return np.rint(np.clip(edge, 0.0, 1.0) * SCALE).astype(np.uint16)


def save_edge_map(path: str | Path, edge: np.ndarray) -> None:
    """Write ``edge`` (float in [0, 1], [H, W]) as a 16-bit PNG, atomically."""
    write_png(path, encode_edge_map(edge))


def load_edge_map(path: str | Path, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ``png16-unit`` map as ``float32[H, W]`` in [0, 1].

    A missing, truncated or non-16-bit-grayscale file (or, with ``shape``, a map of another
    size) raises :class:`DataError` naming the file.
    """
    arr = read_png(path, what="edge map")
    fix = ("edge maps are 16-bit grayscale PNGs written by `trace-edges edges`; "
           "delete the file and rerun the edges stage")
    if arr.ndim != 2:
        raise DataError(f"edge map must be single-channel, got shape {arr.shape}", path=path, fix=fix)
    if arr.dtype != np.uint16:
        if arr.dtype in (np.int32, np.uint32) and arr.size and 0 <= arr.min() and arr.max() <= 65535:
            arr = arr.astype(np.uint16)  # some Pillow versions decode I;16 PNGs as mode I
        else:
            raise DataError(f"edge map must be 16-bit grayscale (uint16), got {arr.dtype}",
                            path=path, fix=fix)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise DataError(f"edge map has shape {tuple(arr.shape)}, expected {tuple(shape)} "
                        "(the image size)", path=path, fix=fix)
    return (arr.astype(np.float32) / np.float32(SCALE)).astype(np.float32)


def _check_relname(name: Any, where: str | Path) -> str:
    if not isinstance(name, str) or not name:
        raise DataError(f"manifest entry {name!r} is not a file name", path=where)
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name:
        raise DataError(f"manifest entry {name!r} must be a relative path inside the directory",
                        path=where)
    return name


def write_manifest(directory: str | Path, source: str, images: Mapping[Any, str],
                   provenance: Mapping[str, Any]) -> Path:
    """Write ``<directory>/manifest.json`` (atomically) after checking every listed file exists.

    ``images`` maps image id -> file name relative to ``directory``. Keys are stored as strings.
    """
    directory = Path(directory)
    entries: dict[str, str] = {}
    for image_id, name in images.items():
        key = str(image_id)
        if key in entries:
            raise ValueError(f"duplicate image id {key!r} in edge manifest")
        _check_relname(name, directory / MANIFEST)
        if not (directory / name).is_file():
            raise DataError(f"edge map of image {key} is missing", path=directory / name,
                            fix="write every map before the manifest")
        entries[key] = name
    path = directory / MANIFEST
    write_json(path, {"source": str(source), "format": FORMAT,
                      "images": dict(sorted(entries.items(), key=lambda kv: _sort_key(kv[0]))),
                      "provenance": dict(provenance)})
    return path


def _sort_key(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def _manifest_path(dir_or_file: str | Path) -> Path:
    p = Path(dir_or_file)
    return p / MANIFEST if p.is_dir() or p.suffix != ".json" else p


def read_manifest(dir_or_file: str | Path) -> dict[str, Any]:
    """Read and validate an edge manifest (a directory holding ``manifest.json``, or the file)."""
    path = _manifest_path(dir_or_file)
    data = read_json(path, what="edge manifest")
    fix = "rerun the edges stage for this source (the manifest is written last)"
    if not isinstance(data, dict):
        raise DataError("edge manifest must be a JSON object", path=path, fix=fix)
    missing = [k for k in ("source", "format", "images", "provenance") if k not in data]
    if missing:
        raise DataError(f"edge manifest lacks key(s) {missing}", path=path, fix=fix)
    if data["format"] != FORMAT:
        raise DataError(f"unsupported edge-map format {data['format']!r} (expected {FORMAT!r})",
                        path=path, fix=fix)
    if not isinstance(data["images"], dict):
        raise DataError("edge manifest `images` must map image id -> file name", path=path, fix=fix)
    for name in data["images"].values():
        _check_relname(name, path)
    return data


class EdgeSet:
    """The stored edge maps of one source: ``EdgeSet(dir)[image_id] -> float32[H, W]``."""

    def __init__(self, dir_or_manifest: str | Path):
        self.manifest_path = _manifest_path(dir_or_manifest)
        self.directory = self.manifest_path.parent
        self.manifest = read_manifest(self.manifest_path)
        self.source: str = self.manifest["source"]
        self.provenance: dict[str, Any] = self.manifest["provenance"]
        self._files: dict[str, str] = self.manifest["images"]

    @property
    def ids(self) -> list[str]:
        """Image ids (as strings, in manifest order)."""
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._files

    def require(self, image_ids: Iterable[Any]) -> None:
        """Raise :class:`DataError` unless every id in ``image_ids`` has a stored map."""
        missing = [str(i) for i in image_ids if str(i) not in self._files]
        if missing:
            shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
            raise DataError(
                f"edge source {self.source!r} has no map for image id(s) {shown}",
                path=self.manifest_path,
                fix="rerun the edges stage on the same image list (data.max_images / dataset must "
                    "match the run that produced these maps)")

    def path(self, image_id: Any) -> Path:
        self.require([image_id])
        return self.directory / self._files[str(image_id)]

    def load(self, image_id: Any, *, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The map of ``image_id`` as ``float32[H, W]`` in [0, 1] (``shape`` checks its size)."""
        return load_edge_map(self.path(image_id), shape=shape)

    def __getitem__(self, image_id: Any) -> np.ndarray:
        return self.load(image_id)

    def file_sha256(self, image_id: Any) -> str:
        """sha256 of the stored map of ``image_id`` (keys per-item caches of consumers)."""
        from trace_edges.io import sha256_file

        return sha256_file(self.path(image_id))

    def __repr__(self) -> str:
        return f"EdgeSet(source={self.source!r}, n={len(self)}, dir={str(self.directory)!r})"
