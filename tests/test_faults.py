"""Injected faults: kill -9 mid-stage (a stage CLI, or a whole Snakemake run), a full disk, two
concurrent runs, an invalid config value. Finished work is kept, the rest redone, and the final
artifacts are bit-identical to an uninterrupted run; errors name the cause and the fix.
docs/reliability.md lists every fault with the test that proves it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_helpers import digest_tree, make_snapshot, run, snakemake, start_snakemake

from trace_edges.backbones.tiny import tiny_model_dir
from trace_edges.config import validate
from trace_edges.data.coco import prepare

# Tiers (pyproject.toml markers): the stage-level faults (real SIGKILLs of the torch stages, a full
# disk) and the runs of the workflow are `slow` (`make test-all`); the config check (dry runs only)
# and the audit report are fast (`make test`).
PY = sys.executable


def _env():
    return dict(os.environ, TRACE_EDGES_NO_PROGRESS="1", HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, coco_mini):
    root = tmp_path_factory.mktemp("faults")
    cfg = validate({"data": {"root": str(coco_mini), "max_images": 4},
                    "teacher": {"backbone": {"model": str(tiny_model_dir("sd3"))}, "shard_size": 4}})
    prepare(cfg["data"], cfg["edge_gt"], root / "data")
    return root, cfg


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and ".done" not in p.parts}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0, group: bool = False) -> bool:
    """SIGKILL ``proc`` (``group``: its whole process group, as a crash of the machine would) as
    soon as ``ready()`` holds; False if it finished first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if ready():
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
    raise AssertionError("the stage never reached the kill point")


def _trajectory_cmd(cfg, root, out):
    return [PY, "-m", "trace_edges", "trajectory", "--params", json.dumps(cfg["teacher"]), "--manifest",
            str(root / "data/manifest.json"), "--shard", "0", "--out-dir", str(out)]


