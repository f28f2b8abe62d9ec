"""The teacher on real images through each family's tiny model, and its workflow stages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trace_edges.backbones.tiny import FAMILIES, tiny_backbone, tiny_model_dir
from trace_edges.config import validate
from trace_edges.data.images import load_rgb, read_png
from trace_edges.edges.store import EdgeSet
from trace_edges.teacher.labels import IGNORE
from trace_edges.teacher.trajectory import run_teacher

PARAMS = validate({}, block="teacher")


@pytest.fixture(scope="module")
def rgb(coco_mini):
    return load_rgb(coco_mini / "images" / "000000037777.jpg")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs torch on one thread (conftest.one_torch_thread)."""
    yield


@pytest.mark.parametrize("family", FAMILIES)
def test_full_teacher_runs_on_every_family(family, rgb):
    res = run_teacher(tiny_backbone(family), rgb, PARAMS)
    assert res.steps == [0] + [k * 100 - 1 for k in range(1, 11)]
    assert res.abdiv.shape == (11, *res.grid) and np.isfinite(res.abdiv).all() and (res.abdiv >= -1e-5).all()
    assert set(res.kl_curve) == set(res.steps[1:]) and all(v >= -1e-6 for v in res.kl_curve.values())
    assert res.t_star == max(res.kl_curve, key=res.kl_curve.get)
    assert res.edge.std() > 0  # a non-constant edge map


@pytest.mark.parametrize("trajectory, mode", [("noise", "exact"), ("inversion", "fast")])
def test_options_change_the_trajectory_or_the_quantity(trajectory, mode, rgb):
    bb = tiny_backbone("sd3")
    base = run_teacher(bb, rgb, PARAMS)
    other = run_teacher(bb, rgb, dict(PARAMS, trajectory=trajectory, mode=mode))
    assert other.abdiv.shape == base.abdiv.shape
    assert not np.allclose(other.abdiv[1:], base.abdiv[1:])
    # step 0 is the clean latent in both trajectories: identical input, identical exact maps
    if mode == "exact":
        assert np.allclose(other.abdiv[0], base.abdiv[0], atol=1e-6)


def test_teacher_is_deterministic(rgb):
    bb = tiny_backbone("sd3")
    a, b = run_teacher(bb, rgb, PARAMS), run_teacher(bb, rgb, PARAMS)
    assert np.array_equal(a.abdiv, b.abdiv) and a.kl_curve == b.kl_curve


