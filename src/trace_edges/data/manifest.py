"""Reading a data manifest (``results/<preset>/data/manifest.json``, written by ``prepare``).

Its own module, so that every stage that reads a manifest depends on this reader only, not on the
prepare code (annotation checks, instance-edge GT, thinning) that wrote it.
"""

from __future__ import annotations

from pathlib import Path

from trace_edges.errors import DataError
from trace_edges.io import read_json


def load_manifest(path: str | Path) -> dict:
    """Read a data manifest; GT paths in ``gt`` are resolved relative to its directory."""
    path = Path(path)
    m = read_json(path, what="data manifest")
    if not isinstance(m, dict) or "images" not in m or "gt" not in m:
        raise DataError("not a trace-edges data manifest", path=path,
                        fix="rerun `trace-edges prepare` (snakemake prepare)")
    base = path.parent
    m["gt"] = {k: str(base / v) if not Path(v).is_absolute() and k != "panoptic_dir" else v
               for k, v in m["gt"].items()}
    for rec in m["images"]:
        rec["edge_gt"] = str(base / rec["edge_gt"])
    return m


__all__ = ["load_manifest"]
