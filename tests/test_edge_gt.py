"""Instance-edge ground truth from panoptic id maps, on tiny hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from trace_edges.data.edge_gt import (
    PanopticEdgeGT, crowd_ids_of, edge_gt_from_panoptic, load_edge_gts,
)
from trace_edges.errors import DataError


def B(rows: str) -> np.ndarray:
    """Boolean map from lines of 0/1."""
    return np.array([[c == "1" for c in r.strip()] for r in rows.strip().splitlines()])


IDS = np.array([
    [1, 1, 2, 2],
    [1, 1, 2, 2],
    [0, 0, 3, 3],
    [0, 0, 3, 3],
])


def test_right_or_lower_neighbour_rule():
    expected = B("""
        0100
        1111
        0100
        0100
    """)
    assert np.array_equal(edge_gt_from_panoptic(IDS), expected)


def test_single_segment_has_no_edges_and_border_is_not_an_edge():
    assert not edge_gt_from_panoptic(np.full((5, 7), 9)).any()
    assert not edge_gt_from_panoptic(np.zeros((3, 3), np.uint32)).any()


def test_exclude_void():
    # the pairs 1|0 below row 1 and 0|3 right of column 1 go; 1|2 and 2|3 remain
    expected = B("""
        0100
        0111
        0000
        0000
    """)
    assert np.array_equal(edge_gt_from_panoptic(IDS, include_void=False), expected)


def test_exclude_crowd():
    # segment 3 is crowd: only the 1|2 boundary and the pairs with void not touching 3 remain
    expected = B("""
        0100
        1100
        0000
        0000
    """)
    got = edge_gt_from_panoptic(IDS, crowd_ids=[3], include_crowd=False)
    assert np.array_equal(got, expected)
    # crowd ids are ignored when crowd boundaries are included
    assert np.array_equal(edge_gt_from_panoptic(IDS, crowd_ids=[3]), edge_gt_from_panoptic(IDS))
    both = edge_gt_from_panoptic(IDS, crowd_ids=[3], include_crowd=False, include_void=False)
    assert np.array_equal(both, B("0100\n0100\n0000\n0000"))


def test_diagonal_boundary_is_a_4_connected_staircase():
    ids = np.tril(np.ones((4, 4), int)) + 1  # 2 on/below the diagonal, 1 above
    expected = B("""
        1100
        0110
        0011
        0000
    """)
    # (0,0): right (0,1)=1 differs; (0,1): lower (1,1)=2 differs; (1,0): both neighbours 2 ...
    assert np.array_equal(edge_gt_from_panoptic(ids), expected)


def test_input_validation():
    with pytest.raises(ValueError, match="2-D"):
        edge_gt_from_panoptic(np.zeros((2, 2, 3), int))
    with pytest.raises(ValueError, match="integer"):
        edge_gt_from_panoptic(np.zeros((2, 2)))


def test_crowd_ids_of():
    info = [{"id": 5, "iscrowd": 0}, {"id": 7, "iscrowd": 1}, {"id": 3}]
    assert crowd_ids_of(info) == [7]


def test_load_edge_gts_on_coco_mini(coco_mini):
    ann = coco_mini / "annotations"
    gts = load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", image_ids=[397133, 6818])
    assert list(gts) == [397133, 6818]
    for g in gts.values():
        assert g.dtype == bool and g.any() and g.mean() < 0.1
    assert gts[397133].shape == (427, 640)
    no_void = load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", image_ids=[397133],
                            include_void=False)[397133]
    assert no_void.sum() < gts[397133].sum() and not (no_void & ~gts[397133]).any()
    with pytest.raises(DataError, match="no panoptic annotation"):
        load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", image_ids=[1])


def test_loaded_gt_thin_option_is_the_bsds_thinning(coco_mini):
    """thin=True (the workflow's edge_gt.thin) is binary_thin of the raw map: a strict subset that
    drops the staircase corners, with and without void boundaries."""
    from pyEdgeEval.preprocess import binary_thin

    ann = coco_mini / "annotations"
    for void in (True, False):
        kw = dict(image_ids=[6818], include_void=void)
        raw = load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", **kw)[6818]
        thin = load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", thin=True, **kw)[6818]
        lazy = PanopticEdgeGT(ann / "panoptic_mini.json", ann / "panoptic_mini", thin=True, **kw)[6818]
        assert np.array_equal(thin, binary_thin(raw).astype(bool)) and np.array_equal(lazy, thin)
        assert 0 < thin.sum() < raw.sum() and not (thin & ~raw).any()


def test_lazy_gt_mapping(coco_mini):
    ann = coco_mini / "annotations"
    lazy = PanopticEdgeGT(ann / "panoptic_mini.json", ann / "panoptic_mini")
    assert len(lazy) == 16 and list(lazy) == sorted(lazy)
    assert 397133 in lazy and "397133" in lazy and 1 not in lazy and "x" not in lazy
    eager = load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", image_ids=[6818])
    assert np.array_equal(lazy[6818], eager[6818])
    with pytest.raises(KeyError):
        lazy[1]
