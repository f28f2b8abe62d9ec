"""Your own images: images-only datasets (no GT), dataset-independent figure images checked early.

Unit level (no Snakemake jobs): the folder listing and its ids, the images-only manifest (EXIF,
grayscale, palette, CMYK, PNG/WebP, a corrupt file named), the figure-image resolution and its
refusals, prepare's late check, and the GT-needing stages refusing an images-only manifest. The
workflow runs are tests/test_own_images_workflow.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from trace_edges.config import validate
from trace_edges.data.coco import prepare
from trace_edges.data.folder import prepare_images
from trace_edges.data.manifest import load_manifest, require_ground_truth
from trace_edges.data.selection import figure_images, list_folder_images, selected_image_ids
from trace_edges.errors import ConfigError, DataError


def _photo(path, size=(40, 30), mode="RGB", fmt=None, exif_orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        im = im.convert(mode)
    kw = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif.tobytes()
    im.save(path, format=fmt, **kw)
    return path


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    _photo(root / "b.jpg")
    _photo(root / "a" / "gray.JPG", mode="L")
    _photo(root / "a" / "palette.png", mode="P")
    _photo(root / "c.webp", fmt="WEBP")
    _photo(root / "d_cmyk.jpg", mode="CMYK")
    _photo(root / "e_rotated.jpg", size=(40, 30), exif_orientation=6)  # 90 degrees: stored 40x30, shown 30x40
    (root / "notes.txt").write_text("not an image")
    _photo(root / ".hidden" / "x.jpg")
    _photo(root / ".x.jpg")
    return root


def _images_cfg(root, **data):
    return validate({"data": {"dataset": "images", "root": str(root), **data}})


def test_folder_listing_is_sorted_recursive_and_skips_hidden(photos):
    assert list_folder_images(photos) == ["a/gray.JPG", "a/palette.png", "b.jpg", "c.webp", "d_cmyk.jpg",
                                          "e_rotated.jpg"]
    assert selected_image_ids(_images_cfg(photos)["data"]) == [1, 2, 3, 4, 5, 6]
    assert selected_image_ids(_images_cfg(photos, max_images=2)["data"]) == [1, 2]


def test_images_manifest_has_no_gt_and_every_image_as_rgb(tmp_path, photos):
    m = prepare_images(_images_cfg(photos)["data"], tmp_path / "out")
    assert m["gt"] is None and m["num_images"] == 6 and m["dataset"] == "images"
    back = load_manifest(tmp_path / "out" / "manifest.json")
    assert [r["name"] for r in back["images"]] == list_folder_images(photos)
    assert [r["id"] for r in back["images"]] == [1, 2, 3, 4, 5, 6]
    rot = next(r for r in back["images"] if r["name"] == "e_rotated.jpg")
    assert (rot["width"], rot["height"]) == (30, 40)   # EXIF-rotated size: the size of its edge maps
    assert all("edge_gt" not in r for r in back["images"])
    with pytest.raises(DataError, match="needs ground truth"):
        require_ground_truth(back, tmp_path / "out" / "manifest.json", "UIS scoring")


def test_corrupt_image_is_refused_by_name(tmp_path, photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        prepare_images(_images_cfg(photos)["data"], tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image"):
        prepare_images(_images_cfg(tmp_path / "empty")["data"], tmp_path / "out")
    with pytest.raises(ConfigError, match="holds no image"):
        selected_image_ids(_images_cfg(tmp_path / "empty")["data"])
    with pytest.raises(ConfigError, match="not a directory"):
        selected_image_ids(_images_cfg(tmp_path / "nowhere")["data"])


def test_scoring_an_images_manifest_is_refused(tmp_path, photos):
    from trace_edges.stages.score import score_uis

    prepare_images(_images_cfg(photos)["data"], tmp_path / "out")
    with pytest.raises(DataError, match="UIS scoring needs ground truth"):
        score_uis(tmp_path / "out" / "manifest.json", tmp_path / "none.json", tmp_path / "m.json", label="none")


# ---- figure images ---------------------------------------------------------------------------------
def _cfg(**over):
    return validate({"data": {"root": "data/coco_mini"}, **over})


def test_schema_defaults_do_not_name_any_dataset_image():
    report = validate({})["report"]
    assert report["qualitative_images"] is None and report["bgp_image"] is None
    assert report["curated_images"] == {}


def test_curated_ids_apply_only_to_their_dataset_root():
    curated = {"report": {"curated_images": {"data/coco_mini": [37777, 87038]}}}
    cfg = _cfg(**curated)
    assert figure_images(cfg, [6818, 37777, 87038]) == {"qualitative": [37777, 87038], "bgp": 37777}
    # another root (a custom COCO-format set with other ids): the first 4 images, no error
    other = validate({"data": {"root": "data/mine"}, **curated})
    assert figure_images(other, [5, 6, 7, 8, 9]) == {"qualitative": [5, 6, 7, 8], "bgp": 5}
    # max_images cut the curated ids away: those the run has, else the first images
    assert figure_images(cfg, [6818, 37777]) == {"qualitative": [37777], "bgp": 37777}
    assert figure_images(cfg, [6818]) == {"qualitative": [6818], "bgp": 6818}
    # unknown before a download: the commands pick the manifest's first images
    assert figure_images(other, None) == {"qualitative": [], "bgp": None}


def test_configured_ids_the_dataset_lacks_are_refused_with_key_ids_and_valid_ones():
    cfg = _cfg(report={"qualitative_images": [6818, 1, 2]})
    with pytest.raises(ConfigError) as e:
        figure_images(cfg, [6818, 37777, 87038])
    msg = str(e.value)
    assert "report.qualitative_images" in msg and "[1, 2]" in msg and "6818, 37777" in msg
    cfg = _cfg(data={"root": "data/coco_mini", "max_images": 2}, report={"bgp_image": 87038})
    with pytest.raises(ConfigError, match=r"report.bgp_image.*\[87038\].*max_images = 2"):
        figure_images(cfg, [6818, 37777])
    # not knowable yet (COCO 2017 val before its download): passed through, prepare checks them
    assert figure_images(_cfg(report={"qualitative_images": [1]}), None)["qualitative"] == [1]


def test_prepare_refuses_unchecked_ids_before_reading_images(tmp_path, coco_mini):
    root = tmp_path / "coco_mini"
    shutil.copytree(coco_mini, root)
    cfg = validate({"data": {"root": str(root), "max_images": 2}})
    with pytest.raises(ConfigError, match=r"report.qualitative_images.*\[87038\]"):
        prepare(cfg["data"], cfg["edge_gt"], tmp_path / "out",
                check_image_ids={"report.qualitative_images": [6818, 87038]})
    assert not (tmp_path / "out").exists()


def test_prepare_cli_dispatches_images_and_checks_ids(tmp_path, photos, capsys):
    from trace_edges.cli import main

    data = json.dumps({"dataset": "images", "root": str(photos)})
    assert main(["prepare", "--params", data, "--check-image-ids", '{"report.bgp_image": [9]}',
                 "--out-dir", str(tmp_path / "bad")]) == 2
    assert "report.bgp_image" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["prepare", "--params", data, "--out-dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["num_images"] == 6
