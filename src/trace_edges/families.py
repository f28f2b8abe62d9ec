"""Backbone family names, importable without torch (the Snakefile reads them at parse time).

* :data:`DIFFUSION_FAMILIES`: the five diffusion / flow backbones of the paper (Table 5);
* :data:`ENCODER_FAMILIES`: non-diffusion image encoders, the paper's controls (ABDiv on their
  self-attention at ``t = 0``, no trajectory, no IEP, no student).
"""

from __future__ import annotations

DIFFUSION_FAMILIES: tuple[str, ...] = ("sd15", "sdxl", "sd3", "pixart", "flux")
ENCODER_FAMILIES: tuple[str, ...] = ("dinov2",)


def tiny_marker(family: str) -> str:
    """The file a finished tiny build always has (what rules declare as its output):
    ``model_index.json`` for a diffusers pipeline, ``config.json`` for a transformers encoder."""
    return "config.json" if family in ENCODER_FAMILIES else "model_index.json"


__all__ = ["DIFFUSION_FAMILIES", "ENCODER_FAMILIES", "tiny_marker"]
