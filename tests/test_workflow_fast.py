"""The fast tier's one end-to-end run (`make test`): the whole default workflow on a small overlay.

`snakemake --cores 2 --configfile config.yaml tests/configs/fast.yaml` in a temporary copy of the
project (tests/workflow_helpers.make_snapshot): every stage of the embedded default (data,
Sobel/Canny, the ORACLE GT edges, the tiny-SD3 teacher in two trajectory shards, the student,
proposals, BGP, WPS, scoring, tables, figures, paper_vs_ours; not HED, whose weights come from the
package index) on 2 images, 1 student epoch, 5 BSDS thresholds, no ablation grids;
a few minutes on 2 cores. Its outputs go under results/fast/ (`preset: fast`).

The full embedded run and what is checked on it (DVC flow, audit, ablation cells, determinism) is
tests/test_workflow_e2e.py, in the slow tier (`make test-all`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, make_snapshot, run, snakemake

pytestmark = pytest.mark.e2e

OVERLAY = "tests/configs/fast.yaml"
CONFIG = ["--configfile", "config.yaml", OVERLAY]
R = Path("results/fast")
EDGE_SOURCES = ("sobel", "canny", "oracle_gt", "trace_teacher", "trace_student")   # hed: not offline
SOURCES = ("none", *EDGE_SOURCES)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A git repo holding a copy of the project, after one run of the fast overlay."""
    wd = make_snapshot(tmp_path_factory.mktemp("fast"))
    snakemake(["--cores", "2", *CONFIG], wd, timeout=1800)
    return wd


