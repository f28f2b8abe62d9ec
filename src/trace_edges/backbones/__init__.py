"""Diffusion backbones: one adapter per family, loaded through diffusers' pipeline classes.

>>> bb = load_backbone({"family": "sd3", "model": "stabilityai/stable-diffusion-3.5-large",
...                     "resolution": 1024})                                   # doctest: +SKIP
>>> z0 = bb.encode(rgb); eps_or_v = bb.predict(z0, 0)                         # doctest: +SKIP

Diffusion families: ``sd15``, ``sdxl``, ``sd3`` (paper default: SD3.5-Large), ``pixart``
(PixArt-α), ``flux`` (FLUX.1). Non-diffusion control (Table 5): ``dinov2`` (DINOv2, a ViT
encoder loaded through transformers; no trajectory, ABDiv on its self-attention at ``t = 0``).
Tiny random models of the same architectures: :mod:`trace_edges.backbones.tiny`.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import torch

from trace_edges.backbones.base import AttnSite, Backbone, EpsBackbone, FlowBackbone, SPEC_KEYS
from trace_edges.errors import ConfigError

#: family name -> "module:class" (imported lazily: diffusers pipelines are slow to import).
FAMILIES: dict[str, str] = {
    "sd15": "trace_edges.backbones.sd15:SD15Backbone",
    "sdxl": "trace_edges.backbones.sdxl:SDXLBackbone",
    "sd3": "trace_edges.backbones.sd3:SD3Backbone",
    "pixart": "trace_edges.backbones.pixart:PixArtBackbone",
    "flux": "trace_edges.backbones.flux:FluxBackbone",
    "dinov2": "trace_edges.backbones.dinov2:Dinov2Backbone",
}


def backbone_class(family: str) -> type[Backbone]:
    if family not in FAMILIES:
        raise ConfigError(f"unknown backbone family {family!r}", fix=f"use one of {sorted(FAMILIES)}")
    mod, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(mod), cls)


def load_backbone(spec: Mapping[str, Any], device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> Backbone:
    """Load the adapter for ``spec = {"family", "model", "revision", "resolution", ...}``.

    ``model`` is a hub id or a local diffusers pipeline directory; both go through the family's
    pipeline class ``from_pretrained(model, revision=..., torch_dtype=dtype)``.
    """
    if not isinstance(spec, Mapping) or "family" not in spec:
        raise ConfigError("backbone spec must be a mapping with a 'family' key",
                          fix=f"families: {sorted(FAMILIES)}")
    return backbone_class(spec["family"])(spec, device=device, dtype=dtype)


__all__ = ["AttnSite", "Backbone", "EpsBackbone", "FlowBackbone", "FAMILIES", "SPEC_KEYS",
           "backbone_class", "load_backbone"]
