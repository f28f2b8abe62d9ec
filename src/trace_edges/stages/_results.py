"""Per-image COCO results lists: write one file per image, concatenate into one results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from trace_edges.io import read_json, write_json
from trace_edges.masks import bbox_xywh, encode_rle


def results_for_image(image_id: int, masks: Sequence[np.ndarray], scores: Sequence[float]) -> list[dict]:
    """COCO results entries (class-agnostic: category_id 1), highest score first."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    out = []
    for i in order:
        m = masks[i]
        if not m.any():
            continue
        out.append({
            "image_id": int(image_id),
            "category_id": 1,
            "segmentation": encode_rle(m),
            "bbox": bbox_xywh(m),
            "score": float(scores[i]),
        })
    return out


def concat_results(files: Iterable[str | Path], out_path: str | Path) -> int:
    allres: list[dict] = []
    for f in files:
        allres.extend(read_json(f, what="per-image results"))
    write_json(out_path, allres, indent=None)
    return len(allres)


def group_by_image(results: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    by: dict[int, list] = {}
    for r in results:
        by.setdefault(int(r["image_id"]), []).append(r)
    return by