def _numbers(obj, path=""):
    """(path, value) of every number in a JSON document (bools aside)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_overlay_is_what_the_test_claims():
    over = yaml.safe_load((ROOT / OVERLAY).read_text())
    assert over["preset"] == "fast" and over["ablations"]["enabled"] is False
    assert over["data"]["max_images"] == 2 and over["student"]["train"]["epochs"] == 1


def test_summary_holds_finite_metrics_for_every_source(workdir):
    summary = json.loads((workdir / R / "tables/summary.json").read_text())
    assert set(summary) == set(SOURCES)
    for src, row in summary.items():
        for key in ("AP", "AP50", "AR100", "PQ", "SQ", "RQ"):
            v = row[key]
            assert v is not None and math.isfinite(v) and 0.0 <= v <= 1.0, (src, key, v)
    for src in EDGE_SOURCES:
        for key in ("ODS", "OIS", "clDice"):
            v = summary[src][key]
            assert v is not None and math.isfinite(v) and 0.0 <= v <= 1.0, (src, key, v)
    assert summary["none"]["ODS"] is None          # the baseline row has no edge map
    # oracle semantics: the connectivity-only baseline already recovers most of the panoptic GT
    assert summary["none"]["PQ"] > 0.5
    md = (workdir / R / "tables/results.md").read_text()
    assert "ORACLE" in md and "| sobel |" in md and "| trace_student |" in md


def test_every_metrics_file_is_finite_and_on_the_overlay_images(workdir):
    files = sorted((workdir / R / "metrics").rglob("*.json"))
    # one per source and task: UIS and WPS for 'none' + every edge source, edges for the edge sources
    assert {str(p.relative_to(workdir / R / "metrics")) for p in files} == (
        {f"uis/{s}.json" for s in SOURCES} | {f"wps/{s}.json" for s in SOURCES}
        | {f"edges/{s}.json" for s in EDGE_SOURCES})
    for p in files:
        doc = json.loads(p.read_text())
        nums = list(_numbers(doc.get("metrics", doc)))
        assert nums, p
        bad = [(k, v) for k, v in nums if not math.isfinite(v)]
        assert not bad, (p, bad[:5])
        assert doc.get("num_images", doc.get("metrics", {}).get("n_images")) == 2, p


def test_stages_ran_on_the_two_overlay_images_with_provenance(workdir):
    manifest = json.loads((workdir / R / "data/manifest.json").read_text())
    ids = sorted(int(im["id"]) for im in manifest["images"])
    assert ids == [6818, 37777]
    iep = json.loads((workdir / R / "teacher/sd3/iep.json").read_text())
    assert len(iep["images"]) == 2 and sum(iep["t_star_histogram"].values()) == 2
    for shard in (0, 1):                            # teacher.shard_size: 1 -> two trajectory jobs
        assert (workdir / R / "logs" / f"teacher/trajectory_{shard}.log").exists()
    for src in EDGE_SOURCES:
        edges = json.loads((workdir / R / "edges" / src / "manifest.json").read_text())
        assert edges["provenance"]["code_digest"], src
        assert len(list((workdir / R / "edges" / src).glob("*.png"))) == 2, src
    # the student trained on 2 coco_train_mini images the teacher labelled, none of them evaluated on
    train = json.loads((workdir / R / "train_data/manifest.json").read_text())
    assert train["dataset"] == "train_data" and train["num_images"] == 2
    assert not {im["sha256"] for im in train["images"]} & {im["sha256"] for im in manifest["images"]}
    assert len(json.loads((workdir / R / "teacher/sd3/train/labels/manifest.json").read_text())["images"]) == 2
    model = json.loads((workdir / R / "student/sd3/model.json").read_text())
    td = model["training_data"]
    assert td["transductive"] is False and td["list_sha256"] == train["list_sha256"]
    assert not {int(i) for i in td["train_ids"] + td["val_ids"]} & set(ids)
    student = json.loads((workdir / R / "edges/trace_student/manifest.json").read_text())
    assert student["provenance"]["model"]["family"] == "sd3"
    assert len(student["provenance"]["params"]["model_sha256"]) == 64
    for fig in ("qualitative.png", "qualitative.pdf", "bgp_steps.png", "teacher_pca.png", "student_strip.png"):
        assert (workdir / R / "figures" / fig).stat().st_size > 5_000, fig
    pvo = (workdir / R / "paper_vs_ours.md").read_text()
    assert "Run: preset `fast`" in pvo and "## Claim:" in pvo
    # the overlay's preset keeps its outputs apart from the embedded default's
    assert not (workdir / "results/embedded").exists()
    assert not (workdir / R / "ablations").exists()


def test_every_job_left_its_log_and_benchmark(workdir):
    for rule in ("prepare", "edges/sobel", "edges/canny", "proposals/felzenszwalb", "bgp/felzenszwalb/canny",
                 "wps/none", "score/uis_none", "score/wps_sobel", "score/edges_canny", "tables",
                 "teacher/build_tiny_models", "teacher/iep", "teacher/labels", "student/distill",
                 "student/infer", "student/prepare_train", "teacher/train_trajectory_0", "teacher/train_labels"):
        assert (workdir / R / "logs" / f"{rule}.log").exists(), rule
        assert (workdir / R / "benchmarks" / f"{rule}.tsv").exists(), rule


def test_second_run_has_nothing_to_do(workdir):
    res = snakemake(["-n", "--cores", "2", *CONFIG], workdir)
    assert "Nothing to be done" in res.stdout + res.stderr


def test_run_leaves_the_checkout_clean(workdir):
    """No git-tracked file written (the provenance records `git describe`; a dirty tree changes it)."""
    status = run(["git", "status", "--porcelain", "--untracked-files=no"], workdir).stdout
    assert status == "", status


def test_changing_one_stage_parameter_reruns_only_its_jobs(workdir, tmp_path):
    over = tmp_path / "override.yaml"
    over.write_text("bgp:\n  merge: {iou: 0.6}\n")
    out = "\n".join(snakemake(["-n", "--cores", "2", *CONFIG, str(over)], workdir).stdout.splitlines())
    assert "rule bgp:" in out and "rule score_uis:" in out and "rule tables:" in out, out[-3000:]
    for untouched in ("rule prepare:", "rule edges:", "rule proposals:", "rule wps:", "rule score_edges:",
                      "rule trajectory:", "rule iep:", "rule distill:"):
        assert untouched not in out, untouched


def _dry_run_after_edit(workdir: Path, rel: str) -> str:
    """`snakemake -n` with a comment appended to ``rel``; the file (and its mtime) restored after."""
    import os

    path = workdir / rel
    text, st = path.read_text(), path.stat()
    try:
        path.write_text(text + "\n# an edit\n")
        return "\n".join(snakemake(["-n", "--cores", "2", *CONFIG], workdir).stdout.splitlines())
    finally:
        path.write_text(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_editing_the_thinning_code_reschedules_prepare(workdir):
    """metrics/thin.py builds the thinned instance-edge GT: the derived code set of `prepare` holds
    it, so editing it reruns the GT (and everything scored against it), not only the scoring."""
    out = _dry_run_after_edit(workdir, "src/trace_edges/metrics/thin.py")
    assert "rule prepare:" in out and "rule score_edges:" in out, out[-3000:]


def test_editing_bgp_code_reruns_bgp_and_not_the_teacher(workdir):
    out = _dry_run_after_edit(workdir, "src/trace_edges/bgp/merge.py")
    assert "rule bgp:" in out, out[-3000:]
    for untouched in ("rule prepare:", "rule trajectory:", "rule teacher_labels:", "rule distill:", "rule edges:"):
        assert untouched not in out, untouched
    assert "Nothing to be done" in snakemake(["-n", "--cores", "2", *CONFIG], workdir).stdout


def test_changing_a_teacher_key_reruns_the_trajectory(workdir, tmp_path):
    """The trajectory's params are the whole teacher block: a result-affecting key reruns it
    (tests/test_teacher.py checks every key against the per-image cache key)."""
    over = tmp_path / "teacher.yaml"
    over.write_text("teacher:\n  eps: 1.0e-10\n")
    out = "\n".join(snakemake(["-n", "--cores", "2", *CONFIG, str(over)], workdir).stdout.splitlines())
    assert "rule trajectory:" in out and "rule teacher_labels:" in out, out[-3000:]
    assert "rule prepare:" not in out and "rule edges:" not in out


GRADIENT = [s for s in EDGE_SOURCES if s not in ("trace_teacher", "trace_student")]   # rule `edges`
SHARD_RULES = {"edges_shard": 2 * len(GRADIENT), "proposals_shard": 2, "bgp_shard": 2 * len(EDGE_SOURCES),
               "wps_shard": 2 * len(SOURCES), "score_edges_shard": 2 * len(EDGE_SOURCES)}


def test_sharded_stages_give_the_unsharded_metrics(workdir, tmp_path):
    """The CPU stages rerun in a copy of the finished run, sharded one image per shard
    (tests/configs/fast_sharded.yaml) and from scratch (their outputs deleted; the teacher and
    student are kept): every metrics file has the same numbers, and each shard job ran."""
    import shutil

    wd = tmp_path / "sharded"
    shutil.copytree(workdir, wd, symlinks=True)
    before = {p.relative_to(wd / R / "metrics"): json.loads(p.read_text())
              for p in (wd / R / "metrics").rglob("*.json")}
    for rel in (*(f"edges/{s}" for s in GRADIENT), "proposals", "bgp", "wps", "metrics"):
        shutil.rmtree(wd / R / rel)
    res = snakemake(["--cores", "2", *CONFIG, "tests/configs/fast_sharded.yaml"], wd, timeout=1200)
    out = res.stdout + res.stderr
    for rule, n in SHARD_RULES.items():
        assert re.search(rf"^{rule}\s+{n}$", out, flags=re.M), (rule, n, out[-3000:])
    for rule in ("trajectory", "distill", "student_infer", "teacher_labels"):
        assert not re.search(rf"^{rule}\s+\d+$", out, flags=re.M), rule
    assert (wd / R / "metrics/edges/sobel/shards/shard_1.json").is_file()
    after = {p.relative_to(wd / R / "metrics"): json.loads(p.read_text())
             for p in (wd / R / "metrics").rglob("*.json") if "shards" not in p.parts and "counts" not in p.parts}
    assert set(after) == set(before)
    for rel, doc in before.items():
        assert list(_numbers({k: v for k, v in doc.items() if k != "provenance"})) == list(
            _numbers({k: v for k, v in after[rel].items() if k != "provenance"})), rel
