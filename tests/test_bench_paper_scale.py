"""benchmarks/bench_paper_scale.py without its measurements: the repeated dataset it dry-runs on, the
job-table parser, the GPU-row reader and the projection arithmetic (the numbers themselves are
results/benchmarks/paper_scale.md, made by running the script)."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark

bench = load_benchmark("bench_paper_scale")


def test_repeated_dataset_is_a_coco_set_of_n_images(coco_mini, tmp_path):
    from trace_edges.data.selection import selected_image_ids

    data = bench.build_repeated_dataset(coco_mini, tmp_path / "rep", 37)
    ids = selected_image_ids(data)
    assert ids == [1_000_000 + k for k in range(37)]
    inst = json.loads((tmp_path / "rep/annotations/instances.json").read_text())
    src = json.loads((coco_mini / "annotations/instances_mini.json").read_text())
    per_src = {}
    for a in src["annotations"]:
        per_src[a["image_id"]] = per_src.get(a["image_id"], 0) + 1
    order = sorted(im["id"] for im in src["images"])
    assert len(inst["annotations"]) == sum(per_src.get(order[k % len(order)], 0) for k in range(37))
    assert len({a["id"] for a in inst["annotations"]}) == len(inst["annotations"])
    im = inst["images"][17]    # image 17 repeats source image 17 mod 16 = 1, under its new id
    assert (tmp_path / "rep/images" / im["file_name"]).read_bytes() == (
        coco_mini / "images" / f"{order[1]:012d}.jpg").read_bytes()
    pan = json.loads((tmp_path / "rep/annotations/panoptic.json").read_text())
    assert [a["image_id"] for a in pan["annotations"]] == ids
    assert all((tmp_path / "rep/annotations/panoptic" / a["file_name"]).is_file() for a in pan["annotations"])


def test_job_table():
    text = ("Building DAG of jobs...\nJob stats:\njob          count\n---------  -------\n"
            "bgp_shard       40\nedges             2\ntotal            42\n\nReasons:\n")
    assert bench.job_table(text) == {"bgp_shard": 40, "edges": 2, "total": 42}


def test_gpu_rows_reads_only_full_depth_gpu_rows_of_the_paper_backbone(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    assert bench.gpu_rows()["status"] == "not measured"
    d = tmp_path / "results/benchmarks"
    d.mkdir(parents=True)
    cpu = {"family": "sd3", "depth": 2, "device": "cpu", "teacher_s_per_image": 100.0}
    (d / "teacher_scale.json").write_text(json.dumps({"rows": [cpu], "checks": [{"row": cpu}]}))
    assert bench.gpu_rows()["status"] == "not measured"
    gpu = {"family": "sd3", "depth": "full", "device": "cuda", "teacher_s_per_image": 5.4}
    flux = {**gpu, "family": "flux", "teacher_s_per_image": 1.0}
    (d / "teacher_scale_gpu_torch.json").write_text(json.dumps({"checks": [
        {"row": cpu}, {"row": gpu, "student": {"student_s_per_image": 0.4}}, {"row": flux}]}))
    got = bench.gpu_rows()
    assert got["status"] == "measured" and got["teacher_s_per_image"] == 5.4 and got["student_s_per_image"] == 0.4
    assert got["source"] == "results/benchmarks/teacher_scale_gpu_torch.json"
    # a faster measured row in another result file (e.g. the fused kernel's run) wins
    (d / "teacher_scale_gpu.json").write_text(json.dumps({"checks": [{"row": {**gpu, "teacher_s_per_image": 1.5}}]}))
    got = bench.gpu_rows()
    assert got["teacher_s_per_image"] == 1.5 and got["source"] == "results/benchmarks/teacher_scale_gpu.json"
    assert got["student_s_per_image"] is None


def test_projection_arithmetic(monkeypatch):
    monkeypatch.setattr(bench, "gpu_rows", lambda: {"status": "measured", "teacher_s_per_image": 3.6, "row": {}})
    rows = [{"stage": "proposals", "source": "maskcut", "cpu_s_per_image": 36.0, "peak_extra_mb": 400.0},
            {"stage": "score_edges", "source": "sobel", "cpu_s_per_image": 0.72, "peak_extra_mb": 50.0},
            {"stage": "score_edges", "source": "canny", "cpu_s_per_image": 0.36, "peak_extra_mb": 20.0},
            {"stage": "bgp", "source": "hed", "error": "weights missing"}]
    p = bench.projection({"rows": rows}, None, 5000, [10], 16)
    by = {s["stage"]: s for s in p["stages"]}
    assert by["proposals"]["cpu_hours"] == pytest.approx(50.0)
    from trace_edges.edges import staged_sources

    n_staged = len([s for s in p["edge_sources"] if s in staged_sources()])
    # the measured sources at their own cost, the staged ones (teacher, student) at the soft Sobel
    # map's; a configured source measured nowhere (e.g. hed here) is left out, not guessed
    assert by["score_edges"]["cpu_hours"] == pytest.approx((0.72 + 0.36 + 0.72 * n_staged) * 5000 / 3600, abs=0.01)
    assert set(by["score_edges"]["projected_from_sobel"]) == set(staged_sources()) & set(p["edge_sources"])
    assert "bgp" not in by                         # a stage that could not run is left out, not zero
    rows.append({"stage": "edges", "source": "sobel", "cpu_s_per_image": 0.05, "peak_extra_mb": 10.0})
    edges = {s["stage"]: s for s in bench.projection({"rows": rows}, None, 5000, [10], 16)["stages"]}["edges"]
    assert set(edges["cpu_s_per_image"]) == {"sobel"}   # an unmeasured gradient source is not a Sobel
    assert p["gpu_hours_teacher"] == pytest.approx(5.0)
    cpu_h = p["cpu_hours_total"]
    assert p["one_machine"]["lower_h"] == pytest.approx(max(5.0, cpu_h / 16), abs=0.01)
    assert p["one_machine"]["upper_h"] == pytest.approx(5.0 + cpu_h / 16, abs=0.01)
    longest = 36.0 * 50 / 3600                     # one MaskCut shard of 50 images (config.paper.yaml)
    assert p["longest_cpu_job_h"] == pytest.approx(longest, abs=1e-3)
    assert p["cluster"]["10"]["lower_h"] == pytest.approx(max(0.5, cpu_h / 160, longest), abs=0.01)
