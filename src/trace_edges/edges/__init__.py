"""Edge sources behind one interface, and the one on-disk format for their maps.

``get_edge_source(name, params).compute(rgb) -> float32[H, W] in [0, 1]``. Sources are registered
by name; a registration may be a class or a lazy ``"module:Class"`` string, so listing the
sources never imports heavy dependencies (torch, diffusers) of sources that are not used.
Downstream code reads stored maps only through :mod:`trace_edges.edges.store`.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from trace_edges.edges.base import EdgeSource
from trace_edges.errors import ConfigError

__all__ = ["EdgeSource", "available_sources", "get_edge_source", "register_source"]

_REGISTRY: dict[str, type[EdgeSource] | str] = {
    "sobel": "trace_edges.edges.gradient:SobelSource",
    "canny": "trace_edges.edges.gradient:CannySource",
    "trace_teacher": "trace_edges.teacher.source:TeacherEdgeSource",
    "trace_student": "trace_edges.student.source:StudentEdgeSource",
}


def register_source(name: str, cls: type[EdgeSource] | str, *, replace: bool = False) -> None:
    """Register an edge source class (or a lazy ``"package.module:ClassName"`` path) under ``name``."""
    if not replace and name in _REGISTRY and _REGISTRY[name] != cls:
        raise ValueError(f"edge source {name!r} is already registered")
    _REGISTRY[name] = cls


def available_sources() -> list[str]:
    """Names of every registered edge source (sorted)."""
    return sorted(_REGISTRY)


def _resolve(name: str) -> type[EdgeSource]:
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown edge source {name!r}",
                          fix=f"choose one of {available_sources()}") from None
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = entry
    if entry.name != name:
        raise RuntimeError(f"edge source class {entry.__name__} has name {entry.name!r}, "
                           f"registered as {name!r}")
    return entry


def get_edge_source(name: str, params: Mapping[str, Any] | None = None) -> EdgeSource:
    """Construct the source ``name`` from its config block (``edges.<name>``; missing keys = defaults)."""
    return _resolve(name)(params)
