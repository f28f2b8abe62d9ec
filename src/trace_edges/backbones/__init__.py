"""Diffusion backbones: one adapter per family, loaded through diffusers' pipeline classes.

>>> bb = load_backbone({"family": "sd3", "model": "stabilityai/stable-diffusion-3.5-large",
...                     "resolution": 1024})                                   # doctest: +SKIP
>>> z0 = bb.encode(rgb); eps_or_v = bb.predict(z0, 0)                         # doctest: +SKIP

Diffusion families: ``sd15``, ``sdxl``, ``sd3`` (paper default: SD3.5-Large), ``pixart``
(PixArt-α), ``flux`` (FLUX.1). Non-diffusion control (Table 5): ``dinov2`` (DINOv2, a ViT
encoder loaded through transformers; no trajectory, ABDiv on its self-attention at ``t = 0``).
Tiny random models of the same architectures: :mod:`trace_edges.backbones.tiny`. The families
(adapter class, tiny builder) are registered once, in :mod:`trace_edges.families`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from trace_edges.backbones.base import AttnSite, Backbone, EpsBackbone, FlowBackbone, SPEC_KEYS
from trace_edges.errors import ConfigError
from trace_edges.families import FAMILIES, family as family_record
from trace_edges.registry import resolve


def backbone_class(family: str) -> type[Backbone]:
    """The adapter class of ``family`` (its record in :data:`trace_edges.families.FAMILIES`)."""
    return resolve(family_record(family).adapter)


def load_backbone(spec: Mapping[str, Any], device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, *, null_text: Mapping[str, torch.Tensor] | None = None
                  ) -> Backbone:
    """Load the adapter for ``spec = {"family", "model", "revision", "resolution", ...}``.

    ``model`` is a hub id or a local diffusers pipeline directory; both go through the family's
    pipeline class ``from_pretrained(model, revision=..., torch_dtype=dtype)``. ``null_text``: the
    empty prompt's text-encoder outputs (:mod:`trace_edges.null_prompt`): the text
    encoders are then not loaded at all (diffusion families only).
    """
    if not isinstance(spec, Mapping) or "family" not in spec:
        raise ConfigError("backbone spec must be a mapping with a 'family' key",
                          fix=f"families: {list(FAMILIES)}")
    cls = backbone_class(spec["family"])
    if null_text is None:
        return cls(spec, device=device, dtype=dtype)
    if not issubclass(cls, Backbone):
        raise ConfigError(f"backbone family {spec['family']!r} has no text encoder: no null-prompt embeddings",
                          fix="drop the null-prompt input for this backbone")
    return cls(spec, device=device, dtype=dtype, null_text=null_text)


__all__ = ["AttnSite", "Backbone", "EpsBackbone", "FlowBackbone", "FAMILIES", "SPEC_KEYS",
           "backbone_class", "load_backbone"]
