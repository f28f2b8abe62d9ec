"""The edge-source interface.

An *edge source* turns one RGB image into an edge map: ``float32[H, W]`` in ``[0, 1]`` at the
image's own resolution, larger = more likely an (instance) edge. Sobel and Canny
(:mod:`trace_edges.edges.gradient`) are the classical baselines; the TRACE teacher and student are
added later as further sources registered the same way (:func:`trace_edges.edges.register_source`).

Consumers (BGP, WPS, scoring) never call a source directly and never special-case one: the edges
stage writes every source's maps with :mod:`trace_edges.edges.store` and everything downstream
reads them back through :class:`trace_edges.edges.store.EdgeSet`.

A subclass declares ``name`` and ``DEFAULTS`` (the defaults of its block in
``schemas/config.schema.yaml``; a test keeps the two equal) and implements :meth:`_compute`.
:meth:`EdgeSource.compute` validates the input image and the returned map, so a buggy source
fails loudly at the image that broke it instead of writing an out-of-range map.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import numpy as np

from trace_edges.errors import ConfigError


class EdgeSource(ABC):
    """Base class of every edge source; construct with its config block (missing keys = defaults)."""

    #: registry name, e.g. ``"sobel"``
    name: ClassVar[str] = ""
    #: parameter defaults; must equal the defaults of ``edges.<name>`` in the config schema
    DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    #: reads each image's ground truth instead of (only) its pixels (the ORACLE source): refused on
    #: a dataset without GT; the registry records the same flag (``SourceEntry.needs_gt``)
    needs_ground_truth: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any] | None = None):
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.DEFAULTS))
        if unknown:
            raise ConfigError(
                f"edge source {self.name!r}: unknown parameter(s) {unknown}",
                fix=f"allowed parameters: {sorted(self.DEFAULTS)} (see edges.{self.name} in "
                    "src/trace_edges/schemas/config.schema.yaml)")
        merged = {**self.DEFAULTS, **params}
        self.params: dict[str, Any] = merged
        self._check_params(merged)

    # -- to implement --------------------------------------------------------------------------
    def _check_params(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` for invalid parameter values (schema checks come first)."""

    @abstractmethod
    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        """Edge map of a validated ``uint8[H, W, 3]`` image (any float dtype, values in [0, 1])."""

    # -- public --------------------------------------------------------------------------------
    def compute(self, rgb: np.ndarray) -> np.ndarray:
        """Edge map ``float32[H, W]`` in ``[0, 1]`` of an RGB ``uint8[H, W, 3]`` image."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
            raise ValueError(f"edge source {self.name!r}: expected a uint8 [H, W, 3] RGB image, "
                             f"got {rgb.dtype} {rgb.shape}")
        out = np.asarray(self._compute(rgb))
        if out.shape != rgb.shape[:2]:
            raise RuntimeError(f"edge source {self.name!r} returned shape {out.shape}, "
                               f"expected the image size {rgb.shape[:2]}")
        if not np.issubdtype(out.dtype, np.floating) and out.dtype != bool:
            raise RuntimeError(f"edge source {self.name!r} returned dtype {out.dtype}, expected float")
        out = out.astype(np.float32, copy=False)
        if not np.all(np.isfinite(out)):
            raise RuntimeError(f"edge source {self.name!r} returned non-finite values")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise RuntimeError(f"edge source {self.name!r} returned values in [{lo}, {hi}], "
                               "expected [0, 1]")
        return np.clip(out, 0.0, 1.0, out=out)

    def compute_record(self, rec: Mapping[str, Any]) -> np.ndarray:
        """Edge map of one data-manifest record (what the edges stage calls): by default
        :meth:`compute` on the image file's pixels; a source reading the GT overrides it."""
        from trace_edges.data.images import load_rgb

        return self.compute(load_rgb(rec["file"]))

    def record_key(self, rec: Mapping[str, Any]) -> Any:
        """What identifies the inputs of :meth:`compute_record` (part of the per-image cache key):
        the image's sha256 from the data manifest."""
        return rec.get("sha256")

    def describe(self) -> dict[str, Any]:
        """What produced the maps, for provenance: source name and full parameter set.

        Learned sources extend this with their model identity (checkpoint digest, backbone, ...).
        """
        return {"source": self.name, "params": dict(self.params)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"