@pytest.mark.slow
def test_kill_during_trajectory_then_resume(prepared):
    root, cfg = prepared
    ref, out = root / "trajectory_ref", root / "trajectory_killed"
    subprocess.run(_trajectory_cmd(cfg, root, ref), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_trajectory_cmd(cfg, root, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = _kill_when(proc, lambda: (out / ".done").is_dir() and len(list((out / ".done").glob("*.key"))) >= 2)
    assert killed, "the job finished before it could be killed"
    assert not (out / "shard_0.json").exists()                       # no declared output after a kill
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    done_before = len(list((out / ".done").glob("*.key")))
    res = subprocess.run(_trajectory_cmd(cfg, root, out), env=_env(), capture_output=True, text=True, check=True)
    assert f"{4 - done_before} computed, {done_before} reused" in res.stderr
    assert _files(out) == _files(ref)                                  # bit-identical to uninterrupted


@pytest.mark.slow
def test_kill_during_scoring_leaves_no_output(prepared):
    root, cfg = prepared
    subprocess.run([PY, "-m", "trace_edges", "edges", "--source", "sobel",
                    "--manifest", str(root / "data/manifest.json"),
                    "--out-dir", str(root / "edges/sobel")], env=_env(), check=True, capture_output=True)
    # 99 thresholds (the paper preset's count) so the job lasts long enough to be killed in the
    # middle; the kill comes at half the uninterrupted run's own duration (no fixed delay, which a
    # faster machine outran: CI once finished the job before a 4 s kill)
    params = json.dumps({**cfg["score"], "edges": dict(cfg["score"]["edges"], thresholds=99)})
    score = lambda out: [PY, "-m", "trace_edges", "score-edges", "--params", params,  # noqa: E731
                         "--manifest", str(root / "data/manifest.json"), "--edges", str(root / "edges/sobel"),
                         "--out", str(out)]
    ref = root / "score_ref.json"
    t0 = time.time()
    subprocess.run(score(ref), env=_env(), check=True, capture_output=True)
    uninterrupted = time.time() - t0
    out = root / "score_killed.json"
    proc = subprocess.Popen(score(out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    assert _kill_when(proc, lambda: time.time() - t0 > uninterrupted / 2), "the job finished before it could be killed"
    assert not out.exists() and not list(root.glob(".score_killed.json.*"))
    subprocess.run(score(out), env=_env(), check=True, capture_output=True)
    assert out.read_bytes() == ref.read_bytes()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_full_disk_gives_a_clear_error_and_keeps_finished_items(prepared, tmp_path):
    root, _ = prepared
    mnt = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "700k"):
        pytest.skip("needs root to mount a small tmpfs (the full-disk fault is injected with one)")
    try:
        cmd = [PY, "-m", "trace_edges", "edges", "--source", "sobel", "--manifest", str(root / "data/manifest.json"),
               "--out-dir", str(mnt / "sobel")]
        res = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "no space left on device" in res.stderr and "fix:" in res.stderr and "Traceback" not in res.stderr
        assert not (mnt / "sobel/manifest.json").exists()
        assert not [p for p in mnt.rglob("*") if p.name.endswith(".tmp")]
        from trace_edges.edges.store import load_edge_map

        kept = sorted((mnt / "sobel").glob("*.png"))
        for p in kept:  # everything left behind is complete
            assert load_edge_map(p).ndim == 2
        # more space: the rerun completes, reusing what was finished
        shutil.copytree(mnt / "sobel", tmp_path / "sobel")
        res = subprocess.run(cmd[:-1] + [str(tmp_path / "sobel")], env=_env(), capture_output=True, text=True,
                             check=True)
        assert (tmp_path / "sobel/manifest.json").exists()
        assert "reused" in res.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ------------------------------------------------------------------------------ distillation
#: a tiny training budget: 3 train images x 3 epochs = 9 steps, a checkpoint every 2 steps
STUDENT = {"lora": {"rank": 4, "alpha": 4}, "train_data": {"transductive": True},   # on the prepared images
           "train": {"epochs": 3, "val_fraction": 0.25, "checkpoint_every": 2, "snapshots": [0.0, 0.5, 1.0]}}


@pytest.fixture(scope="module")
def student_labels(prepared) -> Path:
    from pseudo_labels import write_sobel_pseudo_labels

    from trace_edges.data.manifest import load_manifest

    root, _ = prepared
    return write_sobel_pseudo_labels(load_manifest(root / "data/manifest.json")["images"], root / "teacher/sd3")


def _student_cmd(root: Path, labels: Path, out: Path) -> list[str]:
    teacher = {"backbone": {"model": str(tiny_model_dir("sd3")), "resolution": 128, "device": "cpu"}}
    return [PY, "-m", "trace_edges", "distill", "--params", json.dumps(STUDENT),
            "--teacher-params", json.dumps(teacher), "--manifest", str(root / "data/manifest.json"),
            "--labels", str(labels), "--out-dir", str(out), "--seed", "0", "--threads", "1"]


@pytest.mark.slow
def test_kill_during_distillation_then_resume(prepared, student_labels):
    """`distill` (as rules/student.smk runs it) killed -9 once a checkpoint exists: the rerun
    resumes from it and every file it leaves equals an uninterrupted run's, weights included."""
    root, _ = prepared
    ref, out = root / "student_ref", root / "student_killed"
    subprocess.run(_student_cmd(root, student_labels, ref), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_student_cmd(root, student_labels, out), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert _kill_when(proc, (out / "checkpoints/last.safetensors").is_file), "training finished before the kill"
    assert not (out / "model.safetensors").exists() and not (out / "model.json").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    res = subprocess.run(_student_cmd(root, student_labels, out), env=_env(), capture_output=True, text=True,
                         check=True)
    m = re.search(r"resumed from \S+last\.safetensors at step (\d+)/9", res.stderr)
    assert m and 0 < int(m.group(1)) < 9, res.stderr[-2000:]      # resumed mid-training, not started over
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    assert _files(out) == _files(ref)     # model.json, metrics.csv, snapshots, the last checkpoint too


# ------------------------------------------------------------------------------ concurrency
@pytest.mark.slow
def test_two_concurrent_stage_runs_into_one_directory(prepared):
    """Two `trace-edges edges` processes writing the same directory (no lock at this level: every
    file is written to its own temp name and renamed, and the maps are deterministic) both succeed,
    and the directory is byte-identical to a single run's."""
    root, _ = prepared
    cmd = lambda out: [PY, "-m", "trace_edges", "edges", "--source", "sobel", "--manifest",  # noqa: E731
                       str(root / "data/manifest.json"), "--out-dir", str(out)]
    subprocess.run(cmd(root / "sobel_single"), env=_env(), check=True, capture_output=True)
    procs = [subprocess.Popen(cmd(root / "sobel_shared"), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    assert _files(root / "sobel_shared") == _files(root / "sobel_single")
    assert sorted(p.name for p in (root / "sobel_shared/.done").iterdir()) == \
        sorted(p.name for p in (root / "sobel_single/.done").iterdir())
    assert not [p for p in (root / "sobel_shared").rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------ the workflow
#: a small target with a long last job (the edge scoring of one source, ~1 min on 1 core) after two
#: short ones (prepare, the Sobel maps)
TARGET = "results/embedded/metrics/edges/sobel.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project (a git repo, tests/workflow_helpers.py) for the workflow-level faults."""
    return make_snapshot(tmp_path_factory.mktemp("faults_project"))


def _locked(wd: Path) -> bool:
    return any((wd / ".snakemake/locks").glob("*.lock"))


@pytest.mark.parametrize("override, expected", [
    ("teacher:\n  divergence: foo\n",
     ["'foo' is not one of ['kl', 'jsd', 'mse', 'mae']", "On instance['teacher']['divergence']"]),
    ("teacher:\n  stride: -1\n", ["-1 is less than the minimum of 1", "On instance['teacher']['stride']"]),
    ("teacher:\n  mode: fast\n  divergence: jsd\n",   # a combination: refused before any job, not mid-run
     ["'kl' was expected", "mode: fast exists only for divergence: kl", "On instance['teacher']['divergence']"]),
], ids=["enum", "minimum", "fast-needs-kl"])
def test_invalid_config_value_stops_the_workflow_before_any_job(project, tmp_path, override, expected):
    before = digest_tree(project / "results", skip=())
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    res = snakemake(["-n", "--cores", "1", "--configfile", str(bad)], project, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Error validating config file" in out, out[-3000:]
    for text in expected:
        assert text in out, (text, out[-3000:])
    assert digest_tree(project / "results", skip=()) == before          # nothing written


@pytest.mark.slow
@pytest.mark.e2e
def test_two_concurrent_snakemake_runs_in_one_directory(project, tmp_path):
    """The second run is refused by Snakemake's lock (naming the cause and --unlock); the first
    is not disturbed and completes.

    The second starts while the first runs its scoring job, whose one output is written atomically
    at the end. (Started while a job of the first run has written part of its outputs, the second
    is refused one step earlier, by Snakemake's incomplete-files check: docs/reliability.md.)"""
    first = start_snakemake(["--cores", "1", TARGET], project, tmp_path / "first.log")
    score_log = project / "results/embedded/logs/score/edges_sobel.log"
    try:
        t0 = time.time()
        while not score_log.is_file() and first.poll() is None and time.time() - t0 < 600:
            time.sleep(0.1)
        assert first.poll() is None and _locked(project), (tmp_path / "first.log").read_text()[-3000:]
        second = snakemake(["--cores", "1", TARGET], project, check=False)
        assert first.poll() is None, "the first run ended before the second was refused: no overlap to test"
        out = second.stdout + second.stderr
        assert second.returncode != 0, out[-3000:]
        assert "Directory cannot be locked" in out and "--unlock" in out, out[-3000:]
        assert first.wait(timeout=900) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert json.loads((project / TARGET).read_text())["provenance"]
    assert not _locked(project)


@pytest.mark.slow
@pytest.mark.e2e
def test_kill_9_of_a_snakemake_run_then_rerun(project, tmp_path):
    """Snakemake and its running job killed -9 together (a crash) during the scoring job: the
    stale lock is reported with its fix (--unlock); after it, the rerun redoes only the scoring,
    and every result equals an uninterrupted run's (`project`)."""
    if not (project / TARGET).is_file():            # the uninterrupted reference (normally made above)
        snakemake(["--cores", "1", TARGET], project)
    wd = tmp_path / "crashed"
    run(["git", "clone", "-q", str(project), str(wd)], tmp_path)   # the same commit: same provenance
    proc = start_snakemake(["--cores", "1", TARGET], wd, tmp_path / "killed.log")
    score_log = wd / "results/embedded/logs/score/edges_sobel.log"
    assert _kill_when(proc, score_log.is_file, timeout=600, group=True), (tmp_path / "killed.log").read_text()
    assert not (wd / TARGET).exists()
    kept = {p: (wd / p).stat().st_mtime_ns for p in ("results/embedded/data/manifest.json",
                                                      "results/embedded/edges/sobel/manifest.json")}
    res = snakemake(["--cores", "1", TARGET], wd, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Directory cannot be locked" in out and "--unlock" in out, out[-3000:]
    snakemake(["--unlock"], wd)
    res = snakemake(["--cores", "1", TARGET], wd)
    out = res.stdout + res.stderr
    assert "rule score_edges:" in out and "rule prepare:" not in out and "rule edges:" not in out, out[-3000:]
    assert {p: (wd / p).stat().st_mtime_ns for p in kept} == kept        # finished jobs not redone
    skip = ("logs", "benchmarks")
    assert digest_tree(wd / "results/embedded", skip=skip) == digest_tree(project / "results/embedded", skip=skip)


def test_audit_failure_names_the_fix():
    """A corrupted cached artifact is found by `trace-edges audit` (tests/test_workflow_e2e.py flips a
    byte in a real run); its report ends with how to restore or remake the files."""
    from trace_edges.audit import Row, format_table

    text = format_table([Row("results/embedded/edges/canny/1.png", "hash", "differs", "md5 a != b"),
                         Row("results/embedded/edges/canny/2.png", "hash", "match")])
    assert "AUDIT FAILED" in text and "1.png" in text and "fix (hash)" in text and "dvc checkout" in text
    assert "fix (provenance)" not in text
    assert "fix" not in format_table([Row("x", "hash", "match")])
