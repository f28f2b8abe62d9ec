"""The backbone families: THE registry (torch-free; the Snakefile reads it at parse time).

One :class:`Family` record per family says everything else is derived from:

* ``kind``: ``"diffusion"`` (the five diffusion / flow backbones of the paper, Table 5) or
  ``"encoder"`` (non-diffusion image encoders, the paper's controls: ABDiv on their
  self-attention at ``t = 0``, no trajectory, no IEP, no student);
* ``adapter``: the :class:`~trace_edges.backbones.base.Backbone` subclass, ``"module:Class"``
  (imported lazily by :func:`trace_edges.backbones.backbone_class`);
* ``tiny_builder``: the name of the function of :mod:`trace_edges.backbones.tiny` making the tiny
  random model (``function(workdir) -> pipeline or model``, saved by ``build_tiny``; a bare name, not
  a registration: only the tiny builder resolves it, so loading an adapter never depends on it);
* ``tiny_marker``: the file a finished tiny build always has (what rules declare as its output):
  ``model_index.json`` for a diffusers pipeline, ``config.json`` for a transformers encoder.

The config schema's ``teacher.backbone.family`` enum must list the same names
(``tests/test_registry.py`` checks it); the ``build-tiny --family`` choices come from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trace_edges.errors import ConfigError

__all__ = ["DIFFUSION_FAMILIES", "ENCODER_FAMILIES", "FAMILIES", "Family", "family", "tiny_marker"]



@dataclass(frozen=True)
class Family:
    name: str
    kind: Literal["diffusion", "encoder"]
    adapter: str
    tiny_builder: str
    tiny_marker: str


#: family name -> its record, in the paper's order (diffusion families first).
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sd15", "diffusion", "trace_edges.backbones.sd15:SD15Backbone", "make_sd15", "model_index.json"),
    Family("sdxl", "diffusion", "trace_edges.backbones.sdxl:SDXLBackbone", "make_sdxl", "model_index.json"),
    Family("sd3", "diffusion", "trace_edges.backbones.sd3:SD3Backbone", "make_sd3", "model_index.json"),
    Family("pixart", "diffusion", "trace_edges.backbones.pixart:PixArtBackbone", "make_pixart",
           "model_index.json"),
    Family("flux", "diffusion", "trace_edges.backbones.flux:FluxBackbone", "make_flux", "model_index.json"),
    Family("dinov2", "encoder", "trace_edges.backbones.dinov2:Dinov2Backbone", "make_dinov2", "config.json"),
)}

DIFFUSION_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.kind == "diffusion")
ENCODER_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.kind == "encoder")


def family(name: str) -> Family:
    """The record of family ``name``; :class:`~trace_edges.errors.ConfigError` for an unknown one."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone family {name!r}", fix=f"use one of {list(FAMILIES)}") from None


def tiny_marker(name: str) -> str:
    """The file a finished tiny build of family ``name`` always has."""
    return family(name).tiny_marker