def test_stages_equal_the_edge_source(tmp_path, coco_mini):
    """invert -> iep -> abdiv_labels writes the same trace_teacher maps as the one-call source."""
    from trace_edges.data.coco import prepare
    from trace_edges.edges import get_edge_source
    from trace_edges.stages.teacher import run_abdiv_labels, run_iep, run_invert

    cfg = validate({"data": {"root": str(coco_mini), "max_images": 3},
                    "teacher": {"backbone": {"model": str(tiny_model_dir("sd3"))}, "shard_size": 2}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    manifest = tmp_path / "data/manifest.json"
    tp = cfg["teacher"]
    shards = [run_invert(tp, manifest, i, tmp_path / "t/invert") for i in range(2)]
    assert [len(s["images"]) for s in shards] == [2, 1]
    assert shards[0]["model"]["family"] == "sd3" and shards[0]["provenance"]["model"]
    iep = run_iep([tmp_path / f"t/invert/shard_{i}.json" for i in range(2)], tmp_path / "t/iep.json")
    assert sum(iep["t_star_histogram"].values()) == 3
    run_abdiv_labels(tp, manifest, tmp_path / "t/iep.json", tmp_path / "t/invert", tmp_path / "t",
                     tmp_path / "edges/trace_teacher")
    staged = EdgeSet(tmp_path / "edges/trace_teacher")
    assert staged.source == "trace_teacher" and len(staged) == 3
    src = get_edge_source("trace_teacher", tp)
    m = json.loads(manifest.read_text())
    for rec in m["images"]:
        direct = src.compute(load_rgb(rec["file"]))
        # the staged path stores ABDiv as float16 (relative precision 2^-11) before normalising
        assert np.abs(direct - staged.load(rec["id"])).max() <= 2e-3
        lab = read_png(tmp_path / f"t/labels/image/{rec['id']}.png")
        assert lab.shape == (rec["height"], rec["width"]) and set(np.unique(lab)) <= {0, 1, IGNORE}
        assert (lab == 1).any()
        assert read_png(tmp_path / f"t/labels/grid/{rec['id']}.png").shape == (16, 16)
    # rerun: everything reused, same bytes
    before = (tmp_path / "edges/trace_teacher/manifest.json").read_bytes()
    run_abdiv_labels(tp, manifest, tmp_path / "t/iep.json", tmp_path / "t/invert", tmp_path / "t",
                     tmp_path / "edges/trace_teacher")
    assert (tmp_path / "edges/trace_teacher/manifest.json").read_bytes() == before


def test_missing_shard_is_a_clear_error(tmp_path, coco_mini):
    from trace_edges.data.coco import prepare
    from trace_edges.errors import ConfigError
    from trace_edges.stages.teacher import run_invert

    cfg = validate({"data": {"root": str(coco_mini), "max_images": 2}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    with pytest.raises(ConfigError, match="shard 5 does not exist"):
        run_invert(cfg["teacher"], tmp_path / "data/manifest.json", 5, tmp_path / "inv")


def test_teacher_cell_equals_the_three_stages_and_fixed_t(tmp_path, coco_mini):
    """teacher-cell (ablations) = invert + iep + abdiv_labels in one process; t_star fixes t*."""
    from trace_edges.data.coco import prepare
    from trace_edges.stages.teacher import nearest_step, run_abdiv_labels, run_iep, run_invert, run_teacher_cell

    cfg = validate({"data": {"root": str(coco_mini), "max_images": 2},
                    "teacher": {"backbone": {"model": str(tiny_model_dir("sd3"))}}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    manifest = tmp_path / "data/manifest.json"
    tp = cfg["teacher"]
    run_invert(tp, manifest, 0, tmp_path / "s/invert")
    run_iep([tmp_path / "s/invert/shard_0.json"], tmp_path / "s/iep.json")
    run_abdiv_labels(tp, manifest, tmp_path / "s/iep.json", tmp_path / "s/invert", tmp_path / "s", tmp_path / "s_edges")
    run_teacher_cell(tp, manifest, tmp_path / "c", tmp_path / "c_edges")
    for rec in json.loads(manifest.read_text())["images"]:
        assert np.array_equal(EdgeSet(tmp_path / "s_edges").load(rec["id"]),
                              EdgeSet(tmp_path / "c_edges").load(rec["id"]))
    lat = json.loads((tmp_path / "c/latency.json").read_text())
    assert lat["ms_per_image"] > 0 and len(lat["walls_s"]) == 2

    assert nearest_step([0, 99, 199, 299], 300) == 299 and nearest_step([0, 99, 199], 149) == 99
    fixed = run_teacher_cell(dict(tp, t_star=300), manifest, tmp_path / "f", tmp_path / "f_edges")
    assert set(fixed["iep"]["t_star_histogram"]) == {"299"} and fixed["iep"]["t_star_rule"] == "fixed t = 300"
    a = EdgeSet(tmp_path / "c_edges").load(json.loads(manifest.read_text())["images"][0]["id"])
    b = EdgeSet(tmp_path / "f_edges").load(json.loads(manifest.read_text())["images"][0]["id"])
    iep = json.loads((tmp_path / "c/iep.json").read_text())
    if all(v["t_star"] != 299 for v in iep["images"].values()):
        assert not np.array_equal(a, b)   # another timestep -> another map
