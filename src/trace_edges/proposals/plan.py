"""What a proposal method hands the proposals stage: its own small module, so the methods
(felzenszwalb, maskcut, external) need not import the registry that names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence


@dataclass
class ProposalPlan:
    """One method made ready to run over a manifest's image records."""

    #: the method's config block as run (provenance and cache key)
    params: dict[str, Any]
    #: image record -> (masks, scores)
    propose: Callable[[Mapping[str, Any]], tuple[Sequence[Any], Sequence[float]]]
    #: image record -> the parts of its cache key (besides the stage and params)
    key_parts: Callable[[Mapping[str, Any]], Any]
    #: files read besides the manifest (provenance)
    inputs: list[Any] = field(default_factory=list)
    #: the model's provenance record, if the method runs one
    model: dict[str, Any] | None = None


__all__ = ["ProposalPlan"]
