"""Helpers for the tests that run the workflow in a temporary copy of the project.

Shared by tests/test_workflow_e2e.py (local run) and tests/test_cluster.py (the same run through
the SLURM profile); the session fixture `embedded_run` in conftest.py does the local run once.
Importable from test modules because pytest puts tests/ on sys.path (rootdir conftest, no
__init__.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["TRACE_EDGES_NO_PROGRESS"] = "1"
    e["PATH"] = str(Path(PY).parent) + os.pathsep + e.get("PATH", "")
    for k, v in _GIT_IDENTITY.items():
        e.setdefault(k, v)
    return e


def cmd_env(cwd: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a command run in `cwd` gets (see `run`)."""
    e = env()
    if (cwd / "src" / "trace_edges").is_dir():  # run the copy's own code, as the rules do
        e["PYTHONPATH"] = str(cwd / "src")
    if extra_env:
        e.update(extra_env)
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=cmd_env(cwd, extra_env), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def snakemake(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run([PY, "-m", "snakemake", *args], cwd, **kw)


def start_snakemake(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """`snakemake ARGS` in the background (stdout + stderr to `log`), in its own process group so
    that a test can kill the whole run (Snakemake and its jobs) as a crash would."""
    with open(log, "wb") as fh:
        return subprocess.Popen([PY, "-m", "snakemake", *args], cwd=cwd, env=cmd_env(cwd), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def project_files() -> list[str]:
    """What a fresh clone holds: tracked + untracked-not-ignored files (so uncommitted work counts)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def make_snapshot(wd: Path) -> Path:
    """Copy the project into `wd` and commit it there: a fresh clone of the working tree."""
    for rel in project_files():
        dst = wd / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    run(["git", "init", "-q"], wd)
    run(["git", "add", "-A"], wd)
    run(["git", "commit", "-qm", "snapshot"], wd)
    return wd


def head_commit(wd: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], wd).stdout.strip()


def clone_snapshot(src: Path, commit: str, dst: Path) -> Path:
    """A clone of snapshot `src` at `commit`: the same files and the same commit, so the
    provenance in its artifacts (`git describe`) matches a run in `src` byte for byte."""
    run(["git", "clone", "-q", str(src), str(dst)], dst.parent)
    run(["git", "checkout", "-q", commit], dst)
    return dst


def digest_tree(base: Path, skip=("logs", "benchmarks")) -> dict[str, str]:
    """sha256 of every file under `base` (relative path -> hex), top-level folders in `skip` left out."""
    out = {}
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base)
        if p.is_file() and rel.parts[0] not in skip:
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# What a run leaves under results/<preset>/ that is not a result: per-job logs and benchmarks
# (times, memory, host), and the audit report that only `snakemake audit` writes.
NOT_RESULTS = ("logs", "benchmarks", "audit")

# Results that record measured wall-clock times, so they differ between any two runs: the teacher
# latency of each ablation variant and the two reports that print it (patterns relative to
# results/<preset>/). Everything else those reports hold comes from files that are compared
# (ablations/ablations_tidy.csv, tables/summary.json).
TIMED = ("ablations/teacher/*/latency_0.json", "ablations/ablations_latency.csv", "ablations/ablations.md",
         "paper_vs_ours.md")


def results_digest(wd: Path, preset: str = "embedded") -> dict[str, str]:
    """Every result of a run, timings aside: results/<preset>/ (less NOT_RESULTS and TIMED) and what
    it built under build/ (the embedded default's tiny models), keyed by path relative to the project."""
    res = digest_tree(wd / "results" / preset, skip=NOT_RESULTS)
    out = {f"results/{preset}/{k}": v for k, v in res.items() if not any(fnmatch.fnmatch(k, p) for p in TIMED)}
    if (wd / "build").is_dir():
        out.update({f"build/{k}": v for k, v in digest_tree(wd / "build", skip=()).items()})
    return out


def seed_hed_weights(weights: Path, project: Path) -> None:
    """Put the verified weights where a copy of the project's workflow looks for them: its fetch_hed
    rule then only re-verifies them (no network), as in a checkout that fetched them once."""
    from trace_edges.edges import hed_fetch

    dest = project / hed_fetch.DEFAULT_WEIGHTS
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, dest)
