"""Base instance proposals for UIS, behind one small registry.

* ``felzenszwalb``: :func:`~trace_edges.proposals.felzenszwalb.felzenszwalb_proposals`
  ``(rgb uint8 [H, W, 3], params) -> (masks, scores)``, per image, training-free;
* ``maskcut``: :func:`~trace_edges.proposals.maskcut.maskcut_proposals`, the same per-image
  signature: MaskCut (CutLER's iterative normalized cut on DINO ViT keys); the ViT is loaded once
  per process (:mod:`~trace_edges.proposals.vit`), the cut itself is :mod:`~trace_edges.proposals.ncut`;
* ``external``: :func:`~trace_edges.proposals.external.load_external`
  ``(path, image_ids, *, min_score, sizes) -> {image_id: [(mask, score), ...]}``, a COCO results
  JSON from MaskCut / ProMerge / CutLER, read once for the whole image list.
"""

from __future__ import annotations

from typing import Callable

from trace_edges.errors import ConfigError

__all__ = ["PROPOSERS", "get_proposer"]

#: method name -> "module:function" (imported lazily: scikit-image / transformers only when needed)
PROPOSERS: dict[str, str] = {
    "felzenszwalb": "trace_edges.proposals.felzenszwalb:felzenszwalb_proposals",
    "maskcut": "trace_edges.proposals.maskcut:maskcut_proposals",
    "external": "trace_edges.proposals.external:load_external",
}


def get_proposer(method: str) -> Callable:
    """The proposal function registered under ``method`` (see the module docstring for the two
    call signatures). Raises :class:`ConfigError` for an unknown method."""
    try:
        target = PROPOSERS[method]
    except KeyError:
        raise ConfigError(f"unknown proposals.method {method!r}; known: {sorted(PROPOSERS)}") from None
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)
