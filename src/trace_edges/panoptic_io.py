"""COCO panoptic PNG encoding: segment id = R + 256·G + 256²·B, 0 = void."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trace_edges.data.images import read_png, write_png


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.uint32)
    out = np.empty(ids.shape + (3,), dtype=np.uint8)
    out[..., 0] = ids % 256
    out[..., 1] = (ids // 256) % 256
    out[..., 2] = (ids // (256 * 256)) % 256
    return out


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Segment-id map (uint32) of a panoptic PNG."""
    arr = read_png(path, what="panoptic PNG")
    if arr.ndim != 3 or arr.shape[2] < 3:
        from trace_edges.errors import DataError

        raise DataError(f"panoptic PNG must be RGB, got shape {arr.shape}", path=path,
                        fix="panoptic PNGs encode ids as R + 256*G + 256^2*B; restore the original file")
    return rgb2id(arr[..., :3])


def write_panoptic_png(path: str | Path, ids: np.ndarray) -> None:
    write_png(path, id2rgb(ids))
