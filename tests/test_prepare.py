"""The prepare stage: verified data in, manifest + derived GT out; bad input gets a clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from trace_edges.config import validate
from trace_edges.data.edge_gt import crowd_ids_of, edge_gt_from_panoptic
from trace_edges.data.coco import prepare
from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import read_png
from trace_edges.errors import DataError
from trace_edges.panoptic_io import read_panoptic_png


@pytest.fixture
def dataset(tmp_path, coco_mini):
    root = tmp_path / "coco_mini"
    shutil.copytree(coco_mini, root)
    return root


def _cfg(root, **data):
    cfg = validate({"data": {"root": str(root), **data}})
    return cfg["data"], cfg["edge_gt"]


def test_prepare_real_data(tmp_path, dataset):
    data, egt = _cfg(dataset, max_images=3)
    out = tmp_path / "out"
    prepare(data, egt, out)
    m = load_manifest(out / "manifest.json")
    assert m["num_images"] == 3 and [r["id"] for r in m["images"]] == sorted(r["id"] for r in m["images"])
    agn = json.loads((out / "instances_agnostic.json").read_text())
    inst = json.loads((out / "instances.json").read_text())
    ids = {r["id"] for r in m["images"]}
    assert {a["image_id"] for a in inst["annotations"]} <= ids
    assert len(agn["annotations"]) == len(inst["annotations"]) > 0
    assert [c["id"] for c in agn["categories"]] == [1]
    assert all(a["category_id"] == 1 and a["id"] >= 1 for a in agn["annotations"])
    assert len({a["id"] for a in agn["annotations"]}) == len(agn["annotations"])
    pan = json.loads((out / "panoptic.json").read_text())
    assert {a["image_id"] for a in pan["annotations"]} == ids
    # the calibrated default (docs/edges.md §7): thinned, without void and crowd boundaries
    assert (egt["include_void"], egt["include_crowd"], egt["thin"]) == (False, False, True)
    for rec in m["images"]:
        e = read_png(rec["edge_gt"])
        assert e.shape == (rec["height"], rec["width"]) and 0 < (e > 0).mean() < 0.2
        pan = next(a for a in json.loads((out / "panoptic.json").read_text())["annotations"]
                   if a["image_id"] == rec["id"])
        ids_map = read_panoptic_png(rec["panoptic_png"])
        want = edge_gt_from_panoptic(ids_map, crowd_ids=crowd_ids_of(pan["segments_info"]),
                                     include_void=False, include_crowd=False, thin=True)
        assert np.array_equal(e > 0, want)
        assert want.sum() < edge_gt_from_panoptic(ids_map, thin=True).sum()  # void boundaries dropped
    assert m["provenance"]["inputs"] and m["provenance"]["code_digest"]


def test_checksum_mismatch_names_the_file(tmp_path, dataset):
    img = dataset / "images" / "000000037777.jpg"
    raw = bytearray(img.read_bytes())
    raw[5000] ^= 0xFF  # one flipped byte
    img.write_bytes(bytes(raw))
    data, egt = _cfg(dataset)
    with pytest.raises(DataError, match="000000037777.jpg.*sha256 mismatch"):
        prepare(data, egt, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_image_without_checksums(tmp_path, dataset):
    img = dataset / "images" / "000000006818.jpg"
    img.write_bytes(img.read_bytes()[:3000])
    data, egt = _cfg(dataset, checksums=None)
    with pytest.raises(DataError, match="000000006818.jpg.*cannot decode"):
        prepare(data, egt, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_malformed_annotation_json(tmp_path, dataset):
    p = dataset / "annotations" / "instances_mini.json"
    gt = json.loads(p.read_text())
    del gt["annotations"][3]["segmentation"]
    p.write_text(json.dumps(gt))
    data, egt = _cfg(dataset, checksums=None)
    with pytest.raises(DataError, match=r"instances_mini.json.*annotations\[3\].*segmentation"):
        prepare(data, egt, tmp_path / "out")


def test_truncated_annotation_json(tmp_path, dataset):
    p = dataset / "annotations" / "panoptic_mini.json"
    p.write_text(p.read_text()[:500])
    data, egt = _cfg(dataset, checksums=None)
    with pytest.raises(DataError, match="panoptic_mini.json.*not valid JSON"):
        prepare(data, egt, tmp_path / "out")


def test_missing_panoptic_png(tmp_path, dataset):
    (dataset / "annotations" / "panoptic_mini" / "000000087038.png").unlink()
    data, egt = _cfg(dataset, checksums=None)
    with pytest.raises(DataError, match="000000087038.png.*not found"):
        prepare(data, egt, tmp_path / "out")


def test_missing_dataset_root(tmp_path):
    data, egt = _cfg(tmp_path / "nowhere")
    with pytest.raises(DataError, match="dataset root not found"):
        prepare(data, egt, tmp_path / "out")
