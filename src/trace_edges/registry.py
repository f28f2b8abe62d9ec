"""Lazy ``"package.module:attribute"`` references, shared by the name registries.

The registries (:mod:`trace_edges.families`, :mod:`trace_edges.edges`,
:mod:`trace_edges.proposals`) name their implementations by import path so that listing the
names (the Snakefile does at parse time) never imports torch, diffusers or scikit-image.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["resolve"]


def resolve(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:attribute', got {target!r}")
    return getattr(importlib.import_module(module), attr)
