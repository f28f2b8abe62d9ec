"""Boundary-guided propagation (BGP, paper §3.5): split -> propagate -> merge.

``run_bgp(masks, scores, edge, params)`` turns a baseline's instance proposals and an edge map
(``float [H, W]`` in [0, 1]) into refined proposals:

1. walls = ``edge_walls(edge, **params["edge_threshold"])``;
2. split every mask at the walls (connected components, small pieces dropped, a swallowed mask
   kept as is) -- pieces inherit the parent's score;
3. propagate every piece with the IRN random walk inside the edge boundaries (optional);
4. merge iteratively while IoU > tau (union, score = max);
5. sort by score (descending, stable) and keep ``max_masks``.

``params`` is the ``bgp`` block of ``schemas/config.schema.yaml`` (validated here, defaults
filled in). See docs/bgp.md for every choice the paper leaves open.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from trace_edges.bgp.merge import merge_masks, pairwise_intersections
from trace_edges.bgp.propagate import build_transition, propagate_masks
from trace_edges.bgp.split import split_mask, split_masks
from trace_edges.bgp.walls import check_edge, edge_walls

__all__ = [
    "run_bgp", "bgp_stages", "bgp_params", "edge_walls", "split_mask", "split_masks",
    "build_transition", "propagate_masks", "merge_masks", "pairwise_intersections",
]


def validated_block(block: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate one config block (``bgp``, ``wps``, ...) and fill in the schema defaults.
    Memoised on the JSON of ``params``: schema validation costs ~0.2 s per call."""
    return copy.deepcopy(_validated(block, json.dumps(dict(params or {}), sort_keys=True, default=str)))


@lru_cache(maxsize=128)
def _validated(block: str, key: str) -> dict[str, Any]:
    from trace_edges.config import validate

    return validate(json.loads(key), block=block, where=f"{block} params")


def bgp_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a ``bgp`` block and fill in the schema defaults."""
    return validated_block("bgp", params)


def _check_inputs(masks, scores, edge):
    e = check_edge(edge)
    masks = [np.asarray(m, dtype=bool) for m in masks]
    for m in masks:
        if m.shape != e.shape:
            raise ValueError(f"BGP: mask shape {m.shape} != edge shape {e.shape}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(masks):
        raise ValueError(f"BGP: {len(masks)} masks but {len(scores)} scores")
    return masks, scores, e


def _top(masks, scores, n):
    order = np.argsort(-scores, kind="stable")[:n]
    return [masks[i] for i in order], scores[order]


def bgp_stages(masks: Sequence[np.ndarray], scores: Sequence[float], edge: np.ndarray,
               params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run BGP and return every intermediate result (for the paper's Fig. 6 style figure).

    Keys: ``walls`` (bool [H, W]); ``split`` = ``(pieces, scores, parent)``; ``propagated`` =
    ``(masks, scores)`` (equal to the split pieces when propagation is disabled); ``merged`` =
    ``(masks, scores)``; ``final`` = ``(masks, scores)`` sorted by score, at most ``max_masks``;
    ``params`` = the validated block.
    """
    p = bgp_params(params)
    masks, scores, e = _check_inputs(masks, scores, edge)
    walls = edge_walls(e, **p["edge_threshold"])
    pieces, pscores, parent = split_masks(masks, scores, walls, **p["split"])
    prop = dict(p["propagate"])
    if prop.pop("enabled") and pieces:
        propagated = propagate_masks(pieces, e, **prop)
    else:
        propagated = [m.copy() for m in pieces]
    merged, mscores = merge_masks(propagated, pscores, iou=p["merge"]["iou"])
    final, fscores = _top(merged, mscores, p["max_masks"])
    return {
        "params": p,
        "walls": walls,
        "split": (pieces, pscores, parent),
        "propagated": (propagated, pscores.copy()),
        "merged": (merged, mscores),
        "final": (final, fscores),
    }


def run_bgp(masks: Sequence[np.ndarray], scores: Sequence[float], edge: np.ndarray,
            params: Mapping[str, Any] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Refine instance proposals with an edge map: split -> propagate -> merge -> top-k.

    Returns ``(masks, scores)``: boolean ``[H, W]`` masks sorted by descending score (ties keep
    list order), at most ``params["max_masks"]`` of them.
    """
    return bgp_stages(masks, scores, edge, params)["final"]
