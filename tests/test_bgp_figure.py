"""Paper Fig. 6 analogue: the BGP steps drawn are the ones the bgp stage computes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trace_edges.bgp import bgp_params, run_bgp
from trace_edges.edges.store import save_edge_map, write_manifest
from trace_edges.errors import DataError
from trace_edges.io import write_json
from trace_edges.report.bgp_figure import bgp_figure, bgp_steps_for_image
from trace_edges.stages._results import results_for_image


@pytest.fixture()
def scene(tmp_path):
    """A 64x96 image, two touching squares proposed as one mask, an edge line between them."""
    h, w = 64, 96
    rgb = np.full((h, w, 3), 200, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    left, right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    left[16:48, 16:48], right[16:48, 48:80] = True, True
    edge = np.zeros((h, w), np.float32)
    edge[16:48, 47:49] = 1.0
    edge[15, 16:80] = edge[48, 16:80] = 1.0
    (tmp_path / "edges").mkdir()
    save_edge_map(tmp_path / "edges" / "7.png", edge)
    write_manifest(tmp_path / "edges", "unit", {7: "7.png"}, {"stage": "unit-test"})
    write_json(tmp_path / "proposals.json", results_for_image(7, [left | right, left], [0.9, 0.5]))
    manifest = {"images": [{"id": 7, "file": str(tmp_path / "img.png"), "height": h, "width": w,
                            "sha256": "0" * 64, "file_name": "img.png", "edge_gt": "unused.png"}], "gt": {}}
    write_json(tmp_path / "manifest.json", manifest)
    return tmp_path, [left | right, left], [0.9, 0.5], edge


def test_steps_end_in_the_stage_output_and_figure_is_written(scene):
    tmp, masks, scores, edge = scene
    params = bgp_params({"split": {"min_area": 16}, "propagate": {"stride": 2}})
    d = bgp_steps_for_image(tmp / "manifest.json", tmp / "proposals.json", tmp / "edges", params, 7)
    ref_masks, ref_scores = run_bgp(masks, scores, d["edge"], params)
    final, fscores = d["stages"]["final"]
    assert len(final) == len(ref_masks) and all(np.array_equal(a, b) for a, b in zip(final, ref_masks))
    assert np.allclose(fscores, ref_scores)
    assert len(d["stages"]["split"][0]) > len(masks)          # the wall splits the merged proposal
    counts = bgp_figure(tmp / "manifest.json", tmp / "proposals.json", tmp / "edges", params,
                        tmp / "f.png", tmp / "f.pdf", image_id=7, edge_label="unit", dpi=60)
    assert counts["proposals"] == 2 and counts["split"] == len(d["stages"]["split"][0])
    img = np.asarray(Image.open(tmp / "f.png"))
    assert img.shape[1] > img.shape[0] and img.std() > 0 and (tmp / "f.pdf").stat().st_size > 1000
    with pytest.raises(DataError, match="not in"):
        bgp_steps_for_image(tmp / "manifest.json", tmp / "proposals.json", tmp / "edges", params, 8)
