"""benchmarks/bench_teacher_scale.py: its presets and row format (no heavy run here)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

from trace_edges.backbones.real import REAL_ARCHS, denoiser_config
from trace_edges.families import DIFFUSION_FAMILIES


@pytest.fixture(scope="module")
def bts():
    return load_benchmark("bench_teacher_scale")


def test_row_fields_are_the_issues(bts):
    """The issue's fields, in its order, plus which kernel built the map (teacher.sa_kernel resolved)."""
    assert bts.FIELDS[-1] == "sa_kernel"
    assert bts.FIELDS[:-1] == ("family", "resolution", "tokens", "blocks", "heads", "head_dim", "params_denoiser",
                          "depth", "device", "dtype", "steps", "bare_s_per_image", "teacher_s_per_image",
                          "overhead", "peak_mem_mb", "map_mode")


def test_presets(bts):
    for name, preset in bts.PRESETS.items():
        assert sum(naive for *_, naive in preset["rows"]) == 1, name   # one naive-equality row
        for family, res, depth, dtype, _ in preset["rows"]:
            assert family in REAL_ARCHS and res % 64 == 0 and dtype in ("float32", "bfloat16")
            if depth is not None:
                denoiser_config(family, depth)  # a valid truncation
    gpu = bts.PRESETS["gpu"]
    assert gpu["device"] == "cuda" and gpu["stride"] == 100 and gpu["student"]
    assert {f for f, _, d, *_ in gpu["rows"] if d is None} == set(DIFFUSION_FAMILIES)   # all five, full depth
