"""The trained TRACE student as an edge source (``trace_student``).

The workflow writes the same maps with the ``student_infer`` stage
(:func:`trace_edges.stages.student.run_infer`); this class is the one-call form, e.g.
``get_edge_source("trace_student", {"checkpoint": "results/embedded/student/sd3/model.safetensors"})``.

Parameters: the ``student`` config block (defaults from the schema) plus ``checkpoint``, the path
of the trained ``model.safetensors`` (its ``model.json`` next to it names the backbone and the
architecture). The stored architecture is authoritative; every ``lora`` / ``decoder`` key given
explicitly must equal the stored one (a mismatch is a :class:`ConfigError`, never a silent
reinterpretation).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from trace_edges.edges.base import EdgeSource
from trace_edges.errors import ConfigError

#: student-block keys that define the architecture stored with the weights
ARCH_KEYS = ("lora", "decoder")


def _defaults() -> dict[str, Any]:
    from trace_edges.config import validate

    return {**validate({}, block="student"), "checkpoint": None}


class StudentEdgeSource(EdgeSource):
    name: ClassVar[str] = "trace_student"
    DEFAULTS: ClassVar[Mapping[str, Any]] = _defaults()

    def __init__(self, params: Mapping[str, Any] | None = None, *, device: str | None = None):
        self._given = {k: v for k, v in dict(params or {}).items() if k in ARCH_KEYS}
        super().__init__(params)
        self.device = device
        self._model = None
        self._meta: dict[str, Any] | None = None

    def _check_params(self, params: Mapping[str, Any]) -> None:
        from trace_edges.config import validate

        ckpt = params.get("checkpoint")
        if ckpt is not None and not isinstance(ckpt, str):
            raise ConfigError(f"edge source 'trace_student': checkpoint must be a path string, got {ckpt!r}")
        student = validate({k: v for k, v in params.items() if k != "checkpoint"}, block="student",
                           where="edge source trace_student")
        self.params.update(student)  # nested defaults filled in

    @property
    def model(self):
        if self._model is None:
            from trace_edges.student.infer import load_student, read_model_json

            ckpt = self.params["checkpoint"]
            if not ckpt:
                raise ConfigError("edge source 'trace_student' needs a trained model",
                                  fix="pass checkpoint: <out>/student/<family>/model.safetensors (train it with "
                                      "`trace-edges distill` / snakemake distill)")
            meta = read_model_json(ckpt)
            for key, given in self._given.items():
                stored = meta["student"][key]
                diff = {k: v for k, v in dict(given).items() if stored.get(k) != v}
                if diff:
                    raise ConfigError(
                        f"edge source 'trace_student': {key} {diff} differs from what the checkpoint was "
                        f"trained with ({ {k: stored.get(k) for k in diff} })", path=ckpt,
                        fix=f"drop those `{key}` keys (the checkpoint defines the architecture) or retrain")
            self._meta = meta
            self._model = load_student(ckpt, device=self.device)
        return self._model

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        from trace_edges.student.infer import predict_edge

        return predict_edge(self.model, rgb)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self._meta is not None:
            out["model_sha256"] = self._meta["weights_sha256"]
            out["model"] = self._meta["provenance"].get("model")
        return out
