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
    assert set(res.divergence_curve) == set(res.steps[1:]) and all(v >= -1e-6 for v in res.divergence_curve.values())
    assert res.t_star == max(res.divergence_curve, key=res.divergence_curve.get)
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
    assert np.array_equal(a.abdiv, b.abdiv) and a.divergence_curve == b.divergence_curve


def _prepared(tmp_path, coco_mini, n, **teacher):
    from trace_edges.data.coco import prepare

    cfg = validate({"data": {"root": str(coco_mini), "max_images": n},
                    "teacher": {"backbone": {"model": str(tiny_model_dir("sd3"))}, **teacher}})
    prepare(cfg["data"], cfg["edge_gt"], tmp_path / "data")
    return cfg["teacher"], tmp_path / "data/manifest.json"


def test_stages_equal_the_edge_source(tmp_path, coco_mini):
    """trajectory -> iep / teacher_labels writes the same trace_teacher maps as the one-call source,
    and t* is the one the trajectory stage picked (the gather only pools it)."""
    from trace_edges.edges import get_edge_source
    from trace_edges.stages.teacher import run_iep, run_labels, run_trajectory

    tp, manifest = _prepared(tmp_path, coco_mini, 3, shard_size=2)
    shards = [run_trajectory(tp, manifest, i, tmp_path / "t/trajectory") for i in range(2)]
    assert [len(s["images"]) for s in shards] == [2, 1]
    assert shards[0]["model"]["family"] == "sd3" and shards[0]["provenance"]["model"]
    shard_files = [tmp_path / f"t/trajectory/shard_{i}.json" for i in range(2)]
    iep = run_iep(shard_files, tmp_path / "t/iep.json")
    assert sum(iep["t_star_histogram"].values()) == 3
    run_labels(tp, manifest, shard_files, tmp_path / "t/labels", tmp_path / "edges/trace_teacher")
    staged = EdgeSet(tmp_path / "edges/trace_teacher")
    assert staged.source == "trace_teacher" and len(staged) == 3
    src = get_edge_source("trace_teacher", tp)
    m = json.loads(manifest.read_text())
    res = tp["backbone"]["resolution"]
    for rec in m["images"]:
        direct = src.compute(load_rgb(rec["file"]))
        # the staged path stores ABDiv as float16 (relative precision 2^-11) before normalising
        assert np.abs(direct - staged.load(rec["id"])).max() <= 2e-3
        assert iep["images"][str(rec["id"])]["t_star"] == src.last.t_star
        assert iep["images"][str(rec["id"])]["divergence_curve"] == {str(t): v for t, v in
                                                                     src.last.divergence_curve.items()}
        # labels are made once, at the student's training size, from the token-grid map
        lab = read_png(tmp_path / f"t/labels/{rec['id']}.png")
        assert lab.shape == (res, res) and set(np.unique(lab)) <= {0, 1, IGNORE}
        assert (lab == 1).any()
        from trace_edges.stages.teacher import load_abdiv
        from trace_edges.teacher.labels import ternarize

        grid = ternarize(load_abdiv(tmp_path / f"t/trajectory/{rec['id']}.safetensors"), tp["label_k"])
        f = res // grid.shape[0]
        assert np.array_equal(lab, np.kron(grid, np.ones((f, f), dtype=np.uint8)))  # nearest, exact blocks
    # nothing is written that nothing reads: no per-step maps, no grid-size labels, no abdiv/ dir
    assert not (tmp_path / "t/abdiv").exists() and not (tmp_path / "t/labels/grid").exists()
    # rerun: everything reused, same bytes
    before = (tmp_path / "edges/trace_teacher/manifest.json").read_bytes()
    run_labels(tp, manifest, shard_files, tmp_path / "t/labels", tmp_path / "edges/trace_teacher")
    assert (tmp_path / "edges/trace_teacher/manifest.json").read_bytes() == before


def test_missing_shard_is_a_clear_error(tmp_path, coco_mini):
    from trace_edges.errors import ConfigError
    from trace_edges.stages.teacher import run_trajectory

    tp, manifest = _prepared(tmp_path, coco_mini, 2)
    with pytest.raises(ConfigError, match="shard 5 does not exist"):
        run_trajectory(tp, manifest, 5, tmp_path / "inv")


