"""The trained student's on-disk format: ``model.safetensors`` with ``model.json`` next to it.

Shared by the stage that writes it (:mod:`trace_edges.stages.student`) and the loader that reads
it (:mod:`trace_edges.student.infer`), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

MODEL_FORMAT = "trace-student/1"


def model_json_path(weights: str | Path) -> Path:
    """``.../model.safetensors`` -> ``.../model.json``."""
    return Path(weights).with_suffix(".json")
