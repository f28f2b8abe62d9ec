"""Load the backbone a config block names (``teacher.backbone``): the one loader every stage uses.

The teacher stages, the student (its base model is the teacher's backbone), the teacher figures
and the benchmarks all call :func:`load_configured_backbone`, so a backbone block means the same
model, device and dtype everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from trace_edges.backbones.device import DTYPES, resolve_device


def load_configured_backbone(backbone: Mapping[str, Any], null_prompt: str | Path | None = None):
    """Load the configured backbone (a validated ``teacher.backbone`` block) through ``load_backbone``.

    ``null_prompt``: the null_prompt stage's artifact for this backbone
    (:mod:`trace_edges.null_prompt`); the text encoders are then never loaded. Without
    it they are loaded, run once on the empty prompt and released."""
    from trace_edges.backbones import load_backbone

    if os.environ.get("TRACE_EDGES_NO_PROGRESS"):
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    spec = {k: backbone[k] for k in ("family", "model", "revision", "resolution", "drop_t5")}
    if backbone.get("guidance") is not None:
        spec["guidance"] = backbone["guidance"]
    null_text = None
    if null_prompt is not None:
        from trace_edges.null_prompt import load_null_text

        null_text = load_null_text(null_prompt, backbone)
    return load_backbone(spec, device=resolve_device(backbone["device"]), dtype=DTYPES[backbone["dtype"]],
                         null_text=null_text)


__all__ = ["DTYPES", "load_configured_backbone", "resolve_device"]
