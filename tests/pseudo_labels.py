"""Synthetic teacher pseudo-labels, so the student can be trained without running the teacher.

Shared by tests/test_student.py and tests/test_faults.py (kill -9 during distillation).
Importable from test modules because pytest puts tests/ on sys.path (rootdir conftest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def write_sobel_pseudo_labels(images: Sequence[Mapping[str, Any]], teacher_dir: str | Path) -> Path:
    """Ternary labels in the teacher's on-disk layout (``<teacher_dir>/labels/...``) for every
    manifest image: edge = Sobel above its 85th percentile, interior = below the median, ignore
    in between (both classes present in every image). Returns the labels manifest path."""
    from trace_edges.data.images import load_rgb, write_png
    from trace_edges.edges import get_edge_source
    from trace_edges.io import write_json
    from trace_edges.teacher.labels import EDGE, IGNORE, INTERIOR

    teacher_dir = Path(teacher_dir)
    sobel = get_edge_source("sobel")
    entries = {}
    for rec in images:
        e = sobel.compute(load_rgb(rec["file"]))
        lab = np.full(e.shape, IGNORE, np.uint8)
        lab[e > np.quantile(e, 0.85)] = EDGE
        lab[e < np.quantile(e, 0.5)] = INTERIOR
        # at image size, not the training size: the student resizes (nearest) whatever it is given
        write_png(teacher_dir / f"labels/{rec['id']}.png", lab)
        entries[str(rec["id"])] = {"labels": f"{rec['id']}.png"}
    path = teacher_dir / "labels/manifest.json"
    write_json(path, {"images": entries})
    return path
