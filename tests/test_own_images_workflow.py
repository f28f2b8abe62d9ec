"""Your own images through the workflow (issue 15), in a temporary copy of the project.

* A configured figure image the dataset lacks is refused when the Snakefile is parsed: `snakemake -n`
  fails before any job, naming the key, the missing ids and valid ones (dry runs: fast tier).
* An images-only folder (`data: {dataset: images, root: photos}`; a JPEG, a grayscale JPEG in a
  subfolder, a PNG) plans no stage that needs ground truth, and runs through Sobel/Canny edges,
  proposals, BGP and the qualitative + BGP figures; `snakemake -n` has nothing left to do
  (fast tier, e2e). The same folder with every edge source (teacher, student, their figures) runs
  to the end of `all` in the slow tier.
* A COCO-format dataset with other image ids than coco_mini runs to the end of `all` with the
  default report settings (slow tier): the curated coco_mini ids are not inherited.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image
from workflow_helpers import ROOT, make_snapshot, seed_hed_weights, snakemake

COCO_MINI = ROOT / "data" / "coco_mini"
IMAGES = ["000000006818.jpg", "000000037777.jpg", "000000087038.jpg"]
# 3 coco_mini images renumbered: no id of coco_mini (nor of its curated figure images) survives
NEW_IDS = {6818: 501, 37777: 502, 87038: 503}


def _write_photos(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    shutil.copy(COCO_MINI / "images" / IMAGES[0], root / "a.jpg")
    with Image.open(COCO_MINI / "images" / IMAGES[1]) as im:
        im.convert("L").save(root / "sub" / "gray.jpg")
    with Image.open(COCO_MINI / "images" / IMAGES[2]) as im:
        im.save(root / "sub" / "c.png")


def _write_custom_coco(root: Path) -> None:
    """coco_mini's first 3 images under other ids, same files (COCO format, no checksums)."""
    ann = root / "annotations"
    (ann / "panoptic").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    inst = json.loads((COCO_MINI / "annotations/instances_mini.json").read_text())
    pan = json.loads((COCO_MINI / "annotations/panoptic_mini.json").read_text())
    inst["images"] = [{**im, "id": NEW_IDS[im["id"]]} for im in inst["images"] if im["id"] in NEW_IDS]
    inst["annotations"] = [{**a, "image_id": NEW_IDS[a["image_id"]]} for a in inst["annotations"]
                           if a["image_id"] in NEW_IDS]
    pan["images"] = [{**im, "id": NEW_IDS[im["id"]]} for im in pan["images"] if im["id"] in NEW_IDS]
    pan["annotations"] = [{**a, "image_id": NEW_IDS[a["image_id"]]} for a in pan["annotations"]
                          if a["image_id"] in NEW_IDS]
    for im in inst["images"]:
        shutil.copy(COCO_MINI / "images" / im["file_name"], root / "images" / im["file_name"])
    for a in pan["annotations"]:
        shutil.copy(COCO_MINI / "annotations/panoptic_mini" / a["file_name"], ann / "panoptic" / a["file_name"])
    (ann / "instances.json").write_text(json.dumps(inst))
    (ann / "panoptic.json").write_text(json.dumps(pan))
    shutil.copy(COCO_MINI / "annotations/panoptic_coco_categories.json", ann / "categories.json")


SHORT = {"ablations": {"enabled": False}, "student": {"train": {"epochs": 1}},
         "score": {"edges": {"thresholds": 5}}, "teacher": {"shard_size": 8}}