def test_fixed_t_star_and_latency(tmp_path, coco_mini):
    """teacher.t_star fixes t* (snapped to the nearest step) in the trajectory stage itself;
    --latency-out times the warm teacher (the ablation cells' Table 4 column)."""
    from trace_edges.stages.teacher import nearest_step, run_iep, run_labels, run_trajectory

    assert nearest_step([0, 99, 199, 299], 300) == 299 and nearest_step([0, 99, 199], 149) == 99
    tp, manifest = _prepared(tmp_path, coco_mini, 2)
    run_trajectory(tp, manifest, 0, tmp_path / "c/trajectory", latency_out=tmp_path / "c/latency.json")
    lat = json.loads((tmp_path / "c/latency.json").read_text())
    assert lat["ms_per_image"] > 0 and len(lat["walls_s"]) == 2
    run_trajectory(dict(tp, t_star=300), manifest, 0, tmp_path / "f/trajectory")
    iep_c = run_iep([tmp_path / "c/trajectory/shard_0.json"], tmp_path / "c/iep.json")
    iep_f = run_iep([tmp_path / "f/trajectory/shard_0.json"], tmp_path / "f/iep.json")
    assert set(iep_f["t_star_histogram"]) == {"299"} and iep_f["t_star_rule"] == "fixed t = 300"
    assert iep_c["t_star_rule"].startswith("IEP")
    run_labels(tp, manifest, [tmp_path / "c/trajectory/shard_0.json"], tmp_path / "c/labels", tmp_path / "c_edges")
    run_labels(tp, manifest, [tmp_path / "f/trajectory/shard_0.json"], tmp_path / "f/labels", tmp_path / "f_edges")
    first = json.loads(manifest.read_text())["images"][0]["id"]
    a, b = EdgeSet(tmp_path / "c_edges").load(first), EdgeSet(tmp_path / "f_edges").load(first)
    if iep_c["images"][str(first)]["t_star"] != 299:
        assert not np.array_equal(a, b)   # another timestep -> another map


RESULT_KEYS = {  # every teacher key that changes the trajectory -> a value that differs from the default
    "backbone.resolution": 128, "backbone.dtype": "bfloat16", "backbone.drop_t5": True, "backbone.revision": "abc",
    "trajectory": "noise", "stride": 500, "mode": "fast", "divergence": "jsd", "neighbourhood": 8, "chunk": 64,
    "eps": 1e-6, "t_star": 299, "backbone.guidance": 2.0, "backbone.tiny": False, "backbone.family": "sdxl",
    "backbone.model": "elsewhere",
    "sa_kernel": "torch",  # the fused kernel: equal to float rounding
    "map_budget_mb": 0,  # the map mode: equal to float rounding, not bitwise (the float16 maps may differ)
}


def _leaf_paths(block, prefix=""):
    for k, v in block.items():
        if isinstance(v, dict) and v:
            yield from _leaf_paths(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def test_every_result_key_of_the_teacher_is_in_the_trajectory_cache_key():
    """Cache keys hash the whole validated teacher block but the documented non-result keys:
    changing any other key in turn changes the trajectory's per-image key (no reuse)."""
    from trace_edges import provenance
    from trace_edges.config import NON_RESULT_KEYS
    from trace_edges.stages.teacher import LABEL_ONLY_KEYS, trajectory_key

    def with_value(path, value):
        block = json.loads(json.dumps(PARAMS))
        *parents, leaf = path.split(".")
        node = block
        for p in parents:
            node = node[p]
        node[leaf] = value
        return block

    base = provenance.item_key("teacher", trajectory_key(PARAMS, 0), "img")
    paths = set(_leaf_paths(PARAMS))
    ignored = set(NON_RESULT_KEYS["teacher"]) | set(LABEL_ONLY_KEYS)
    assert ignored <= paths and paths - ignored == set(RESULT_KEYS)   # a new schema key must be listed here
    for path, value in RESULT_KEYS.items():
        assert provenance.item_key("teacher", trajectory_key(with_value(path, value), 0), "img") != base, path
    assert provenance.item_key("teacher", trajectory_key(PARAMS, 1), "img") != base   # the seed too
    for path in ignored:   # and the non-result keys do not
        v = {"shard_size": 99, "backbone.device": "cpu", "label_k": 2.0}[path]
        assert provenance.item_key("teacher", trajectory_key(with_value(path, v), 0), "img") == base, path
