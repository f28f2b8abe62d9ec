"""Base instance proposals for UIS, behind one small registry (:data:`PROPOSERS`).

* ``felzenszwalb``: :func:`~trace_edges.proposals.felzenszwalb.felzenszwalb_proposals`
  ``(rgb uint8 [H, W, 3], params) -> (masks, scores)``, per image, training-free;
* ``maskcut``: :func:`~trace_edges.proposals.maskcut.maskcut_proposals`, the same per-image
  signature: MaskCut (CutLER's iterative normalized cut on DINO ViT keys); the ViT is loaded once
  per process (:mod:`~trace_edges.proposals.vit`), the cut itself is :mod:`~trace_edges.proposals.ncut`;
* ``external``: :func:`~trace_edges.proposals.external.load_external`
  ``(path, image_ids, *, min_score, sizes) -> {image_id: [(mask, score), ...]}``, a COCO results
  JSON from MaskCut / ProMerge / CutLER, read once for the whole image list.

Each method also has a ``stage_plan(block, images) -> ProposalPlan``: what the proposals stage
(:func:`trace_edges.stages.proposals.run_proposals`) needs to run it over a manifest's images
(the block as run, the per-image proposer, the cache key, extra inputs, the model). The config
schema's ``proposals.method`` enum must list the same names (``tests/test_registry.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from trace_edges.errors import ConfigError
from trace_edges.registry import resolve

from trace_edges.proposals.plan import ProposalPlan

__all__ = ["PROPOSERS", "ProposalPlan", "Proposer", "get_proposer", "stage_plan"]


@dataclass(frozen=True)
class Proposer:
    #: ``"module:function"``: the proposal function (:func:`get_proposer`)
    function: str
    #: ``"module:function"``: ``(block, images) -> ProposalPlan`` for the proposals stage
    plan: str


#: method name -> its functions (imported lazily: scikit-image / transformers only when needed)
PROPOSERS: dict[str, Proposer] = {
    "felzenszwalb": Proposer("trace_edges.proposals.felzenszwalb:felzenszwalb_proposals",
                             "trace_edges.proposals.felzenszwalb:stage_plan"),
    "maskcut": Proposer("trace_edges.proposals.maskcut:maskcut_proposals",
                        "trace_edges.proposals.maskcut:stage_plan"),
    "external": Proposer("trace_edges.proposals.external:load_external",
                         "trace_edges.proposals.external:stage_plan"),
}


def _entry(method: str) -> Proposer:
    try:
        return PROPOSERS[method]
    except KeyError:
        raise ConfigError(f"unknown proposals.method {method!r}; known: {sorted(PROPOSERS)}") from None


def get_proposer(method: str) -> Callable:
    """The proposal function registered under ``method`` (see the module docstring for the two
    call signatures). Raises :class:`ConfigError` for an unknown method."""
    return resolve(_entry(method).function)


def stage_plan(method: str, block: Mapping[str, Any], images: Sequence[Mapping[str, Any]]) -> ProposalPlan:
    """``method`` made ready to run over ``images`` (manifest records) with its config ``block``."""
    return resolve(_entry(method).plan)(dict(block), images)
