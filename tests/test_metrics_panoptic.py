"""Panoptic quality: panopticapi oracle numbers on coco_mini, and each matching rule on tiny fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from trace_edges.errors import DataError
from trace_edges.io import read_json, write_json
from trace_edges.metrics.panoptic import (CategoryStats, image_pq_stats, is_ignored_prediction, is_match,
                                          pq_average, pq_compute, segment_iou)
from trace_edges.panoptic_io import write_panoptic_png

CATEGORIES = [{"id": 1, "name": "thing_a", "isthing": 1}, {"id": 2, "name": "thing_b", "isthing": 1},
              {"id": 3, "name": "stuff_c", "isthing": 0}]
CATS = {c["id"]: c for c in CATEGORIES}


@pytest.fixture(scope="module")
def mini(coco_mini):
    return {"gt_json": coco_mini / "annotations" / "panoptic_mini.json",
            "gt_dir": coco_mini / "annotations" / "panoptic_mini",
            "pred_json": coco_mini / "reference_eval" / "panoptic_pred.json",
            "ref": read_json(coco_mini / "reference_eval" / "reference_metrics.json")["panoptic"]}


@pytest.fixture(scope="module")
def mini_result(mini):
    # GT folder given explicitly, prediction folder by the panopticapi default (JSON path minus .json)
    return pq_compute(mini["gt_json"], mini["pred_json"], mini["gt_dir"], threads=1)


# --------------------------------------------------------------------- real data, oracle numbers

def test_all_things_stuff_equal_panopticapi(mini_result, mini):
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq"):
            assert mini_result[group][key] == pytest.approx(mini["ref"][group][key], abs=1e-6), (group, key)
        assert mini_result[group]["n"] == mini["ref"][group]["n"]
    assert (mini_result["All"]["n"], mini_result["Things"]["n"], mini_result["Stuff"]["n"]) == (59, 32, 27)


def test_every_per_class_value_equals_panopticapi(mini_result, mini):
    ref = mini["ref"]["per_class"]  # JSON keys are strings; pq_compute keys are int category ids
    assert len(ref) == 59
    for cat_id, values in ref.items():
        for key in ("pq", "sq", "rq"):
            assert mini_result["per_class"][int(cat_id)][key] == pytest.approx(values[key], abs=1e-6), (cat_id, key)
    # like panopticapi, per_class lists every GT category; the 74 absent ones are zeros
    assert len(mini_result["per_class"]) == 133
    absent = set(mini_result["per_class"]) - {int(k) for k in ref}
    assert len(absent) == 74
    assert all(mini_result["per_class"][c] == {"pq": 0.0, "sq": 0.0, "rq": 0.0} for c in absent)


def test_threads_two_is_identical(mini_result, mini):
    assert pq_compute(mini["gt_json"], mini["pred_json"], mini["gt_dir"], threads=2) == mini_result


def test_gt_against_itself_is_perfect(mini):
    result = pq_compute(mini["gt_json"], mini["gt_json"])  # both folders by default
    for group, n in (("All", 59), ("Things", 32), ("Stuff", 27)):
        assert result[group] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n}


def test_bad_threads(mini):
    with pytest.raises(ValueError):
        pq_compute(mini["gt_json"], mini["pred_json"], mini["gt_dir"], threads=0)


# ------------------------------------------------------------------ tiny fixtures through files

def write_panoptic(root, name: str, ids: np.ndarray, segments: list[dict], *, image_id: int = 1,
                   categories: list[dict] = CATEGORIES):
    """``root/name.json`` + ``root/name/img.png``: one image, one annotation, in COCO panoptic format."""
    write_panoptic_png(root / name / "img.png", ids)
    h, w = ids.shape
    write_json(root / f"{name}.json", {
        "images": [{"id": image_id, "height": h, "width": w, "file_name": "img.jpg"}],
        "categories": categories,
        "annotations": [{"image_id": image_id, "file_name": "img.png", "segments_info": segments}]})
    return root / f"{name}.json"


def gt_segments(ids: np.ndarray, spec: dict[int, tuple[int, int]]) -> list[dict]:
    """``spec``: segment id -> (category_id, iscrowd); area counted from ``ids``."""
    return [{"id": sid, "category_id": cat, "iscrowd": crowd, "area": int((ids == sid).sum())}
            for sid, (cat, crowd) in spec.items()]


def pred_segments(spec: dict[int, int]) -> list[dict]:
    return [{"id": sid, "category_id": cat} for sid, cat in spec.items()]


def score(tmp_path, gt_ids, gt_spec, pred_ids, pred_spec):
    gt = write_panoptic(tmp_path, "gt", gt_ids, gt_segments(gt_ids, gt_spec))
    pred = write_panoptic(tmp_path, "pred", pred_ids, pred_segments(pred_spec))
    return pq_compute(gt, pred)


def row(*runs: tuple[int, int]) -> np.ndarray:
    """A 1 x W id map from (segment id, length) runs."""
    return np.concatenate([np.full(n, sid, np.uint32) for sid, n in runs])[None, :]


def test_iou_exactly_half_is_not_a_match(tmp_path):
    # GT: 100 px of category 1 then 100 px of category 2; prediction: 200 px of category 1
    gt = row((1, 100), (2, 100))
    result = score(tmp_path, gt, {1: (1, 0), 2: (2, 0)}, row((7, 200)), {7: 1})
    assert result["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # IoU 100/200 = 0.5: FP + FN
    assert result["All"]["n"] == 2
    # control: one more GT pixel of category 1 makes IoU 101/200 > 0.5, a match
    gt = row((1, 101), (2, 99))
    result = score(tmp_path, gt, {1: (1, 0), 2: (2, 0)}, row((7, 200)), {7: 1})
    assert result["per_class"][1]["rq"] == 1.0 and result["per_class"][1]["sq"] == pytest.approx(101 / 200)


def test_void_pixels_are_excluded_from_union(tmp_path):
    # GT: 4 px of category 1 then 6 px void; prediction covers all 10 px
    result = score(tmp_path, row((1, 4), (0, 6)), {1: (1, 0)}, row((5, 10)), {5: 1})
    # IoU = 4 / (10 + 4 - 4 - 6) = 1, not 4 / 10
    assert result["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_prediction_mostly_on_same_category_crowd_is_not_fp(tmp_path):
    # GT: object (cat 1, 4 px), crowd of cat 1 (6 px); predictions: the object, and one on the crowd
    gt = row((1, 4), (2, 6))
    result = score(tmp_path, gt, {1: (1, 0), 2: (1, 1)}, row((5, 4), (6, 6)), {5: 1, 6: 1})
    assert result["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    # the same prediction on a crowd region of another category is a FP
    result = score(tmp_path, gt, {1: (1, 0), 2: (2, 1)}, row((5, 4), (6, 6)), {5: 1, 6: 1})
    assert result["per_class"][1]["rq"] == pytest.approx(1 / 1.5)


def test_prediction_mostly_on_void_is_not_fp(tmp_path):
    gt = row((1, 4), (0, 6))
    result = score(tmp_path, gt, {1: (1, 0)}, row((5, 4), (6, 6)), {5: 1, 6: 2})
    assert result["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # no TP/FP/FN at all
    assert result["All"]["n"] == 1 and result["All"]["pq"] == 1.0


def test_stuff_and_things_groups(tmp_path):
    gt = row((1, 4), (2, 6))
    result = score(tmp_path, gt, {1: (1, 0), 2: (3, 0)}, row((5, 4), (6, 6)), {5: 1, 6: 3})
    assert result["Things"]["n"] == 1 and result["Stuff"]["n"] == 1
    assert result["Stuff"]["pq"] == 1.0 and result["Things"]["pq"] == 1.0


# -------------------------------------------------------------------------------- errors

def test_png_segment_missing_from_json_raises(tmp_path):
    gt = write_panoptic(tmp_path, "gt", row((1, 10)), gt_segments(row((1, 10)), {1: (1, 0)}))
    pred = write_panoptic(tmp_path, "pred", row((5, 5), (6, 5)), pred_segments({5: 1}))
    with pytest.raises(DataError, match="segment id 6 is in the PNG but not in segments_info") as err:
        pq_compute(gt, pred)
    assert err.value.path == str(tmp_path / "pred" / "img.png") and err.value.fix


def test_json_segment_missing_from_png_raises(tmp_path):
    gt = write_panoptic(tmp_path, "gt", row((1, 10)), gt_segments(row((1, 10)), {1: (1, 0)}))
    pred = write_panoptic(tmp_path, "pred", row((5, 10)), pred_segments({5: 1, 9: 2}))
    with pytest.raises(DataError, match=r"\[9\] are in segments_info but not in the PNG"):
        pq_compute(gt, pred)


def test_unknown_category_raises(tmp_path):
    gt = write_panoptic(tmp_path, "gt", row((1, 10)), gt_segments(row((1, 10)), {1: (1, 0)}))
    pred = write_panoptic(tmp_path, "pred", row((5, 10)), pred_segments({5: 42}))
    with pytest.raises(DataError, match="unknown category_id 42"):
        pq_compute(gt, pred)


@pytest.mark.parametrize("threads", [1, 2])
def test_missing_prediction_png_raises(mini, tmp_path, threads):
    pred_json = read_json(mini["pred_json"])
    pred_json["annotations"][-1]["file_name"] = "not_there.png"
    path = tmp_path / "panoptic_pred.json"
    write_json(path, pred_json)
    with pytest.raises(DataError, match="prediction PNG") as err:  # also across worker processes
        pq_compute(mini["gt_json"], path, mini["gt_dir"], mini["pred_json"].with_suffix(""), threads=threads)
    assert err.value.path.endswith("not_there.png") and err.value.fix


def test_missing_prediction_for_gt_image_raises(mini, tmp_path):
    pred_json = read_json(mini["pred_json"])
    dropped = pred_json["annotations"].pop(3)["image_id"]
    path = tmp_path / "panoptic_pred.json"
    write_json(path, pred_json)
    with pytest.raises(DataError, match=f"no prediction for the image with id {dropped}") as err:
        pq_compute(mini["gt_json"], path, mini["gt_dir"], mini["pred_json"].with_suffix(""))
    assert err.value.path == str(path)


def test_missing_default_folder_raises(mini, tmp_path):
    path = tmp_path / "elsewhere.json"
    write_json(path, read_json(mini["pred_json"]))
    with pytest.raises(DataError, match="prediction PNG folder not found"):
        pq_compute(mini["gt_json"], path, mini["gt_dir"])


# ------------------------------------------------------------------ pure helpers, inline arrays

def test_rule_helpers():
    assert segment_iou(intersection=4, gt_area=4, pred_area=10, pred_on_void=6) == 1.0
    assert segment_iou(intersection=4, gt_area=4, pred_area=10, pred_on_void=0) == 0.4
    assert not is_match(0.5) and is_match(0.5000001)
    assert not is_ignored_prediction(pred_area=10, on_void=3, on_same_category_crowd=2)  # exactly half
    assert is_ignored_prediction(pred_area=10, on_void=3, on_same_category_crowd=3)


def test_image_stats_exactly_half_on_void_is_fp():
    gt = np.array([[1, 1, 1, 1, 1, 1, 0, 0, 0]], np.uint32)
    pred = np.array([[5, 5, 5, 6, 6, 6, 6, 6, 6]], np.uint32)  # segment 6: 3 px on void of 6
    stats = image_pq_stats(gt, pred, [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 6}],
                           [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}], CATS)
    assert stats[2] == CategoryStats(fp=1)
    assert stats[1] == CategoryStats(fp=1, fn=1)  # 3 / 6 = 0.5: no match


def test_image_stats_gt_area_comes_from_json():
    gt = np.array([[1, 1, 1, 1]], np.uint32)
    pred = np.array([[5, 5, 5, 5]], np.uint32)
    stats = image_pq_stats(gt, pred, [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 6}],
                           [{"id": 5, "category_id": 1, "area": 999}], CATS)
    assert stats[1].tp == 1 and stats[1].iou == pytest.approx(4 / 6)  # 4 / (4 + 6 - 4)


def test_image_stats_shape_mismatch_raises():
    with pytest.raises(DataError, match="GT image resolution"):
        image_pq_stats(np.zeros((2, 3), np.uint32), np.zeros((3, 2), np.uint32), [], [], CATS)


def test_pq_average_skips_empty_classes_and_nan_for_empty_group():
    stats = {1: CategoryStats(iou=1.5, tp=2, fp=1, fn=1), 2: CategoryStats()}
    summary, per_class = pq_average(stats, CATS, isthing=True)
    assert summary == {"pq": 0.5, "sq": 0.75, "rq": pytest.approx(2 / 3), "n": 1}
    assert per_class[2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    stuff, _ = pq_average(stats, CATS, isthing=False)
    assert stuff["n"] == 0 and np.isnan(stuff["pq"])
