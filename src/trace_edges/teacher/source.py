"""The TRACE teacher as an edge source (``trace_teacher``): ABDiv at the IEP, at image resolution.

The workflow computes the same maps in sharded stages (trajectory -> teacher_labels, see
``trace_edges.stages.teacher``); this class is the one-call form of the same computation, for
``trace-edges edges --source trace_teacher`` and for tests (both paths agree, tested).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from trace_edges.backbones.loader import load_configured_backbone
from trace_edges.edges.base import EdgeSource
from trace_edges.teacher.trajectory import TeacherResult, run_teacher, teacher_edge_map


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
            self._backbone = load_configured_backbone(self.params["backbone"])
        return self._backbone

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        self.last = run_teacher(self.backbone, rgb, self.params, seed=self.seed)
        return teacher_edge_map(self.last.edge, rgb.shape[0], rgb.shape[1])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self._backbone is not None:
            out["model"] = self._backbone.model_info()
        return out
