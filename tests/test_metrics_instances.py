"""Instance AP: pycocotools oracle numbers on coco_mini, class-agnostic collapse, input errors, crowd."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trace_edges.errors import DataError
from trace_edges.io import read_json, write_json
from trace_edges.masks import ann_to_mask, bbox_xywh, encode_rle
from trace_edges.metrics.instances import (STAT_NAMES, evaluate_instances, make_class_agnostic,
                                           rle_counts_valid)


@pytest.fixture(scope="module")
def files(coco_mini):
    return {"gt": coco_mini / "annotations" / "instances_mini.json",
            "res": coco_mini / "reference_eval" / "instances_pred_results.json",
            "ref": read_json(coco_mini / "reference_eval" / "reference_metrics.json")}


def gt_as_results(gt: dict) -> list[dict]:
    """Every non-crowd GT instance as a score-1 detection (its mask as RLE, its GT box)."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    out = []
    for ann in gt["annotations"]:
        if ann["iscrowd"]:
            continue
        mask = ann_to_mask(ann["segmentation"], *sizes[ann["image_id"]])
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0,
                    "segmentation": encode_rle(mask), "bbox": ann["bbox"]})
    return out


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_matches_pycocotools_reference(files, iou_type):
    stats = evaluate_instances(files["gt"], files["res"], iou_type=iou_type)
    ref = files["ref"]["instances"][iou_type]
    assert set(STAT_NAMES) == set(ref)
    for name in STAT_NAMES:
        assert stats[name] == pytest.approx(ref[name], abs=1e-6), name
    assert stats["num_detections"] == files["ref"]["num_detections"] == 157


def test_inputs_not_modified_and_dict_inputs_agree(files):
    gt, res = read_json(files["gt"]), read_json(files["res"])
    gt_before, res_before = json.dumps(gt), json.dumps(res)
    stats = evaluate_instances(gt, res, iou_type="segm")
    assert json.dumps(gt) == gt_before and json.dumps(res) == res_before  # COCOeval writes into anns
    assert stats["AP"] == pytest.approx(files["ref"]["instances"]["segm"]["AP"], abs=1e-6)


def test_make_class_agnostic(files):
    gt = read_json(files["gt"])
    agn = make_class_agnostic(gt)
    assert agn["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert len(agn["annotations"]) == len(gt["annotations"]) == 169
    assert {a["category_id"] for a in agn["annotations"]} == {1}
    ids = [a["id"] for a in agn["annotations"]]
    assert len(set(ids)) == len(ids) and min(ids) >= 1
    assert ids == [a["id"] for a in gt["annotations"]]  # valid ids are kept
    assert agn["images"] == gt["images"] and agn["info"] == gt["info"] and agn["licenses"] == gt["licenses"]
    assert len(gt["categories"]) == 80  # input untouched
    assert len({a["category_id"] for a in gt["annotations"]}) == 33


def test_class_agnostic_renumbers_zero_and_duplicate_ids():
    gt = {"images": [], "categories": [{"id": 7, "name": "x"}],
          "annotations": [{"id": 0, "category_id": 7}, {"id": 5, "category_id": 7}, {"id": 5, "category_id": 7}]}
    agn = make_class_agnostic(gt)
    assert [a["id"] for a in agn["annotations"]] == [1, 2, 3]
    assert [a["id"] for a in gt["annotations"]] == [0, 5, 5]


def test_gt_as_prediction_class_agnostic_is_perfect(files):
    gt = read_json(files["gt"])
    results = gt_as_results(gt)
    for iou_type in ("segm", "bbox"):
        stats = evaluate_instances(gt, results, iou_type=iou_type, class_agnostic=True)
        assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)
        assert stats["num_detections"] == 166


def test_class_agnostic_differs_from_category_aware_on_wrong_labels(files):
    """Relabelled perfect masks: zero AP per category, perfect AP class-agnostic."""
    gt = read_json(files["gt"])
    results = [{**r, "category_id": 1 if r["category_id"] != 1 else 2} for r in gt_as_results(gt)]
    assert evaluate_instances(gt, results, class_agnostic=True)["AP"] == pytest.approx(1.0)
    assert evaluate_instances(gt, results)["AP"] < 0.1


def test_empty_results_give_zero_not_crash(files, tmp_path):
    path = tmp_path / "empty.json"
    write_json(path, [])
    stats = evaluate_instances(files["gt"], path)
    assert stats["num_detections"] == 0
    # coco_mini has GT in every area range, so every AP / AR is defined and 0 (recall 0)
    assert all(stats[name] == 0.0 for name in STAT_NAMES)


