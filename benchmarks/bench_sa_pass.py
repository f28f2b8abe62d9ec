#!/usr/bin/env python3
"""The teacher's per-block SA pass on one SD3.5-L-sized block (38 heads x 64, 4096 image tokens, fp32).

Times, on random Q/K/V of that size (seed 0), one block added into the aggregated map by
``SAAccumulator.add_qk`` with the max-subtracted softmax (no lse) and with the forward's
log-sum-exp (``lse_image_only`` True: self-attention; False: joint attention, the lse also over
333 text keys), next to the stock fused ``F.scaled_dot_product_attention`` of the same block (what
the forward itself pays). Best of ``--repeats`` wall seconds and CPU seconds (process time) per
variant; CPU seconds are the steadier measure on a shared machine. Writes
``results/benchmarks/sa_pass.json``.

    nice python benchmarks/bench_sa_pass.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import machine_info  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--heads", type=int, default=38)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--text", type=int, default=333)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "sa_pass.json"))
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from trace_edges.teacher.sa_map import SAAccumulator

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    h, d, grid = args.heads, args.dim, (args.grid, args.grid)
    n = grid[0] * grid[1]
    q, k, v = (torch.randn(1, h, n + args.text, d, generator=g) for _ in range(3))
    qi, ki = q[0, :, :n], k[0, :, :n]
    s = d ** -0.5
    lse_self = torch.logsumexp(s * qi @ ki.transpose(-1, -2), -1)
    lse_joint = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, dropout_p=0.0, is_causal=False, attn_mask=None, scale=s)[1][0, :, :n]
    acc = SAAccumulator([grid], grid)

    def add(lse=None, image_only=False):
        acc.begin()
        acc.add_qk(qi, ki, grid, s, lse=lse, lse_image_only=image_only)
        acc.end()

    variants = {
        "stock_sdpa_self (forward, image tokens only)": lambda: F.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n],
                                                                                              v[:, :, :n]),
        "stock_sdpa_joint (forward, image + text)": lambda: F.scaled_dot_product_attention(q, k, v),
        "map_pass_softmax (max/sub/exp/sum/div)": add,
        "map_pass_lse_self (exp only)": lambda: add(lse_self, True),
        "map_pass_lse_joint (exp + renormalise)": lambda: add(lse_joint, False),
    }
    rows = []
    for name, fn in variants.items():
        fn()
        wall, cpu = [], []
        for _ in range(args.repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        rows.append({"variant": name, "wall_s": round(min(wall), 3), "cpu_s": round(min(cpu), 3),
                     "loadavg": [round(x, 2) for x in os.getloadavg()]})
        print(json.dumps(rows[-1]), flush=True)
    out = {"what": __doc__.split("\n\n")[0].strip(), "heads": h, "head_dim": d, "tokens": n, "text_tokens": args.text,
           "threads": args.threads, "repeats": args.repeats, "machine": machine_info(), "rows": rows}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
