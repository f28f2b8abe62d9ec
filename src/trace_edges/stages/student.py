"""Student stages: ``distill`` (one-step self-distillation) and ``student_infer`` (the
``trace_student`` edge source).

Layout under ``results/<preset>/student/<family>/``::

    checkpoints/last.safetensors (+ last.json)   resumable training state (see student/train.py)
    snapshots/step_<s>.safetensors, index.json   LoRA + decoder at the `snapshots` fractions (Fig. 4 strip)
    metrics.csv, training_curve.png              per-epoch train / validation metrics
    model.safetensors                            LoRA + decoder weights only
    model.json                                   config, backbone, provenance, val metrics, data ids (declared output)

and the edge maps in ``results/<preset>/edges/trace_student/`` (the common edge-source format).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from trace_edges import provenance
from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import load_rgb
from trace_edges.edges.store import edge_map_filename, save_edge_map, write_manifest
from trace_edges.errors import DataError
from trace_edges.io import read_json, sha256_file, sha256_json, write_json
from trace_edges.stages._loop import run_items
from trace_edges.student.artifact import MODEL_FORMAT, model_json_path

log = logging.getLogger(__name__)

#: the teacher backbone keys that define the student's base model (device / dtype of a run do not)
BACKBONE_KEYS = ("family", "model", "revision", "resolution", "drop_t5", "guidance", "dtype")


def labelled_images(manifest: Mapping[str, Any], labels_manifest: str | Path) -> list[tuple[dict, Path]]:
    """``(image record, label PNG)`` for every manifest image the teacher labelled (manifest order)."""
    labels_manifest = Path(labels_manifest)
    lab = read_json(labels_manifest, what="teacher labels manifest")
    if not isinstance(lab, dict) or not isinstance(lab.get("images"), dict):
        raise DataError("not a teacher labels manifest (no `images` mapping)", path=labels_manifest,
                        fix="pass teacher/<family>/labels/manifest.json written by the teacher_labels stage")
    base = labels_manifest.parent  # entries are relative to the labels directory
    out = []
    for rec in manifest["images"]:
        entry = lab["images"].get(str(rec["id"]))
        if entry is None:
            continue
        path = base / entry["labels"]
        if not path.is_file():
            raise DataError(f"pseudo-labels of image {rec['id']} are missing", path=path,
                            fix="rerun the teacher_labels stage")
        out.append((rec, path))
    if not out:
        raise DataError("no image of the data manifest has teacher pseudo-labels", path=labels_manifest,
                        fix="run the teacher on the same data manifest first")
    return out


def _backbone_key(backbone: Mapping[str, Any]) -> dict[str, Any]:
    return {k: backbone.get(k) for k in BACKBONE_KEYS}


def run_distill(params: Mapping[str, Any], teacher_params: Mapping[str, Any], manifest_path: str | Path,
              labels_manifest: str | Path, out_dir: str | Path, *, seed: int = 0,
              callback: Callable[[int], None] | None = None, backbone: Any = None,
              null_prompt: str | Path | None = None) -> dict:
    """Train the student on the teacher's pseudo-labels; write ``model.safetensors`` + ``model.json`` (last).

    ``params`` is the validated ``student`` block, ``teacher_params`` the ``teacher`` block (its
    ``backbone`` is the student's base model). ``backbone`` (tests) replaces loading it; it is
    modified in place (LoRA injected). ``callback(step)``: see :meth:`Trainer.run`. ``null_prompt``:
    the null_prompt stage's embeddings of that backbone (its text encoders are then not loaded).
    """
    from trace_edges.student.model import StudentModel
    from trace_edges.student.train import SampleSet, Trainer, save_weights, split_train_val
    from trace_edges.report.student_figures import plot_training_curve
    from trace_edges.backbones.loader import load_configured_backbone

    from trace_edges.data.train_data import list_sha256

    manifest = load_manifest(manifest_path)
    out_dir = Path(out_dir)
    transductive = bool(params["train_data"]["transductive"])
    if not transductive and manifest.get("dataset") != "train_data":
        raise DataError("the student would train on the evaluation images: this manifest is not a training set "
                        f"(dataset {manifest.get('dataset')!r})", path=manifest_path,
                        fix="pass results/<preset>/train_data/manifest.json (rule prepare_train), or set "
                            "student.train_data.transductive: true to train on the evaluation images on purpose")
    items = labelled_images(manifest, labels_manifest)
    used = [rec for rec, _ in items]
    train_ids, val_ids = split_train_val([rec["id"] for rec, _ in items], float(params["train"]["val_fraction"]))
    bspec = teacher_params["backbone"]
    if backbone is None:
        backbone = load_configured_backbone(bspec, null_prompt=null_prompt)
    model = StudentModel(backbone, params, seed=seed)
    key = sha256_json({
        "student": dict(params), "backbone": _backbone_key(bspec), "seed": int(seed),
        "train": train_ids, "val": val_ids, "code": provenance.code_digest("student"),
        "data": {str(rec["id"]): [rec["sha256"], sha256_file(path)] for rec, path in items},
    })
    by_id = {str(rec["id"]): (rec["id"], rec["file"], path) for rec, path in items}
    trainer = Trainer(model, params, SampleSet(model, [by_id[i] for i in train_ids]),
                      SampleSet(model, [by_id[i] for i in val_ids]), out_dir, seed=seed, key=key)
    result = trainer.run(callback)
    plot_training_curve(out_dir / "training_curve.png", result["history"])

    weights = out_dir / "model.safetensors"
    save_weights(weights, model.student_state(), {"format": MODEL_FORMAT})
    info = backbone.model_info()
    stage_params = {"student": dict(params), "backbone": _backbone_key(bspec), "seed": int(seed)}
    out = {
        "format": MODEL_FORMAT,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "student": dict(params),
        "backbone": dict(bspec),
        "seed": int(seed),
        "architecture": model.describe(),
        "steps": result["steps"],
        "steps_per_epoch": result["steps_per_epoch"],
        "val_metrics": {k: v for k, v in result["final"].items() if k.startswith("val_")},
        "history": result["history"],
        "training_data": {"transductive": transductive, "dataset": manifest.get("dataset"),
                          "manifest": str(manifest_path), "num_images": len(used),
                          "list_sha256": list_sha256(used), "train_ids": train_ids, "val_ids": val_ids},
        "snapshots": trainer.snapshot_index(),
        "provenance": provenance.record("student", params=stage_params,
                                        inputs=[manifest_path, labels_manifest], model=info,
                                        config={"student": dict(params), "seed": int(seed),
                                                "teacher": {"backbone": _backbone_key(bspec)}}),
    }
    write_json(out_dir / "model.json", out)
    return out


def run_infer(model_path: str | Path, manifest_path: str | Path, out_dir: str | Path, *,
              device: str | None = None, student: Any = None, null_prompt: str | Path | None = None) -> Path:
    """The ``trace_student`` edge maps of every manifest image (per-image resumable) + manifest.

    ``model_path`` is ``model.safetensors`` (its ``model.json`` sits next to it); ``device``
    overrides the stored backbone device; ``student`` (tests) is an already loaded model;
    ``null_prompt``: the null_prompt stage's embeddings of the student's backbone.
    """
    from trace_edges.student.infer import load_student, predict_edge

    model_path = Path(model_path)
    meta_path = model_json_path(model_path)
    meta = read_json(meta_path, what="student model.json")
    manifest = load_manifest(manifest_path)
    out_dir = Path(out_dir)
    stage_params = {"model_sha256": sha256_file(model_path), "student": meta["student"],
                    "backbone": _backbone_key(meta["backbone"])}
    holder: dict[str, Any] = {"model": student}

    def out_file(rec):
        return out_dir / edge_map_filename(rec["id"])

    def work(rec):
        if holder["model"] is None:
            holder["model"] = load_student(model_path, device=device, null_prompt=null_prompt)
        save_edge_map(out_file(rec), predict_edge(holder["model"], load_rgb(rec["file"])))

    run_items(manifest["images"], stage="student", params=stage_params, out_dir=out_dir,
              outputs=lambda rec: [out_file(rec)], work=work, desc="student infer")
    prov = provenance.record("student", params=stage_params, inputs=[manifest_path, model_path, meta_path],
                             model=meta["provenance"].get("model"))
    return write_manifest(out_dir, "trace_student", {rec["id"]: out_file(rec).name for rec in manifest["images"]},
                          {**prov, "source": "trace_student"})
