"""The TRACE teacher as an edge source (``trace_teacher``): ABDiv at the IEP, at image resolution.

The workflow computes the same maps in sharded stages (invert -> iep -> abdiv_labels, see
``trace_edges.stages.teacher``); this class is the one-call form of the same computation, for
``trace-edges edges --source trace_teacher`` and for tests (both paths agree, tested).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from trace_edges.edges.base import EdgeSource
from trace_edges.teacher.labels import normalize_unit
from trace_edges.teacher.trajectory import TeacherResult, run_teacher, upsample_to_image


def teacher_edge_map(grid_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A token-grid ABDiv map -> the edge-source map: bilinear to H×W, then min-max to [0, 1]."""
    return normalize_unit(upsample_to_image(grid_map, height, width))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_teacher_backbone(backbone: Mapping[str, Any]):
    """Load the configured backbone (``teacher.backbone`` block) through ``load_backbone``."""
    from trace_edges.backbones import load_backbone

    if os.environ.get("TRACE_EDGES_NO_PROGRESS"):
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    spec = {k: backbone[k] for k in ("family", "model", "revision", "resolution", "drop_t5")}
    if backbone.get("guidance") is not None:
        spec["guidance"] = backbone["guidance"]
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[backbone["dtype"]]
    return load_backbone(spec, device=resolve_device(backbone["device"]), dtype=dtype)


def _teacher_defaults() -> dict[str, Any]:
    from trace_edges.config import validate

    return validate({}, block="teacher")


class TeacherEdgeSource(EdgeSource):
    name: ClassVar[str] = "trace_teacher"
    DEFAULTS: ClassVar[Mapping[str, Any]] = _teacher_defaults()

    def __init__(self, params: Mapping[str, Any] | None = None, *, seed: int = 0):
        super().__init__(params)
        self.seed = seed
        self._backbone = None
        self.last: TeacherResult | None = None

    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = load_teacher_backbone(self.params["backbone"])
        return self._backbone

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        self.last = run_teacher(self.backbone, rgb, self.params, seed=self.seed)
        return teacher_edge_map(self.last.edge, rgb.shape[0], rgb.shape[1])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self._backbone is not None:
            out["model"] = self._backbone.model_info()
        return out
