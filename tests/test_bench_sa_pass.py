"""benchmarks/bench_sa_pass.py runs end to end at a toy size and writes every variant."""

from __future__ import annotations

import json

from conftest import load_benchmark


def test_bench_sa_pass_toy_run(tmp_path):
    bench = load_benchmark("bench_sa_pass")
    out = tmp_path / "sa_pass.json"
    assert bench.main(["--threads", "1", "--repeats", "1", "--heads", "2", "--dim", "8", "--grid", "6",
                       "--text", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 5 and all(r["wall_s"] >= 0 and r["cpu_s"] >= 0 for r in rows)
