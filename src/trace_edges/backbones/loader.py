"""Load the backbone a config block names (``teacher.backbone``): the one loader every stage uses.

The teacher stages, the student (its base model is the teacher's backbone), the teacher figures
and the benchmarks all call :func:`load_configured_backbone`, so a backbone block means the same
model, device and dtype everywhere.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

#: config dtype names -> torch dtypes
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_configured_backbone(backbone: Mapping[str, Any]):
    """Load the configured backbone (a validated ``teacher.backbone`` block) through ``load_backbone``."""
    from trace_edges.backbones import load_backbone

    if os.environ.get("TRACE_EDGES_NO_PROGRESS"):
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    spec = {k: backbone[k] for k in ("family", "model", "revision", "resolution", "drop_t5")}
    if backbone.get("guidance") is not None:
        spec["guidance"] = backbone["guidance"]
    return load_backbone(spec, device=resolve_device(backbone["device"]), dtype=DTYPES[backbone["dtype"]])


__all__ = ["DTYPES", "load_configured_backbone", "resolve_device"]
