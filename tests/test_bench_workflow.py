"""The timeline parser of benchmarks/bench_workflow.py on a Snakemake log (no workflow run here)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

LOG = """Building DAG of jobs...
Using shell: /usr/bin/bash
Provided cores: 2
Job stats:
job          count
---------  -------
all              1
[Thu Nov 26 05:17:01 2026]
rule build_tiny_models:
    input: src/trace_edges/backbones/tiny.py
    output: build/models/tiny-sd3/model_index.json
    jobid: 7
    reason: Missing output files
    resources: tmpdir=/tmp, mem_mb=3000

[Thu Nov 26 05:17:01 2026]
rule distill:
    jobid: 3
    threads: 2
    resources: tmpdir=/tmp, gpu=1

[Thu Nov 26 05:17:21 2026]
Finished jobid: 7 (Rule: build_tiny_models)
1 of 3 steps (33%) done
[Thu Nov 26 05:17:46 2026]
Finished jobid: 3 (Rule: distill)
2 of 3 steps (67%) done
[Thu Nov 26 05:17:46 2026]
localrule all:
    jobid: 0

[Thu Nov 26 05:17:46 2026]
Finished jobid: 0 (Rule: all)
3 of 3 steps (100%) done
"""


@pytest.fixture(scope="module")
def bw():
    return load_benchmark("bench_workflow")


def test_timeline_reads_start_end_and_threads(bw):
    spans = {j["rule"]: j for j in bw.timeline(LOG)}
    assert set(spans) == {"build_tiny_models", "distill", "all"}
    assert spans["build_tiny_models"] == {"jobid": 7, "rule": "build_tiny_models", "start_s": 0.0,
                                          "threads": 1, "end_s": 20.0}
    assert spans["distill"]["threads"] == 2 and spans["distill"]["end_s"] == 45.0
    assert spans["all"]["start_s"] == spans["all"]["end_s"] == 45.0


def test_a_job_that_never_finished_is_left_out(bw):
    cut = LOG.split("[Thu Nov 26 05:17:46 2026]\nFinished jobid: 3")[0]
    assert [j["rule"] for j in bw.timeline(cut)] == ["build_tiny_models"]