OVERLAYS = {
    # images-only, the two gradient sources (the fast tier's run)
    "images_fast.yaml": {"preset": "imgs", "data": {"dataset": "images", "root": "photos"},
                         "edges": {"sources": ["sobel", "canny"]}, **SHORT},
    # images-only, every edge source (slow tier)
    "images_all.yaml": {"preset": "imgs_all", "data": {"dataset": "images", "root": "photos"}, **SHORT},
    # a COCO-format dataset with other ids, DEFAULT report settings (slow tier)
    "custom.yaml": {"preset": "custom", "data": {
        "root": "data/custom", "instances_json": "annotations/instances.json",
        "panoptic_json": "annotations/panoptic.json", "panoptic_dir": "annotations/panoptic",
        "panoptic_categories": "annotations/categories.json", "checksums": None}, **SHORT},
    "bad_qualitative.yaml": {"data": {"max_images": 2}, "report": {"qualitative_images": [6818, 87038, 1]}},
    "bad_custom_bgp.yaml": {"report": {"bgp_image": 37777}},
    "bad_images.yaml": {"report": {"qualitative_images": [2, 9]}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    wd = make_snapshot(tmp_path_factory.mktemp("own_images"))
    _write_photos(wd / "photos")
    _write_custom_coco(wd / "data" / "custom")
    for name, over in OVERLAYS.items():
        (wd / name).write_text(yaml.safe_dump(over))
    return wd


def _config(*overlays: str) -> list[str]:
    return ["--configfile", "config.yaml", *overlays]


def _refused(project: Path, *overlays: str) -> str:
    res = snakemake(["-n", "--cores", "1", *_config(*overlays)], project, check=False)
    assert res.returncode != 0
    # refused at parse time: no job ran, no preset directory was written
    assert not [p for p in (project / "results").iterdir() if p.is_dir() and p.name != "benchmarks"]
    return res.stdout + res.stderr


def test_wrong_figure_ids_are_refused_when_the_workflow_is_parsed(project):
    out = _refused(project, "bad_qualitative.yaml")
    assert "ConfigError" in out and "report.qualitative_images" in out
    assert "[87038, 1]" in out                       # 87038 is in coco_mini, but not in its first 2 images
    assert "valid ids are e.g. [6818, 37777]" in out
    out = _refused(project, "custom.yaml", "bad_custom_bgp.yaml")
    assert "report.bgp_image" in out and "[37777]" in out and "[501, 502, 503]" in out
    out = _refused(project, "images_fast.yaml", "bad_images.yaml")
    assert "report.qualitative_images" in out and "[9]" in out and "the 3 images of photos (images)" in out


def _jobs(dry_run_stdout: str) -> set[str]:
    return {line.split()[1].rstrip(":") for line in dry_run_stdout.splitlines() if line.startswith("rule ")}


def test_images_only_plan_leaves_out_every_stage_that_needs_ground_truth(project):
    res = snakemake(["-n", "--cores", "2", *_config("images_all.yaml")], project)
    out = res.stdout + res.stderr
    assert out.count("no ground truth, so GT edges, scoring") == 1
    assert "edge source(s) ['oracle_gt'] need ground truth (ORACLE): left out" in out
    assert "edges/oracle_gt" not in res.stdout and "edges/hed" in res.stdout and "rule fetch_hed" in res.stdout
    jobs = _jobs(res.stdout)
    assert {"prepare", "edges", "trajectory", "teacher_labels", "distill", "student_infer", "proposals", "bgp",
            "figure_qualitative", "figure_bgp", "teacher_figures", "student_figure"} <= jobs
    assert not {j for j in jobs if j.startswith(("score_", "wps", "tables", "paper_vs_ours", "ab_", "ablation"))}


def test_the_readme_command_line_parses(project):
    """README "Your own images": `--config preset=mine data='{dataset: images, root: photos}'`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--config preset=mine data='{dataset: images, root: photos}'" in readme
    res = snakemake(["-n", "--cores", "2", "--config", "preset=mine", "data={dataset: images, root: photos}"], project)
    assert "results/mine/figures/qualitative.png" in res.stdout and "score_uis" not in res.stdout


def test_custom_coco_dataset_plan_uses_its_own_first_images(project):
    res = snakemake(["-n", "-p", "--cores", "2", *_config("custom.yaml")], project)
    assert "--image-ids 501 502 503 " in res.stdout and "--image-id 501 " in res.stdout


@pytest.mark.e2e
def test_images_only_folder_runs_edges_bgp_and_the_figures(project):
    targets = [f"results/imgs/figures/{f}" for f in ("qualitative.png", "bgp_steps.png")]
    # targets before --configfile (which takes every following argument as a file)
    snakemake([*targets, "--cores", "2", *_config("images_fast.yaml")], project, timeout=900)
    r = project / "results" / "imgs"
    manifest = json.loads((r / "data/manifest.json").read_text())
    assert manifest["gt"] is None
    assert [(im["id"], im["name"]) for im in manifest["images"]] == [(1, "a.jpg"), (2, "sub/c.png"),
                                                                     (3, "sub/gray.jpg")]
    for src in ("sobel", "canny"):
        edges = json.loads((r / f"edges/{src}/manifest.json").read_text())
        assert sorted(edges["images"]) == ["1", "2", "3"]
        assert {d["image_id"] for d in json.loads((r / f"bgp/felzenszwalb/{src}/instances.json").read_text())} \
            <= {1, 2, 3}
    assert not (r / "metrics").exists() and not (r / "tables").exists() and not (r / "data/edge_gt").exists()
    for t in targets:
        assert (project / t).stat().st_size > 0
    again = snakemake([*targets, "-n", "--cores", "2", *_config("images_fast.yaml")], project)
    assert "Nothing to be done" in again.stdout + again.stderr


def _run_all(project: Path, overlay: str, preset: str, hed_weights: Path) -> Path:
    """`snakemake --cores 2` on ``overlay`` (the default sources: HED weights seeded); every figure
    written; returns results/<preset>."""
    seed_hed_weights(hed_weights, project)
    snakemake(["--cores", "2", *_config(overlay)], project, timeout=1800)
    r = project / "results" / preset
    for f in ("qualitative", "bgp_steps", "teacher_pca", "student_strip"):
        assert (r / f"figures/{f}.png").stat().st_size > 0
    return r


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.pypi
def test_images_only_folder_runs_all_with_every_edge_source(project, hed_weights):
    r = _run_all(project, "images_all.yaml", "imgs_all", hed_weights)
    for src in ("sobel", "canny", "hed", "trace_teacher", "trace_student"):
        assert (r / f"bgp/felzenszwalb/{src}/instances.json").is_file()
    assert not (r / "edges/oracle_gt").exists()              # the ORACLE needs GT: left out
    assert not (r / "tables").exists() and not (r / "paper_vs_ours.md").exists()
    again = snakemake(["-n", "--cores", "2", *_config("images_all.yaml")], project)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.pypi
def test_custom_coco_dataset_with_other_ids_runs_to_the_end(project, hed_weights):
    r = _run_all(project, "custom.yaml", "custom", hed_weights)
    summary = json.loads((r / "tables/summary.json").read_text())
    assert set(summary) == {"none", "sobel", "canny", "hed", "oracle_gt", "trace_teacher", "trace_student"}
    assert (r / "paper_vs_ours.md").is_file()
    manifest = json.loads((r / "data/manifest.json").read_text())
    assert [im["id"] for im in manifest["images"]] == [501, 502, 503]
