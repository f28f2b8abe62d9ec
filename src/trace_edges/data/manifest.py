"""Reading a data manifest (``results/<preset>/data/manifest.json``, written by ``prepare``).

Its own module, so that every stage that reads a manifest depends on this reader only, not on the
prepare code (annotation checks, instance-edge GT, thinning) that wrote it.
"""

from __future__ import annotations

from pathlib import Path

from trace_edges.errors import DataError
from trace_edges.io import read_json


def load_manifest(path: str | Path) -> dict:
    """Read a data manifest; GT paths in ``gt`` are resolved relative to its directory.

    An images-only dataset (``data.dataset: images``) has ``"gt": null`` and no ``edge_gt`` per
    image: stages that need ground truth call :func:`require_ground_truth` first."""
    path = Path(path)
    m = read_json(path, what="data manifest")
    if not isinstance(m, dict) or "images" not in m or "gt" not in m:
        raise DataError("not a trace-edges data manifest", path=path,
                        fix="rerun `trace-edges prepare` (snakemake prepare)")
    base = path.parent
    if m["gt"] is not None:
        m["gt"] = {k: str(base / v) if not Path(v).is_absolute() and k != "panoptic_dir" else v
                   for k, v in m["gt"].items()}
    for rec in m["images"]:
        if rec.get("edge_gt") is not None:
            rec["edge_gt"] = str(base / rec["edge_gt"])
    return m


def require_ground_truth(manifest: dict, path: str | Path, what: str) -> None:
    """Refuse to run ``what`` on a manifest without ground truth (an images-only dataset)."""
    if manifest.get("gt") is None:
        raise DataError(f"{what} needs ground truth, but this manifest is an images-only dataset "
                        f"({manifest.get('dataset')}: no instance or panoptic annotations)", path=path,
                        fix="score a COCO-format dataset (data.dataset: coco_mini or coco2017_val); the "
                            "workflow leaves scoring out for data.dataset: images")


__all__ = ["load_manifest", "require_ground_truth"]
