"""The student's training images (student.train_data): separate from the evaluation images by default,
verified, refused when they overlap the evaluation set, and identified in the student's model.json."""

from __future__ import annotations

import json
import shutil

import pytest

from trace_edges.config import validate
from trace_edges.errors import DataError

from conftest import ROOT


def _prepare_both(tmp_path, **td):
    from trace_edges.data.coco import prepare
    from trace_edges.data.train_data import prepare_train

    cfg = validate({"student": {"train_data": td}} if td else {})
    ev = prepare(cfg["data"] | {"root": str(ROOT / cfg["data"]["root"])}, cfg["edge_gt"], tmp_path / "data")
    t = cfg["student"]["train_data"]
    tr = prepare_train(t | {"root": str(ROOT / t["root"])}, tmp_path / "train", eval_manifest=ev)
    return cfg, ev, tr


def test_default_training_set_is_disjoint_from_the_evaluation_set(tmp_path):
    """Issue 14.2: by default the student trains on COCO train2017 images (data/coco_train_mini), none of
    which is an evaluation image, by content (sha256) and by COCO id; transductive is off."""
    cfg, ev, tr = _prepare_both(tmp_path)
    td = cfg["student"]["train_data"]
    assert td["transductive"] is False and td["root"] == "data/coco_train_mini"
    assert tr["dataset"] == "train_data" and tr["num_images"] >= 8
    assert not {r["sha256"] for r in tr["images"]} & {r["sha256"] for r in ev["images"]}
    assert not {r["id"] for r in tr["images"]} & {r["id"] for r in ev["images"]}
    # the ids are COCO train2017 ids, the files those the image info names
    info = json.loads((ROOT / td["root"] / td["image_info"]).read_text())
    by_id = {im["id"]: im for im in info["images"]}
    assert all(by_id[r["id"]]["file_name"] == r["name"] for r in tr["images"])
    assert all("train2017" in by_id[r["id"]]["coco_url"] for r in tr["images"])


def test_an_evaluation_image_in_the_training_set_is_refused(tmp_path, coco_mini):
    from trace_edges.data.coco import prepare
    from trace_edges.data.train_data import prepare_train

    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(ROOT / "data/coco_train_mini/images/000000005802.jpg", folder / "a.jpg")
    shutil.copy(next((coco_mini / "images").glob("*.jpg")), folder / "b.jpg")   # an evaluation image
    cfg = validate({"data": {"root": str(coco_mini)}})
    ev = prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    td = validate({"train_data": {"root": str(folder), "images_dir": ".", "image_info": None, "checksums": None}},
                  block="student")["train_data"]
    with pytest.raises(DataError, match="is evaluation image") as err:
        prepare_train(td, tmp_path / "train", eval_manifest=ev)
    assert "b.jpg" in str(err.value) and "transductive" in str(err.value)
    td["max_images"] = 1    # a.jpg alone: fine, ids by position
    m = prepare_train(td, tmp_path / "train", eval_manifest=ev)
    assert [r["id"] for r in m["images"]] == [1]


def test_training_images_are_verified(tmp_path):
    from trace_edges.data.train_data import prepare_train

    src = ROOT / "data/coco_train_mini"
    root = tmp_path / "td"
    shutil.copytree(src, root)
    name = sorted((root / "images").glob("*.jpg"))[0]
    name.write_bytes(name.read_bytes()[:-10] + b"0123456789")
    td = validate({"train_data": {"root": str(root)}}, block="student")["train_data"]
    with pytest.raises(DataError, match="sha256 mismatch") as err:
        prepare_train(td, tmp_path / "train")
    assert name.name in str(err.value)


def test_list_selects_and_orders_the_images(tmp_path):
    from trace_edges.data.train_data import list_sha256, select_images

    root = tmp_path / "td"
    shutil.copytree(ROOT / "data/coco_train_mini", root)
    names = sorted(p.name for p in (root / "images").glob("*.jpg"))
    (root / "mine.txt").write_text(f"{names[3]}\n{names[1]}\n")
    td = validate({"train_data": {"root": str(root), "list": "mine.txt"}}, block="student")["train_data"]
    assert [r["name"] for r in select_images(td)] == [names[3], names[1]]
    a = [{"id": 1, "sha256": "x"}, {"id": 2, "sha256": "y"}]
    assert list_sha256(a) != list_sha256(a[::-1])


def test_distill_refuses_the_evaluation_manifest_unless_transductive(tmp_path, coco_mini):
    from trace_edges.data.coco import prepare
    from trace_edges.stages.student import run_distill

    cfg = validate({"data": {"root": str(coco_mini), "max_images": 2}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/manifest.json").write_text('{"images": {}}')
    with pytest.raises(DataError, match="would train on the evaluation images"):
        run_distill(validate({}, block="student"), validate({}, block="teacher"), tmp_path / "data/manifest.json",
                    tmp_path / "labels/manifest.json", tmp_path / "out", backbone=object())
