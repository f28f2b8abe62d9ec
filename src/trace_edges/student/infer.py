"""Student inference: one denoiser pass at t = 0 per image -> the ``trace_student`` edge map.

``load_student(".../model.safetensors")`` rebuilds the backbone named in the ``model.json`` next
to the weights (the teacher's backbone block), injects the same LoRA adapters, builds the same
decoder and loads the trained tensors. :func:`predict_edge` then gives (Ê + 1)/2 bilinearly
resized to the image's own H×W: ``float32 [H, W]`` in [0, 1], the edge-source contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trace_edges.errors import DataError
from trace_edges.io import read_json, sha256_file
from trace_edges.student.artifact import MODEL_FORMAT, model_json_path
from trace_edges.student.model import StudentModel, edge_probability
from trace_edges.teacher.trajectory import upsample_to_image


def read_model_json(weights: str | Path) -> dict[str, Any]:
    weights = Path(weights)
    if not weights.is_file():
        raise DataError("student weights not found", path=weights,
                        fix="train the student first (trace-edges distill / snakemake distill)")
    meta = read_json(model_json_path(weights), what="student model.json")
    if meta.get("format") != MODEL_FORMAT:
        raise DataError(f"unknown student model format {meta.get('format')!r} (expected {MODEL_FORMAT!r})",
                        path=model_json_path(weights), fix="retrain the student with this version")
    return meta


def load_student(weights: str | Path, *, device: str | None = None, backbone: Any = None,
                 check_digest: bool = True, null_prompt: str | Path | None = None) -> StudentModel:
    """The trained student from ``model.safetensors`` (+ ``model.json``), in eval mode.

    ``device`` overrides the stored backbone device (``auto``/``cpu``/``cuda``); ``backbone`` (tests)
    is a freshly loaded backbone to use instead of loading the stored one. A training snapshot
    (``snapshots/step_*.safetensors``, Fig. 4 strip) is loaded into the returned model with
    :func:`load_weights`. ``null_prompt``: the null_prompt stage's embeddings of the stored
    backbone (:mod:`trace_edges.null_prompt`; its text encoders are then not loaded).
    """
    from trace_edges.backbones.loader import load_configured_backbone

    weights = Path(weights)
    meta = read_model_json(weights)
    if check_digest and sha256_file(weights) != meta["weights_sha256"]:
        raise DataError("student weights do not match their model.json (sha256 differs)", path=weights,
                        fix="the files come from different training runs: rerun distill")
    if backbone is None:
        spec = dict(meta["backbone"])
        if device is not None:
            spec["device"] = device
        backbone = load_configured_backbone(spec, null_prompt=null_prompt)
    model = StudentModel(backbone, meta["student"], seed=int(meta.get("seed", 0)))
    load_weights(model, weights)
    model.set_train(False)
    return model


def load_weights(model: StudentModel, path: str | Path) -> None:
    """Load LoRA + decoder tensors (``model.safetensors`` or a training snapshot) into ``model``."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"cannot read student weights ({exc})", path=path,
                        fix="the file is truncated or corrupt: rerun distill") from exc
    model.load_student_state(state, where=f"weights {path}")


@torch.no_grad()
def predict_unit(model: StudentModel, rgb: np.ndarray) -> np.ndarray:
    """(Ê + 1)/2 at the training resolution: ``float32 [R, R]``."""
    x0 = model.backbone.encode(rgb)
    out = model(x0, reconstruct=False)
    return edge_probability(out.edge)[0, 0].float().cpu().numpy()


def predict_edge(model: StudentModel, rgb: np.ndarray) -> np.ndarray:
    """The student's edge map of ``rgb`` (uint8 [H, W, 3]): (Ê + 1)/2 resized bilinearly to H×W."""
    unit = predict_unit(model, rgb)
    return np.clip(upsample_to_image(unit, rgb.shape[0], rgb.shape[1]), 0.0, 1.0).astype(np.float32)


__all__ = ["load_student", "load_weights", "predict_edge", "predict_unit", "read_model_json"]