def test_empty_results_keep_undefined_area_ranges_at_minus_one():
    mask = np.zeros((40, 40), bool)
    mask[:35, :35] = True  # 1225 px: medium (32^2 < area < 96^2)
    gt = {"images": [{"id": 1, "height": 40, "width": 40}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1225,
                           "bbox": bbox_xywh(mask), "segmentation": encode_rle(mask)}]}
    stats = evaluate_instances(gt, [])
    assert stats["AP"] == 0.0 and stats["APm"] == 0.0 and stats["AR100"] == 0.0
    assert stats["APs"] == -1.0 and stats["APl"] == -1.0  # COCOeval: no GT there, undefined


def test_result_on_unknown_image_names_file_and_id(files, tmp_path):
    res = read_json(files["res"])
    res[3] = {**res[3], "image_id": 999999999}
    path = tmp_path / "bad_image.json"
    write_json(path, res)
    with pytest.raises(DataError) as err:
        evaluate_instances(files["gt"], path)
    assert err.value.path == str(path) and "999999999" in str(err.value) and err.value.fix


@pytest.mark.parametrize("breakage", ["no_score", "no_segmentation", "bad_counts", "wrong_size",
                                      "polygon", "nan_score", "not_a_list", "unknown_category"])
def test_malformed_results_raise_data_error(files, tmp_path, breakage):
    res = read_json(files["res"])
    det = dict(res[5])
    seg = dict(det["segmentation"])
    if breakage == "no_score":
        del det["score"]
    elif breakage == "no_segmentation":
        del det["segmentation"]
    elif breakage == "bad_counts":
        det["segmentation"] = {**seg, "counts": seg["counts"][:-3] + "zz"}
    elif breakage == "wrong_size":
        det["segmentation"] = {**seg, "size": [seg["size"][0] + 1, seg["size"][1]]}
    elif breakage == "polygon":
        det["segmentation"] = [[0, 0, 10, 0, 10, 10]]
    elif breakage == "nan_score":
        det["score"] = float("nan")
    elif breakage == "unknown_category":
        det["category_id"] = 12  # id 12 is not a COCO category
    res[5] = det
    path = tmp_path / "bad.json"
    write_json(path, {"detections": res} if breakage == "not_a_list" else res)
    with pytest.raises(DataError) as err:
        evaluate_instances(files["gt"], path)
    assert err.value.path == str(path)
    assert breakage == "not_a_list" or "#5" in str(err.value)


def test_corrupt_results_file_raises_data_error(files, tmp_path):
    path = tmp_path / "trunc.json"
    path.write_text(files["res"].read_text()[:1000])
    with pytest.raises(DataError, match="not valid JSON"):
        evaluate_instances(files["gt"], path)


def test_rle_counts_validation():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) < 0.3
    counts = encode_rle(mask)["counts"]
    assert rle_counts_valid(counts, 37, 53)
    assert not rle_counts_valid(counts, 37, 54)           # runs do not cover h*w
    assert not rle_counts_valid(counts + "1", 37, 53)     # an extra run
    assert not rle_counts_valid(counts[:-1] + "\x7f", 37, 53)  # outside the alphabet
    assert not rle_counts_valid(counts[:-1] + "o", 37, 53)     # ends inside a number ('o' = 63: more bit)
    assert rle_counts_valid("", 0, 0)


def crowd_scene():
    """One object (left) and one crowd region (right) of category 1 in a 60 x 100 image."""
    obj = np.zeros((60, 100), bool)
    obj[10:50, 5:45] = True
    crowd = np.zeros((60, 100), bool)
    crowd[5:55, 55:98] = True
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": int(obj.sum()),
             "bbox": bbox_xywh(obj), "segmentation": encode_rle(obj)},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": int(crowd.sum()),
             "bbox": bbox_xywh(crowd), "segmentation": encode_rle(crowd)}]
    gt = {"images": [{"id": 1, "height": 60, "width": 100}], "categories": [{"id": 1, "name": "a"}],
          "annotations": anns}
    inside_crowd = np.zeros((60, 100), bool)
    inside_crowd[20:40, 60:80] = True
    results = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": encode_rle(inside_crowd),
                "bbox": bbox_xywh(inside_crowd)},  # higher score: a FP here would cost precision
               {"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": encode_rle(obj),
                "bbox": bbox_xywh(obj)}]
    return gt, results


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_detection_on_crowd_is_ignored(iou_type):
    gt, results = crowd_scene()
    assert evaluate_instances(gt, results, iou_type=iou_type)["AP"] == pytest.approx(1.0)
    no_crowd = {**gt, "annotations": gt["annotations"][:1]}
    assert evaluate_instances(no_crowd, results, iou_type=iou_type)["AP"] < 0.9  # now it is a FP


def test_gt_id_zero_is_renumbered_not_mis_scored():
    gt, results = crowd_scene()
    gt["annotations"][0]["id"] = 0  # pycocotools alone would score the match as a FP
    assert evaluate_instances(gt, results)["AP"] == pytest.approx(1.0)


def test_bad_iou_type(files):
    with pytest.raises(ValueError):
        evaluate_instances(files["gt"], files["res"], iou_type="keypoints")
