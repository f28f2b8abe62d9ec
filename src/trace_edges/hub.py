"""Hugging Face models: ``from_pretrained`` with a clear error, atomic tiny-model builds, the
ImageNet input normalisation of the ViT encoders, and the hub commit a model came from.

Shared by the models that are not diffusers pipelines: the DINOv2 teacher backbone
(``backbones/dinov2.py``) and the MaskCut ViT (``proposals/vit.py``); ``snapshot_commit`` also by
the diffusion backbones (``backbones/base.py``), which load through their pipelines' own hints.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from trace_edges.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HUB_FIX = ("check the hub id / revision or pre-download it; with HF_HUB_OFFLINE=1 it must already be in "
           "the HF cache")


def from_pretrained(cls: Any, model: str, revision: str | None, *, what: str, build_hint: str, **kwargs: Any):
    """``cls.from_pretrained(model, revision=revision, **kwargs)`` (hub id or local directory), with
    transformers' progress bars off; a load failure becomes a :class:`DataError` naming ``what``,
    the model and the fix (``build_hint`` for a local directory, the hub advice otherwise)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(model, revision=revision, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        local = Path(model).exists()
        raise DataError(
            f"cannot load {what} from {'local directory' if local else 'hub id'} {model!r} "
            f"(revision {revision!r}): {type(exc).__name__}: {exc}",
            fix=build_hint if local else HUB_FIX) from exc


def imagenet_pixels(rgb: Any):
    """``uint8 [R, R, 3]`` (already resized) -> ``float32 [1, 3, R, R]``: ``(x / 255 - mean) / std``
    with the ImageNet mean/std the DINO / DINOv2 ViTs were trained with."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def snapshot_commit(path: Any) -> str | None:
    """The hub commit in a Hugging Face cache path (``.../snapshots/<sha>/...``); None otherwise."""
    m = re.search(r"snapshots[/\\]([0-9a-f]{40})", str(path or ""))
    return m.group(1) if m else None


def build_atomically(build: Callable[[Path], Any], out_dir: str | Path, *, seed: int) -> Path:
    """``build(scratch_dir)`` under ``torch.manual_seed(seed)`` (the global RNG is restored after),
    then ``save_pretrained`` (safetensors) into a sibling temp dir renamed to ``out_dir``: a killed
    build leaves no half-written model. The same seed gives byte-identical weights."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars in every build log
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build(staging / "_scratch")
        shutil.rmtree(staging / "_scratch", ignore_errors=True)
        model.save_pretrained(staging / "model", safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        (staging / "model").rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


__all__ = ["HUB_FIX", "IMAGENET_MEAN", "IMAGENET_STD", "build_atomically", "from_pretrained", "imagenet_pixels",
           "snapshot_commit"]
