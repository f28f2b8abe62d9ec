"""ORACLE edge source ``oracle_gt``: the instance-edge ground truth itself, offered as an edge map.

It is the upper bound of every edge source for BGP (UIS) and WPS, as the ``oracle_gt`` semantic
source already is for WPS: what the grouping reaches when its edges are perfect. Its maps are the
prepare stage's ``edge_gt/<id>.png`` (:mod:`trace_edges.data.edge_gt`, with the run's
``edge_gt`` options: thinned by default), 1.0 on a GT edge pixel, else 0.0. Every table and
figure labels it ORACLE (:func:`trace_edges.edges.display_name`); its ODS/OIS against the same GT
are 1.0 by construction (a check of the scorer, not a result).

It reads the data manifest's GT, not pixels, so it exists only through the edges stage on a
dataset with ground truth; the workflow leaves it out of an images-only run.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from trace_edges.data.images import read_png
from trace_edges.edges.base import EdgeSource
from trace_edges.errors import ConfigError, DataError
from trace_edges.io import sha256_file


class OracleGTSource(EdgeSource):
    """The instance-edge GT of each image as a binary map (ORACLE)."""

    name = "oracle_gt"
    DEFAULTS: Mapping[str, Any] = {}
    needs_ground_truth = True

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        raise ConfigError("edge source 'oracle_gt' (ORACLE) reads an image's ground truth, not its pixels",
                          fix="run it through the edges stage on a dataset with ground truth (its data manifest "
                              "names each image's edge_gt map)")

    def compute_record(self, rec: Mapping[str, Any]) -> np.ndarray:
        path = rec.get("edge_gt")
        if path is None:
            raise DataError(f"image {rec.get('id')} has no instance-edge ground truth (edge_gt)",
                            path=rec.get("file"), fix="the ORACLE source needs a dataset with ground truth "
                                                      "(data.dataset: coco_mini or coco2017_val)")
        gt = read_png(path, what="edge GT")
        shape = (int(rec["height"]), int(rec["width"]))
        if gt.ndim != 2 or gt.shape != shape:
            raise DataError(f"edge GT has shape {gt.shape}, expected the image size {shape}", path=path,
                            fix="rerun the prepare stage")
        return (gt > 0).astype(np.float32)

    def record_key(self, rec: Mapping[str, Any]) -> Any:
        """The GT map's own content (prepare's edge_gt options change it, not the image)."""
        return [rec.get("sha256"), sha256_file(rec["edge_gt"]) if rec.get("edge_gt") else None]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "oracle": True}


__all__ = ["OracleGTSource"]
