"""The empty prompt's text-encoder outputs, computed once per model (stage ``null_prompt``).

TRACE conditions every denoiser call on the empty prompt ``""`` (no CFG), so the text encoders
(for SD3.5-Large: two CLIPs and the 4.8 B-parameter T5-XXL) serve exactly one forward per model.
The ``null_prompt`` stage runs that forward once, with the pipeline loaded WITHOUT its denoiser and
VAE, and writes::

    <dir>/<family>-<key>.safetensors   the tensors of Backbone._encode_text (encoder dtype)
    <dir>/<family>-<key>.json          identity (family, model, revision, dtype, drop_t5), the
                                       resolved hub commit, shapes/dtypes, provenance

``<key>`` is a digest of the identity (:func:`artifact_name`): the model id + revision, the dtype
the encoders ran in and, for SD3, whether T5 is dropped; what the artifact does NOT depend on
(resolution, device, FLUX guidance) is left out, so the main teacher and every ablation cell on
the same model share one file. The stages that run the denoiser (trajectory, distill,
student_infer, the teacher figures) load it with :func:`load_null_text` and build the backbone
with ``null_text=...``: the pipeline is then loaded without text encoders and tokenizers.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from trace_edges.errors import ConfigError, DataError
from trace_edges.io import atomic_path, read_json, sha256_file, sha256_json, write_json

#: what the embeddings depend on (keys of a validated ``teacher.backbone`` block)
IDENTITY_KEYS = ("family", "model", "revision", "dtype", "drop_t5")
FORMAT = "trace-edges/null-prompt/1"

if TYPE_CHECKING:  # torch is imported where tensors are made: the Snakefile imports this module
    import torch


def identity(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of a backbone block's null-prompt embeddings (``drop_t5`` only for sd3)."""
    out = {k: backbone.get(k) for k in IDENTITY_KEYS}
    out["model"] = str(out["model"])
    out["drop_t5"] = bool(out["drop_t5"]) if out["family"] == "sd3" else False
    return out


def has_text_encoder(family: str) -> bool:
    """True for the diffusion families (the encoder control, DINOv2, has no prompt)."""
    from trace_edges.families import DIFFUSION_FAMILIES

    return family in DIFFUSION_FAMILIES


def artifact_name(backbone: Mapping[str, Any]) -> str:
    """``<family>-<12 hex>``: the file stem of the backbone's null-prompt artifact."""
    ident = identity(backbone)
    return f"{ident['family']}-{sha256_json(ident)[:12]}"


def compute_null_text(backbone: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Run the empty prompt through the text encoders of a validated ``teacher.backbone`` block.

    Loads the family's pipeline without denoiser and VAE (the text encoders and tokenizers only),
    on the block's device and dtype; returns the tensors (CPU, encoder dtype) and the model record
    (identity + resolved hub commit). The pipeline is released before returning."""
    from trace_edges.backbones import backbone_class
    from trace_edges.backbones.base import normalize_spec
    from trace_edges.backbones.device import DTYPES, resolve_device
    from trace_edges.hub import snapshot_commit
    import torch

    family = backbone["family"]
    if not has_text_encoder(family):
        raise ConfigError(f"null-prompt: backbone family {family!r} has no text encoder",
                          fix="the null_prompt stage only applies to the diffusion families")
    cls = backbone_class(family)
    spec = normalize_spec({k: backbone[k] for k in ("family", "model", "revision", "drop_t5")}, cls)
    pipe = cls.load_pipeline(spec, DTYPES[backbone["dtype"]], **{cls.denoiser_attr: None, "vae": None})
    text = cls.encode_null_text(pipe, resolve_device(backbone["device"]))
    commit = None
    for name in cls.text_encoder_attrs:
        enc = getattr(pipe, name, None)
        commit = commit or snapshot_commit(getattr(getattr(enc, "config", None), "_name_or_path", None))
    del pipe
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return text, {**identity(backbone), "commit": commit}


def write_null_text(backbone: Mapping[str, Any], out: str | Path) -> dict[str, Any]:
    """Compute the embeddings (:func:`compute_null_text`) and write ``out`` (.safetensors) + its
    ``.json`` sidecar (written last: its presence means the pair is complete)."""
    from safetensors.torch import save_file

    from trace_edges import provenance

    out = Path(out)
    text, model = compute_null_text(backbone)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in text.items()}, str(tmp), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "identity": identity(backbone),
        "sha256": sha256_file(out),
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                    for k, v in text.items()},
        # the model record stays out of the provenance block: `trace-edges audit` compares a
        # provenance model with the MAIN teacher's, and this folder also holds the ablation cells'
        "model": model,
        "provenance": provenance.record("null_prompt", params=identity(backbone)),
    }
    write_json(out.with_suffix(".json"), meta)
    return meta


def load_null_text(path: str | Path, backbone: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The stored embeddings for ``backbone``; refused when the sidecar's identity differs (an
    artifact of another model, revision or dtype) or the files are missing/corrupt."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path.with_suffix(".json")
    fix = "rerun the null_prompt stage (snakemake null_prompt) or `trace-edges null-prompt` for this backbone"
    if not path.is_file() or not meta_path.is_file():
        raise DataError("null-prompt embeddings not found (.safetensors + .json)", path=path, fix=fix)
    meta = read_json(meta_path, what="null-prompt sidecar")
    want = identity(backbone)
    if meta.get("format") != FORMAT or meta.get("identity") != want:
        raise DataError(f"null-prompt embeddings are for {meta.get('identity')}, not for this backbone {want}",
                        path=meta_path, fix=fix)
    if sha256_file(path) != meta.get("sha256"):
        raise DataError("null-prompt embeddings do not match their .json (sha256 differs)", path=path, fix=fix)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"cannot read null-prompt embeddings ({exc})", path=path, fix=fix) from exc


__all__ = ["FORMAT", "IDENTITY_KEYS", "artifact_name", "compute_null_text", "has_text_encoder", "identity",
           "load_null_text", "write_null_text"]
