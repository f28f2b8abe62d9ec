"""Base proposals: multi-scale Felzenszwalb (known answer) and the external COCO-results loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trace_edges.errors import ConfigError, DataError
from trace_edges.masks import decode_rle, encode_rle
from trace_edges.proposals import get_proposer
from trace_edges.proposals.external import load_external
from trace_edges.proposals.felzenszwalb import felzenszwalb_params, felzenszwalb_proposals


def iou(a, b):
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def two_disc_image():
    """A red and a blue disc on a dull, slightly noisy background with a faint step."""
    shape = (160, 200)
    rng = np.random.default_rng(0)
    img = np.empty(shape + (3,), dtype=np.float64)
    img[:] = (110, 120, 100)
    img[:, 100:] += (8, 4, 0)  # a faint background step: extra low-contrast regions
    d1, d2 = disc(shape, 50, 55, 26), disc(shape, 100, 140, 30)
    img[d1] = (220, 30, 30)
    img[d2] = (30, 40, 210)
    img += rng.normal(0, 2.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), d1, d2


def test_two_discs_are_the_top_proposals():
    rgb, d1, d2 = two_disc_image()
    masks, scores = felzenszwalb_proposals(rgb)  # schema defaults
    assert len(masks) >= 3
    assert np.all(np.diff(scores) <= 0) and np.all((scores > 0) & (scores <= 1))
    match = [max(iou(m, d1), iou(m, d2)) > 0.85 for m in masks]
    first_other = match.index(False)
    rank1 = next(k for k, m in enumerate(masks) if iou(m, d1) > 0.85)
    rank2 = next(k for k, m in enumerate(masks) if iou(m, d2) > 0.85)
    assert max(rank1, rank2) < first_other  # both discs outrank every other region
    assert scores[max(rank1, rank2)] > 0.5  # contrast above Delta E 20
    keys = {np.packbits(m).tobytes() for m in masks}
    assert len(keys) == len(masks)  # exact duplicates across scales removed
    same, _ = felzenszwalb_proposals(rgb, {"scales": [300, 300]})
    once, _ = felzenszwalb_proposals(rgb, {"scales": [300]})
    assert len(same) == len(once)


def test_filters_and_limits():
    rgb, d1, d2 = two_disc_image()
    masks, _ = felzenszwalb_proposals(rgb, {"scales": [300], "max_per_image": 1})
    assert len(masks) == 1
    def borders(m):
        return int(m[0].any()) + int(m[-1].any()) + int(m[:, 0].any()) + int(m[:, -1].any())

    # the two background halves touch 3 borders each -> never proposals with max_borders = 2
    masks, _ = felzenszwalb_proposals(rgb, {"scales": [300], "max_area_frac": 1.0})
    assert all(borders(m) <= 2 for m in masks)
    masks, _ = felzenszwalb_proposals(rgb, {"scales": [300], "max_area_frac": 1.0, "max_borders": 4})
    assert any(borders(m) == 3 for m in masks)
    # area filter: discs cover ~7% and ~9%; a 10% minimum removes them
    masks, _ = felzenszwalb_proposals(rgb, {"scales": [300], "min_area_frac": 0.1})
    assert all(iou(m, d1) < 0.5 and iou(m, d2) < 0.5 for m in masks)
    # deterministic
    a, sa = felzenszwalb_proposals(rgb, {"scales": [100, 300]})
    b, sb = felzenszwalb_proposals(rgb, {"scales": [100, 300]})
    assert np.array_equal(sa, sb) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_params_validation():
    p = felzenszwalb_params({})
    assert p["scales"] == [300, 1000] and p["ring_px"] == 5 and p["max_per_image"] == 100
    with pytest.raises(ConfigError):
        felzenszwalb_params({"scale": 3})
    with pytest.raises(ValueError):
        felzenszwalb_proposals(np.zeros((10, 10), dtype=np.uint8), {})


def test_registry():
    assert get_proposer("felzenszwalb") is felzenszwalb_proposals
    assert get_proposer("external") is load_external
    with pytest.raises(ConfigError, match="maskcut"):  # the message lists the known methods
        get_proposer("normalized_cut")


# --------------------------------------------------------------------------------------------
# external loader
# --------------------------------------------------------------------------------------------

def write(tmp_path, obj, name="props.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_external_rle_polygons_and_sorting(tmp_path):
    H, W = 20, 30
    m1 = np.zeros((H, W), bool)
    m1[2:8, 3:12] = True
    m2 = np.zeros((H, W), bool)
    m2[10:18, 5:25] = True
    res = [
        {"image_id": 1, "segmentation": encode_rle(m1), "score": 0.3, "category_id": 1},
        {"image_id": 1, "segmentation": encode_rle(m2), "score": 0.9},
        {"image_id": 2, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "score": 0.5},
        {"image_id": 2, "segmentation": encode_rle(np.zeros((H, W), bool)), "score": 0.05},
        {"image_id": 1, "segmentation": {"size": [H, W], "counts": [5, 10, H * W - 15]}, "score": 0.9},
    ]
    path = write(tmp_path, res)
    out = load_external(path, [1, 2, 3], min_score=0.1, sizes={1: (H, W), 2: (H, W), 3: (H, W)})
    assert set(out) == {1, 2, 3} and out[3] == []
    assert [s for _, s in out[1]] == [0.9, 0.9, 0.3]  # sorted, ties in file order
    assert np.array_equal(out[1][0][0], m2) and np.array_equal(out[1][2][0], m1)
    third = out[1][1][0]
    assert third.sum() == 10 and third.T.ravel()[5:15].all()  # uncompressed RLE, column-major
    assert len(out[2]) == 1  # the 0.05 entry is below min_score
    poly = out[2][0][0]
    assert poly.shape == (H, W) and poly[5, 5] and not poly[15, 15]
    rles = load_external(path, [1, 2], sizes={2: (H, W)}, decode=False)
    assert np.array_equal(decode_rle(rles[1][0][0]), m2)
    assert isinstance(rles[1][0][0]["counts"], str)


@pytest.mark.parametrize("payload, match", [
    ({"annotations": []}, "must be a list"),
    ([["not", "a", "dict"]], "entry 0: expected an object"),
    ([{"image_id": 1, "score": 0.5}], "missing key"),
    ([{"image_id": 7, "segmentation": [[0, 0, 5, 0, 5, 5]], "score": 0.5}], "unknown image_id 7"),
    ([{"image_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]], "score": "high"}], "score must be"),
    ([{"image_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]], "score": 0.5}], "needs the image size"),
    ([{"image_id": 1, "segmentation": [[0, 0, 5]], "score": 0.5}], "polygon"),
    ([{"image_id": 1, "segmentation": {"size": [4, 4], "counts": 3}, "score": 0.5}], "counts"),
    ([{"image_id": 1, "segmentation": {"size": [4], "counts": "00"}, "score": 0.5}], "size"),
    ([{"image_id": "1", "segmentation": {"size": [4, 4], "counts": "0"}, "score": 0.5}], "integer"),
])
def test_external_errors_name_the_file(tmp_path, payload, match):
    path = write(tmp_path, payload)
    with pytest.raises(DataError, match=match) as ei:
        load_external(path, [1])
    assert str(path) in str(ei.value)


def test_external_size_mismatch_and_bad_files(tmp_path):
    m = np.zeros((10, 12), bool)
    m[1:3, 1:3] = True
    path = write(tmp_path, [{"image_id": 1, "segmentation": encode_rle(m), "score": 1.0}])
    with pytest.raises(DataError, match="RLE size"):
        load_external(path, [1], sizes={1: (12, 10)})
    bad = tmp_path / "trunc.json"
    bad.write_text('[{"image_id": 1, "segm')
    with pytest.raises(DataError, match="not valid JSON"):
        load_external(bad, [1])
    with pytest.raises(DataError, match="not found"):
        load_external(tmp_path / "missing.json", [1])
