#!/usr/bin/env python3
"""The fused head-summed attention kernel on a GPU: equal to the PyTorch path, and how much faster.

    python scripts/gpu_kernel_check.py            # needs CUDA + Triton; ~10 s

For a few (heads, tokens, head_dim) shapes (odd sizes, and one SD3.5-L block at 1024 px: 38 x 4096
x 64), bf16 inputs as the paper preset captures them: the largest absolute difference of
``sa_triton.head_prob_sum_`` to ``SAAccumulator``'s PyTorch path (bmm + softmax + head sum, fp32),
and the time of each (CUDA events, median of 5 after a warm-up). Prints one JSON line per shape and
exits non-zero if a difference exceeds 1e-5 (the probabilities are <= 1; rows sum to heads).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from trace_edges.teacher.sa_map import SAAccumulator  # noqa: E402

SHAPES = [(3, 70, 40), (8, 1024, 80), (16, 4096, 72), (38, 4096, 64)]


def _time(fn) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1000)
    return statistics.median(times)


def main() -> int:
    if not torch.cuda.is_available():
        sys.exit("gpu_kernel_check.py: no CUDA device")
    dev = torch.device("cuda")
    bad = 0
    for heads, n, d in SHAPES:
        g = torch.Generator(device="cpu").manual_seed(n + d)
        q = torch.randn(heads, n, d, generator=g).to(dev, torch.bfloat16)
        k = torch.randn(heads, n, d, generator=g).to(dev, torch.bfloat16)
        grid = (1, n)
        maps = {}
        for kernel in ("torch", "triton"):
            acc = SAAccumulator([grid], grid, device=dev, rows=4096, work_mb=1024, kernel=kernel)
            acc.begin()
            acc.add_qk(q, k, grid)
            maps[kernel] = acc.end().clone()

        def run(kernel):
            acc = SAAccumulator([grid], grid, device=dev, rows=4096, work_mb=1024, kernel=kernel)
            return lambda: (acc.begin(), acc.add_qk(q, k, grid))

        diff = float((maps["triton"] - maps["torch"]).abs().max())
        row = {"heads": heads, "tokens": n, "head_dim": d, "max_abs_diff": diff,
               "row_sum_err": float((maps["triton"].sum(1) - 1).abs().max()),
               "torch_s": round(_time(run("torch")), 6), "triton_s": round(_time(run("triton")), 6)}
        row["speedup"] = round(row["torch_s"] / row["triton_s"], 2)
        print(json.dumps(row), flush=True)
        bad += diff > 1e-5
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
