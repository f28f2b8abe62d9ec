#!/usr/bin/env python3
"""The teacher at real size: the paper's denoisers at full width with random weights (no download).

For each row (family, resolution, depth, device, dtype) a FRESH subprocess builds the real-size
denoiser and VAE (``trace_edges.backbones.real``: the checkpoint's config, random weights from seed
0, no text encoders; the null prompt is a seeded random tensor of the real shapes), encodes one
coco_mini image, runs one untimed warm-up forward, then times on the same latent:

* ``bare_s_per_image``: the inversion steps of the trajectory (``teacher.stride``; ``steps`` of
  them) with the stock attention processors, no capture;
* ``teacher_s_per_image``: ``run_teacher``'s step loop on the same steps (capture + the
  aggregated SA per step + IEP + ABDiv; ``info["walk_s"]``); the VAE encode both start from is
  excluded from both;
* ``overhead`` = teacher / bare; ``peak_mem_mb``: the process peak RSS during the teacher walk
  (CPU; ``VmHWM`` reset before it) or ``torch.cuda.max_memory_allocated`` (GPU);
* ``map_mode``: which exact path ran (``teacher.map_budget_mb``, default 1024 MiB).

Besides the rows the JSON records, per row, the memory check (teacher peak minus bare peak against
2 aggregated maps + one block's working set) and, for ``--naive`` rows, the equality of t*, the IEP
curve and the edge map to the reference definitions (``aggregate_attention`` + ``iep`` + ``abdiv``
on the same captured Q/K, heads fed one at a time so the reference fits in memory). Presets:

    nice python benchmarks/bench_teacher_scale.py --preset cpu --threads 2    # the committed CPU rows
    python benchmarks/bench_teacher_scale.py --preset gpu                     # scripts/gpu_rehearsal.sh

``gpu``: the five diffusion families at their native resolution, full depth, bf16, the paper's
stride 100 (11 steps), plus the student's latency (one forward at t = 0 + decoder) at the same
size. Writes ``results/benchmarks/teacher_scale[_<preset>].json`` and ``.csv`` (the cpu preset
writes ``teacher_scale.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import PeakRSS, machine_info  # noqa: E402

FIELDS = ("family", "resolution", "tokens", "blocks", "heads", "head_dim", "params_denoiser", "depth", "device",
          "dtype", "steps", "bare_s_per_image", "teacher_s_per_image", "overhead", "peak_mem_mb", "map_mode",
          "sa_kernel")
IMAGE = ROOT / "data" / "coco_mini" / "images" / "000000397133.jpg"

#: (family, resolution, depth, dtype, naive check); depth None = full
PRESETS: dict[str, dict[str, Any]] = {
    # stride 1000: steps [0, 999], one IEP point (the 2 shared cores allow no more; the per-step
    # cost is what is compared, and it does not depend on the step count)
    "cpu": {"device": "cpu", "stride": 1000, "student": False, "rows": [
        ("sd3", 1024, 2, "float32", False),
        ("sd15", 512, None, "float32", False),
        ("pixart", 512, None, "float32", False),
        ("sd3", 1024, 1, "float32", True),
        ("flux", 1024, (1, 1), "float32", False),
    ]},
    "gpu": {"device": "cuda", "stride": 100, "student": True, "rows": [
        ("sd15", 512, None, "bfloat16", False),
        ("sdxl", 1024, None, "bfloat16", False),
        ("sd3", 1024, None, "bfloat16", False),
        ("pixart", 1024, None, "bfloat16", False),
        ("flux", 1024, None, "bfloat16", False),
        ("sd3", 1024, 2, "bfloat16", True),
    ]},
}

TEACHER = dict(trajectory="inversion", mode="exact", divergence="kl", neighbourhood=4, chunk=1024, eps=1e-12,
               map_budget_mb=1024)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Mem:
    """Peak memory of a timed section: RSS on CPU, allocated bytes on CUDA (MiB)."""

    def __init__(self, device):
        self.device = device
        self.rss = PeakRSS()

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss.reset()

    def peak_mb(self) -> float:
        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        return self.rss.peak_mb()


def _bare_walk(bb, x0, steps) -> float:
    """The same inversion steps as run_teacher, stock processors, no capture: wall seconds."""
    import torch

    t0 = time.perf_counter()
    x = x0
    with torch.no_grad():
        for k, t in enumerate(steps):
            out = bb.predict(x, t)
            if k + 1 < len(steps):
                x = bb.step(x, t, steps[k + 1], out)
    _sync(bb.device)
    return time.perf_counter() - t0


def _naive_check(res, kept: dict, out_grid) -> dict[str, Any]:
    """t*, the IEP curve and the edge map against the reference definitions on the same Q/K."""
    import numpy as np

    from trace_edges.teacher.divergence import abdiv, aggregate_attention, iep

    maps = {}
    for t, (qs, ks, grids, scales) in kept.items():
        # every block has the same head count, so the mean over (block, head) pairs is the definition's
        # mean over blocks of the head mean; one head per pseudo-block keeps the reference in memory
        hq = [q[h:h + 1] for q in qs for h in range(q.shape[0])]
        hk = [k[h:h + 1] for k in ks for h in range(k.shape[0])]
        hg = [g for q, g in zip(qs, grids) for _ in range(q.shape[0])]
        hs = [s for q, s in zip(qs, scales) for _ in range(q.shape[0])]
        maps[t] = aggregate_attention(hq, hk, hg, out_grid, hs)
    t_ref, curve_ref = iep(maps)
    edge_ref = abdiv(maps[t_ref], out_grid).numpy()
    edge = res.abdiv_at(t_ref)
    return {"t_star_equal": bool(res.t_star == t_ref), "t_star": res.t_star,
            "edge_max_abs_diff": float(np.abs(edge - edge_ref).max()),
            "edge_max_abs": float(np.abs(edge_ref).max()),
            "curve_max_rel_diff": max(abs(res.divergence_curve[t] - v) / abs(v) for t, v in curve_ref.items())}


def worker(family: str, resolution: int, depth, dtype_name: str, device_name: str, stride: int, naive: bool,
           student: bool, threads: int | None) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from trace_edges.backbones.loader import DTYPES
    from trace_edges.backbones.real import param_count, real_backbone
    from trace_edges.data.images import load_rgb
    from trace_edges.teacher.sa_map import ACC_ROWS, WORK_MB, map_bytes
    from trace_edges.teacher.trajectory import run_teacher

    device = torch.device(device_name)
    t0 = time.perf_counter()
    bb = real_backbone(family, resolution=resolution, depth=depth, dtype=DTYPES[dtype_name], device=device)
    build_s = time.perf_counter() - t0
    rgb = load_rgb(IMAGE)
    steps = bb.timesteps(stride)
    sites = bb.attention_sites()
    grids = [s.grid for s in sites]
    out_grid = max(grids, key=lambda g: (g[0] * g[1], g))
    attn = [s.module for s in sites]
    heads = sorted({int(a.heads) for a in attn})
    head_dims = sorted({int(a.inner_dim) // int(a.heads) for a in attn})
    with torch.no_grad():
        x0 = bb.encode(rgb)
        bb.predict(x0, 0)  # warm-up (kernels, allocator), untimed
    _sync(device)
    mem = _Mem(device)
    mem.reset()
    bare_s = _bare_walk(bb, x0, steps)
    bare_peak = mem.peak_mb()

    kept: dict = {}

    def keep(t, qs, ks, g, og, scales):
        kept[t] = ([q.cpu() for q in qs], [k.cpu() for k in ks], g, scales)

    bb.encode = lambda _rgb: x0  # the walk starts from the same latent; the encode is not timed
    params = dict(TEACHER, stride=stride, sa_kernel=os.environ.get("TRACE_EDGES_SA_KERNEL", "auto"))
    mem.reset()
    res = run_teacher(bb, rgb, params, on_step=keep if naive else None)
    _sync(device)
    teacher_peak = mem.peak_mb()
    teacher_s = res.info["walk_s"]
    n = out_grid[0] * out_grid[1]
    d_max = max(head_dims)
    kernel = res.info.get("sa_kernel")
    if kernel == "triton":   # the fused kernel: its per-head log-sum-exp + one block's Q/K
        block_ws = (max(heads) * n * 4 + 2 * max(heads) * n * d_max * 4) / 2 ** 20
    else:   # the all-heads logits buffer (WORK_MB; 1 GiB on a GPU) + its head sum + one block's Q/K
        work = WORK_MB if device.type == "cpu" else 1024
        block_ws = work + (ACC_ROWS * n * 4 + 2 * max(heads) * n * d_max * 4) / 2 ** 20
    row = {
        "family": family, "resolution": resolution, "tokens": n, "blocks": len(sites),
        "heads": heads[0] if len(heads) == 1 else "/".join(map(str, heads)),
        "head_dim": head_dims[0] if len(head_dims) == 1 else "/".join(map(str, head_dims)),
        "params_denoiser": param_count(bb.denoiser), "depth": "full" if depth is None else
        ("+".join(map(str, depth)) if isinstance(depth, (tuple, list)) else str(depth)),
        "device": device_name, "dtype": dtype_name, "steps": len(steps), "bare_s_per_image": round(bare_s, 3),
        "teacher_s_per_image": round(teacher_s, 3), "overhead": round(teacher_s / bare_s, 3),
        "peak_mem_mb": round(teacher_peak, 1), "map_mode": res.info["map_mode"], "sa_kernel": kernel,
    }
    extra = {"build_s": round(build_s, 1), "grids": sorted({tuple(g) for g in grids}),
             "memory_check": {"bare_peak_mb": round(bare_peak, 1), "teacher_peak_mb": round(teacher_peak, 1),
                              "extra_mb": round(teacher_peak - bare_peak, 1), "map_mb": map_bytes(out_grid) / 2 ** 20,
                              "block_working_set_mb": round(block_ws, 1),
                              "bound_mb": round(2 * map_bytes(out_grid) / 2 ** 20 + block_ws, 1)}}
    extra["memory_check"]["met"] = extra["memory_check"]["extra_mb"] <= extra["memory_check"]["bound_mb"]
    if naive:
        extra["memory_check"]["applies"] = False   # this row keeps every step's Q/K for the reference
        extra["naive_check"] = _naive_check(res, kept, out_grid)
    if student:
        extra["student"] = _student_latency(bb, rgb, device)
    return {"row": row, "extra": extra}


def _student_latency(bb, rgb, device) -> dict[str, Any]:
    """One student forward (t = 0 with LoRA + decoder, predict_edge) on this backbone: median of 3."""
    import statistics

    from trace_edges.config import load_workflow_config
    from trace_edges.student.infer import predict_edge
    from trace_edges.student.model import StudentModel

    del bb.encode  # the instance override above; the student encodes its input itself
    cfg = load_workflow_config(ROOT / "config.yaml", ROOT / "config.paper.yaml")
    model = StudentModel(bb, cfg["student"], seed=0)
    predict_edge(model, rgb)
    walls = []
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        predict_edge(model, rgb)
        _sync(device)
        walls.append(time.perf_counter() - t0)
    return {"student_s_per_image": round(statistics.median(walls), 4), "repeats": 3,
            "paper": {"teacher_ms": 3682.0, "student_ms": 45.0, "device": "A100"}}


def _part_path(args, row) -> Path:
    family, res, depth, dtype, naive = row
    d = "full" if depth is None else "-".join(map(str, depth)) if isinstance(depth, (tuple, list)) else depth
    name = f"{family}_{res}_{d}_{dtype}{'_naive' if naive else ''}.json"
    kernel = "" if args.sa_kernel == "auto" else f"_{args.sa_kernel}"
    return Path(args.out_dir) / f".teacher_scale_{args.preset}{kernel}" / name


def _run_row(args, row) -> dict[str, Any]:
    """One row in a fresh subprocess; its result is kept under ``.teacher_scale_<preset>/`` so an
    interrupted run resumes (``--resume``) without redoing the finished rows."""
    part = _part_path(args, row)
    if args.resume and part.is_file():
        return json.loads(part.read_text())
    family, res, depth, dtype, naive = row
    out = Path(args.out_dir) / f".scale_{family}_{res}_{os.getpid()}.json"
    cmd = [sys.executable, __file__, "--worker", json.dumps([family, res, depth, dtype, naive]),
           "--worker-out", str(out), "--preset", args.preset]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    path = os.pathsep.join([str(ROOT / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", TRACE_EDGES_NO_PROGRESS="1")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    result = json.loads(out.read_text())
    out.unlink()
    result["extra"].update(wall_s=round(time.perf_counter() - t0, 1), loadavg_before=load0,
                           loadavg_after=os.getloadavg())
    print(json.dumps(result["row"]), flush=True)
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    ap.add_argument("--only", default=None, help="comma-separated families to run (default: every row)")
    ap.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--resume", action="store_true", help="reuse the rows an interrupted run finished")
    ap.add_argument("--sa-kernel", choices=("auto", "torch", "triton"), default="auto",
                    help="teacher.sa_kernel for every row (not auto: the output name gets a _<kernel> suffix)")
    ap.add_argument("--collect", action="store_true",
                    help="write the JSON/CSV from the rows an earlier run finished, running none")
    ap.add_argument("--note", default="", help="free text recorded in the JSON (e.g. machine contention)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    os.environ["TRACE_EDGES_SA_KERNEL"] = args.sa_kernel     # the workers read it
    if args.worker:
        family, res, depth, dtype, naive = json.loads(args.worker)
        out = worker(family, res, tuple(depth) if isinstance(depth, list) else depth, dtype, preset["device"],
                     preset["stride"], naive, preset["student"] and not naive, args.threads)
        Path(args.worker_out).write_text(json.dumps(out))
        return 0
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    rows = [r for r in preset["rows"] if only is None or r[0] in only]
    if args.collect:
        results = [json.loads(_part_path(args, r).read_text()) for r in rows if _part_path(args, r).is_file()]
        if not results:
            sys.exit(f"--collect: no finished rows under {Path(args.out_dir) / f'.teacher_scale_{args.preset}'}")
    else:
        results = [_run_row(args, r) for r in rows]
    for r in results:   # (also for rows resumed from an earlier run)
        if r["extra"].get("naive_check"):
            r["extra"]["memory_check"]["applies"] = False
    stem = "teacher_scale" if args.preset == "cpu" else f"teacher_scale_{args.preset}"
    if args.sa_kernel != "auto":
        stem += f"_{args.sa_kernel}"
    summary = {
        "what": __doc__.split("\n\n")[0].strip(),
        "preset": args.preset, "stride": preset["stride"],
        "teacher": dict(TEACHER, stride=preset["stride"], sa_kernel=args.sa_kernel),
        "image": str(IMAGE.relative_to(ROOT)), "machine": machine_info(), "threads": args.threads,
        "note": args.note,
        "rows": [r["row"] for r in results if not r["extra"].get("naive_check")],
        "checks": [{"row": r["row"], **r["extra"]} for r in results],
    }
    json_path = Path(args.out_dir) / f"{stem}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, json_path)
    csv_path = Path(args.out_dir) / f"{stem}.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(summary["rows"])
    os.replace(tmp, csv_path)
    print(f"wrote {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
