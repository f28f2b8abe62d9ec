"""Injected faults: kill -9 mid-stage, a full disk. Finished work is kept, the rest redone, and the
final artifacts are bit-identical to an uninterrupted run; errors name the cause and the fix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trace_edges.backbones.tiny import tiny_model_dir
from trace_edges.config import validate
from trace_edges.data.coco import prepare

pytestmark = pytest.mark.slow
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
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and ".done" not in p.parts}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False if it finished first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the stage never reached the kill point")


def _invert_cmd(cfg, root, out):
    import json

    return [PY, "-m", "trace_edges", "invert", "--params", json.dumps(cfg["teacher"]), "--manifest",
            str(root / "data/manifest.json"), "--shard", "0", "--out-dir", str(out)]


def test_kill_during_inversion_then_resume(prepared):
    root, cfg = prepared
    ref, out = root / "invert_ref", root / "invert_killed"
    subprocess.run(_invert_cmd(cfg, root, ref), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_invert_cmd(cfg, root, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = _kill_when(proc, lambda: len(list((out / ".done").glob("*.key"))) >= 2 if (out / ".done").is_dir() else False)
    assert killed, "the job finished before it could be killed"
    assert not (out / "shard_0.json").exists()                       # no declared output after a kill
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    done_before = len(list((out / ".done").glob("*.key")))
    res = subprocess.run(_invert_cmd(cfg, root, out), env=_env(), capture_output=True, text=True, check=True)
    assert f"{4 - done_before} computed, {done_before} reused" in res.stderr
    assert _files(out) == _files(ref)                                  # bit-identical to uninterrupted


def test_kill_during_scoring_leaves_no_output(prepared):
    root, cfg = prepared
    import json

    subprocess.run([PY, "-m", "trace_edges", "edges", "--source", "sobel", "--manifest", str(root / "data/manifest.json"),
                    "--out-dir", str(root / "edges/sobel")], env=_env(), check=True, capture_output=True)
    score = lambda out: [PY, "-m", "trace_edges", "score-edges", "--params", json.dumps(cfg["score"]),  # noqa: E731
                         "--manifest", str(root / "data/manifest.json"), "--edges", str(root / "edges/sobel"),
                         "--out", str(out)]
    ref = root / "score_ref.json"
    subprocess.run(score(ref), env=_env(), check=True, capture_output=True)
    out = root / "score_killed.json"
    proc = subprocess.Popen(score(out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    assert _kill_when(proc, lambda: time.time() - t0 > 4.0)
    assert not out.exists() and not list(root.glob(".score_killed.json.*"))
    subprocess.run(score(out), env=_env(), check=True, capture_output=True)
    assert out.read_bytes() == ref.read_bytes()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


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
        res = subprocess.run(cmd[:-1] + [str(tmp_path / "sobel")], env=_env(), capture_output=True, text=True, check=True)
        assert (tmp_path / "sobel/manifest.json").exists()
        assert f"reused" in res.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
