#!/usr/bin/env python3
"""Wall time and peak memory of the teacher's divergence paths and of the whole teacher per image.

Part 1 - divergence paths on synthetic Q/K at SD-like sizes. For each token grid (default 32x32
and 64x64; SD3/SD3.5 at 512 px and 1024 px) and ``--blocks`` attention blocks of ``--heads`` x
``--head-dim`` (default 2 blocks of 24 x 64: SD3-Medium / SD3.5-Medium joint blocks; SD3.5-Large has
38 heads x 64 and 38 blocks, far too heavy for the naive path on a small CPU), the workload of one
teacher step pair is timed three ways:

* ``naive``: ``SA = aggregate_attention(...)`` materialised for both steps (N x N each), then
  ``abdiv(SA)`` at both steps and ``iep({0: SA_prev, 1: SA_curr})`` (one IEP point);
* ``exact``: ``abdiv_from_qk(..., mode="exact", chunk=C)`` at both steps and
  ``iep_divergence_from_qk(..., mode="exact", chunk=C)``: the same numbers, never N x N;
* ``fast``: the same calls with ``mode="fast"`` (mean of per-head KLs: a *different* quantity).

Q/K are random (seeded, float32): per head and channel a smooth spatial field (white noise on a
grid 8x coarser, bilinearly upsampled) shared by Q and K plus independent white noise, so nearby
tokens attend alike; both are rescaled so that the softmax logits ``s*q.k`` (s = head_dim**-0.5)
have the standard deviation ``--logit-std`` over random (query, key) pairs. The second step is the
first one perturbed: ``x' = sqrt(1-g^2) x + g noise`` with g = ``--step-noise``.

Each (grid, method) runs in a FRESH subprocess: import, build inputs, a warm-up of the same method on
a 8x8 grid (loads kernels without touching the large sizes), then up to ``--repeats`` timed runs; a
further run is skipped when it would take the case past ``--case-budget-s`` seconds (the number of
runs behind each median is the ``repeats`` column). Wall and CPU (process) seconds are recorded, with
the load average before and after each case: the machine may be shared.

Memory: torch's CPU allocations are invisible to ``tracemalloc``, so the peak is read from the
kernel: ``VmHWM`` (peak resident set) in ``/proc/self/status``, reset to the current RSS before each
timed run by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), after glibc ``malloc_trim(0)``
has handed freed heap pages back (else buffers reusing memory freed earlier never raise the RSS).
``peak_extra_mb`` = VmHWM after the run minus VmRSS right after the reset (inputs already resident),
maximum over repeats: the RSS growth the run causes with the normal allocator (fragmentation
included). ``--malloc strict`` runs the workers with every buffer >= 128 KiB mmapped and unmapped on
free, which brings the number down to about the peak of live bytes (slower; a cross-check).
Where clear_refs cannot be written the fallback is ``ru_maxrss`` minus the RSS after building the
inputs (only one meaningful run per process then; recorded in the JSON). The method is checked at
start-up in a subprocess on a known 1 GiB tensor (``torch.ones``) and the result is recorded.

Part 2 - the whole teacher per image (``run_teacher``) with the embedded tiny SD3 model on the first
``--images`` coco_mini images, modes exact and fast, each in its own subprocess: one warm-up call,
then ``--repeats`` timed calls per image (median reported), peak RSS of the process and the extra
above the RSS after loading the model and the images.

Writes ``results/benchmarks/teacher_divergence.csv`` and ``results/benchmarks/teacher.json``:

    python benchmarks/bench_teacher.py --grids 32,64 --heads 24 --head-dim 64 --blocks 2 \\
        --chunk 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import (PeakRSS, _clear_refs, _malloc_trim, _ru_maxrss_mb, machine_info,  # noqa: E402,F401
                      measure, parse_proc_status)

METHODS = ("naive", "exact", "fast")
CSV_FIELDS = ("grid", "heads", "head_dim", "blocks", "chunk", "method", "repeats", "wall_s", "peak_extra_mb",
              "max_abs_diff_vs_naive")
MB = 1024.0 * 1024.0


# ---------------------------------------------------------------------------------------------
# pure helpers (tested in tests/test_bench_teacher.py)
# ---------------------------------------------------------------------------------------------
def parse_int_list(text: str) -> list[int]:
    """``"32,64"`` -> ``[32, 64]`` (blanks ignored; every value must be a positive integer)."""
    out = [int(t) for t in str(text).replace(" ", "").split(",") if t]
    if not out or any(v <= 0 for v in out):
        raise ValueError(f"expected a comma-separated list of positive integers, got {text!r}")
    return out


def budget_allows_another(walls: Sequence[float], budget_s: float) -> bool:
    """Whether one more timed repeat (assumed as long as the median so far) fits ``budget_s`` seconds
    in total for the case; ``budget_s <= 0`` means no budget (always True)."""
    if budget_s <= 0 or not walls:
        return True
    return sum(walls) + statistics.median(walls) <= budget_s


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or the denominator is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def ratios_by_grid(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per grid: time and memory ratios of exact and fast over naive (rows as in the CSV)."""
    by: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(str(r["grid"]), {})[r["method"]] = r
    out: dict[str, dict[str, float | None]] = {}
    for grid, m in by.items():
        nv = m.get("naive", {})
        d: dict[str, float | None] = {}
        for meth in ("exact", "fast"):
            if meth in m:
                d[f"{meth}_over_naive_time"] = ratio(m[meth].get("wall_s"), nv.get("wall_s"))
                d[f"{meth}_over_naive_mem"] = ratio(m[meth].get("peak_extra_mb"), nv.get("peak_extra_mb"))
        if "exact" in m and "fast" in m:
            d["fast_over_exact_time"] = ratio(m["fast"].get("wall_s"), m["exact"].get("wall_s"))
        out[grid] = d
    return out


def divergence_row(grid: int, heads: int, head_dim: int, blocks: int, chunk: int, method: str,
                   walls: Sequence[float], peak_extra_mb: float | None,
                   max_abs_diff_vs_naive: float | None) -> dict[str, Any]:
    """One CSV row: ``wall_s`` is the median of ``walls`` (``repeats`` of them); grid as ``"64x64"``."""
    return {
        "grid": f"{grid}x{grid}", "heads": heads, "head_dim": head_dim, "blocks": blocks, "chunk": chunk,
        "method": method, "repeats": len(walls), "wall_s": round(statistics.median(walls), 4),
        "peak_extra_mb": None if peak_extra_mb is None else round(float(peak_extra_mb), 1),
        "max_abs_diff_vs_naive": None if max_abs_diff_vs_naive is None else float(f"{max_abs_diff_vs_naive:.3g}"),
    }


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table (None shown as ``-``)."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# workers (run in fresh subprocesses)
# ---------------------------------------------------------------------------------------------
def make_qk(grid: int, heads: int, head_dim: int, blocks: int, *, seed: int, logit_std: float,
            step_noise: float, smooth_frac: float = 0.5):
    """Two steps of synthetic per-block Q/K: ``((qs_prev, ks_prev), (qs_curr, ks_curr))``."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    n = grid * grid
    coarse = max(1, grid // 8)

    def field() -> torch.Tensor:  # [heads, n, d], unit variance per entry
        c = torch.randn(heads, head_dim, coarse, coarse, generator=g)
        s = F.interpolate(c, size=(grid, grid), mode="bilinear", align_corners=False)
        s = (s - s.mean((-1, -2), keepdim=True)) / s.std((-1, -2), keepdim=True).clamp_min(1e-6)
        return s.reshape(heads, head_dim, n).transpose(1, 2).contiguous()

    def white() -> torch.Tensor:
        return torch.randn(heads, n, head_dim, generator=g)

    a, b = smooth_frac ** 0.5, (1 - smooth_frac) ** 0.5
    prev_q, prev_k, curr_q, curr_k = [], [], [], []
    keep = (1 - step_noise ** 2) ** 0.5
    for _ in range(blocks):
        shared = field()
        q = a * shared + b * white()
        k = a * shared + b * white()
        # rescale so that s*q.k has std logit_std over random (query, key) pairs
        idx_q = torch.randint(0, n, (4096,), generator=g)
        idx_k = torch.randint(0, n, (4096,), generator=g)
        logits = (q[:, idx_q] * k[:, idx_k]).sum(-1) * head_dim ** -0.5
        c = (logit_std / float(logits.std())) ** 0.5
        q, k = q * c, k * c
        prev_q.append(q)
        prev_k.append(k)
        curr_q.append(keep * q + step_noise * c * white())
        curr_k.append(keep * k + step_noise * c * white())
    return (prev_q, prev_k), (curr_q, curr_k)


def divergence_workload(method: str, prev, curr, grid: int, chunk: int):
    """ABDiv at both steps + one IEP point, by ``method``: ``(abdiv_prev, abdiv_curr, iep_value)``."""
    from trace_edges.teacher.divergence import (abdiv, abdiv_from_qk, aggregate_attention, iep,
                                                iep_divergence_from_qk)

    grids = [(grid, grid)] * len(prev[0])
    out = (grid, grid)
    if method == "naive":
        sa_p = aggregate_attention(prev[0], prev[1], grids, out)
        sa_c = aggregate_attention(curr[0], curr[1], grids, out)
        a_p, a_c = abdiv(sa_p, out), abdiv(sa_c, out)
        _, curve = iep({0: sa_p, 1: sa_c})
        return a_p, a_c, curve[1]
    a_p = abdiv_from_qk(prev[0], prev[1], grids, out, method, chunk=chunk)
    a_c = abdiv_from_qk(curr[0], curr[1], grids, out, method, chunk=chunk)
    d = iep_divergence_from_qk(prev, curr, grids, out, method, chunk=chunk)
    return a_p, a_c, d


def worker_divergence(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    probe = PeakRSS()
    rss_start = probe.rss_mb()
    prev, curr = make_qk(args.grid, args.heads, args.head_dim, args.blocks, seed=args.seed,
                         logit_std=args.logit_std, step_noise=args.step_noise)
    rss_inputs = probe.rss_mb()
    # warm-up at a small size (kernels, lazy init) without touching the large allocation sizes
    wp, wc = make_qk(8, args.heads, args.head_dim, 1, seed=1, logit_std=args.logit_std, step_noise=args.step_noise)
    with torch.no_grad():
        divergence_workload(args.method, wp, wc, 8, args.chunk)
    walls, extras, cpus = [], [], []
    result = None
    with torch.no_grad():
        for _ in range(args.repeats):
            if walls and not budget_allows_another(walls, args.case_budget_s):
                break
            c0 = time.process_time()
            wall, extra, result = measure(lambda: divergence_workload(args.method, prev, curr, args.grid, args.chunk),
                                          probe)
            cpus.append(time.process_time() - c0)
            walls.append(wall)
            extras.append(extra)
    a_p, a_c, d = result
    np.savez(args.result, abdiv_prev=a_p.numpy(), abdiv_curr=a_c.numpy(), iep=np.float64(d))
    input_mb = sum(t.numel() * t.element_size() for part in (prev, curr) for ts in part for t in ts) / MB
    return {"walls": walls, "cpu_s_each": cpus, "peak_extra_mb_each": extras, "peak_extra_mb": max(extras),
            "memory_method": probe.method, "rss_start_mb": rss_start, "rss_after_inputs_mb": rss_inputs,
            "inputs_mb": input_mb, "process_peak_rss_mb": _ru_maxrss_mb()}


def worker_teacher(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import torch

    logging.disable(logging.WARNING)
    from trace_edges.backbones.tiny import tiny_backbone
    from trace_edges.config import validate
    from trace_edges.data.images import load_rgb
    from trace_edges.teacher.trajectory import run_teacher

    probe = PeakRSS()
    t0 = time.perf_counter()
    bb = tiny_backbone("sd3")
    load_s = time.perf_counter() - t0
    paths = sorted((Path(args.root) / "images").glob("*.jpg"))[: args.images]
    images = [(p.name, load_rgb(p)) for p in paths]
    params = dict(validate({}, block="teacher"), mode=args.mode, chunk=args.chunk)
    rss_loaded = probe.rss_mb()
    probe.reset()
    t0 = time.perf_counter()
    res = run_teacher(bb, images[0][1], params)
    warm_s = time.perf_counter() - t0
    warm_extra = probe.extra_mb()
    per_image = []
    probe.reset()
    base = probe.base_mb
    for name, rgb in images:
        walls, cpus = [], []
        for _ in range(args.repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            res = run_teacher(bb, rgb, params)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        per_image.append({"image": name, "shape": list(rgb.shape), "walls": walls, "cpu_s_each": cpus,
                          "median_s": statistics.median(walls), "t_star": res.t_star,
                          "grid": list(res.grid), "blocks": res.info["blocks"]})
    return {"mode": args.mode, "load_s": load_s, "warmup_s": warm_s, "warmup_peak_extra_mb": warm_extra,
            "rss_after_load_mb": rss_loaded, "timed_peak_extra_mb": probe.extra_mb(), "timed_base_rss_mb": base,
            "process_peak_rss_mb": _ru_maxrss_mb(), "memory_method": probe.method,
            "steps": len(res.steps), "torch_threads": torch.get_num_threads(), "per_image": per_image,
            "median_s_per_image": statistics.median(r["median_s"] for r in per_image)}


def worker_verify(args: argparse.Namespace) -> dict[str, Any]:
    """Allocate a known 1 GiB torch tensor and see what the probe reports."""
    import torch

    probe = PeakRSS()
    probe.reset()
    t = torch.ones(256 * 1024 * 1024, dtype=torch.float32)  # 1 GiB, touched
    during = probe.extra_mb()
    del t
    after_free = probe.rss_mb() - probe.base_mb
    probe.reset()
    empty_extra = probe.extra_mb()
    import tracemalloc

    tracemalloc.start()
    t = torch.ones(256 * 1024 * 1024, dtype=torch.float32)
    traced_peak = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    del t
    return {"method": probe.method, "expected_mb": 1024.0, "reported_extra_mb": during,
            "rss_above_base_after_free_mb": after_free, "extra_right_after_reset_mb": empty_extra,
            "tracemalloc_peak_mb_same_tensor": traced_peak}


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def parse_proc_stat_busy(text: str) -> float:
    """Busy CPU seconds of the whole machine from a ``/proc/stat`` text (first ``cpu`` line:
    user+nice+system+irq+softirq+steal, in USER_HZ = 100 ticks per second)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / 100.0
    raise ValueError("no aggregate cpu line in /proc/stat text")


def others_share(busy_delta_s: float, own_cpu_s: float, wall_s: float, ncpu: int) -> float | None:
    """Fraction of the machine's CPU capacity used by OTHER processes during ``wall_s``."""
    if wall_s <= 0 or ncpu <= 0:
        return None
    return max(0.0, busy_delta_s - own_cpu_s) / (wall_s * ncpu)


def _busy_s() -> float | None:
    try:
        return parse_proc_stat_busy(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def _run_worker(argv: list[str]) -> dict[str, Any]:
    import resource

    ru0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_s(), time.perf_counter()
    out = _run_worker_inner(argv)
    ru1, busy1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_s(), time.perf_counter() - t0
    own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    out["worker_wall_s"], out["worker_cpu_s"] = wall, own
    if busy0 is not None and busy1 is not None:
        out["others_cpu_share"] = others_share(busy1 - busy0, own, wall, os.cpu_count() or 1)
    return out


STRICT_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "0"}
_WORKER_ENV: dict[str, str] = {}


def _run_worker_inner(argv: list[str]) -> dict[str, Any]:
    env = dict(os.environ, TRACE_EDGES_NO_PROGRESS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), **_WORKER_ENV)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out_path = fh.name
    try:
        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", *argv, "--_out", out_path],
                             env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"worker {argv} failed ({res.returncode}):\n{res.stderr[-3000:]}")
        return json.loads(Path(out_path).read_text())
    finally:
        Path(out_path).unlink(missing_ok=True)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _diffs(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    import numpy as np

    maps_a = np.stack([a["abdiv_prev"], a["abdiv_curr"]]).astype(np.float64)
    maps_b = np.stack([b["abdiv_prev"], b["abdiv_curr"]]).astype(np.float64)
    d_map = float(np.abs(maps_a - maps_b).max())
    d_iep = float(abs(float(a["iep"]) - float(b["iep"])))
    corr = float(np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(maps_a, maps_b)]))
    return {"abdiv_max_abs_diff": d_map, "abdiv_max_abs_ref": float(np.abs(maps_b).max()),
            "abdiv_rel_diff": d_map / max(float(np.abs(maps_b).max()), 1e-30), "abdiv_pearson": corr,
            "iep_abs_diff": d_iep, "iep_value": float(a["iep"]), "iep_ref": float(b["iep"]),
            "max_abs_diff": max(d_map, d_iep)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", default="32,64", help="square token grids (side lengths)")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2, help="attention blocks per step (all on the same grid)")
    ap.add_argument("--chunk", type=int, default=1024, help="query rows per chunk in exact mode")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--case-budget-s", type=float, default=100.0,
                    help="per (grid, method): stop repeating once another run would exceed this many seconds "
                         "in total (at least one run; 0 = always --repeats)")
    ap.add_argument("--malloc", choices=("default", "strict"), default="default",
                    help="strict: workers run with glibc MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=0 "
                         "(every buffer >= 128 KiB mmapped and unmapped on free: peak RSS ~ peak live bytes, "
                         "no fragmentation; slower). default: the normal allocator (what a real run sees)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--logit-std", type=float, default=2.0)
    ap.add_argument("--step-noise", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=3, help="coco_mini images for the whole-teacher part (0: skip)")
    ap.add_argument("--root", default=str(ROOT / "data" / "coco_mini"))
    ap.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    # worker-only
    ap.add_argument("--_worker", choices=("divergence", "teacher", "verify"), help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ap.add_argument("--grid", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        fn = {"divergence": worker_divergence, "teacher": worker_teacher, "verify": worker_verify}[args._worker]
        Path(args._out).write_text(json.dumps(fn(args)))
        return 0

    import numpy as np

    if args.malloc == "strict":
        _WORKER_ENV.update(STRICT_MALLOC_ENV)
    grids = parse_int_list(args.grids)
    methods = [m for m in args.methods.split(",") if m]
    if "naive" not in methods:
        raise SystemExit("--methods must include naive (the reference for diffs and ratios)")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = _loadavg()
    t_all = time.perf_counter()
    print(f"load average at start: {load_start}", flush=True)

    verify = _run_worker(["verify"])
    print(f"memory probe ({verify['method']}): 1 GiB torch tensor -> {verify['reported_extra_mb']:.0f} MiB extra "
          f"(tracemalloc sees {verify['tracemalloc_peak_mb_same_tensor']:.2f} MiB)", flush=True)

    common = ["--heads", str(args.heads), "--head-dim", str(args.head_dim), "--blocks", str(args.blocks),
              "--chunk", str(args.chunk), "--repeats", str(args.repeats), "--case-budget-s", str(args.case_budget_s),
              "--logit-std", str(args.logit_std),
              "--step-noise", str(args.step_noise), "--seed", str(args.seed)]
    rows, details = [], []
    with tempfile.TemporaryDirectory(prefix="bench-teacher-") as tmp:
        for grid in grids:
            results, raw = {}, {}
            for method in methods:
                res_path = str(Path(tmp) / f"{grid}_{method}.npz")
                la0 = _loadavg()
                r = _run_worker(["divergence", "--grid", str(grid), "--method", method, "--result", res_path,
                                 *common])
                r["load_average_before"], r["load_average_after"] = la0, _loadavg()
                raw[method] = r
                with np.load(res_path) as z:
                    results[method] = {k: z[k] for k in z.files}
                print(f"  {grid}x{grid} {method:5s}: median {statistics.median(r['walls']):.3f}s "
                      f"(runs {', '.join(f'{w:.2f}' for w in r['walls'])}; "
                      f"cpu {statistics.median(r['cpu_s_each']):.2f}s), "
                      f"peak extra {r['peak_extra_mb']:.0f} MiB, load {r['load_average_after'][0]}, "
                      f"others' CPU share {r.get('others_cpu_share', float('nan')):.0%}",
                      flush=True)
            vs_naive = {m: _diffs(results[m], results["naive"]) for m in methods}
            fast_vs_exact = _diffs(results["fast"], results["exact"]) if {"fast", "exact"} <= set(methods) else None
            for m in methods:
                rows.append(divergence_row(grid, args.heads, args.head_dim, args.blocks, args.chunk, m,
                                           raw[m]["walls"], raw[m]["peak_extra_mb"], vs_naive[m]["max_abs_diff"]))
            details.append({"grid": f"{grid}x{grid}", "tokens": grid * grid, "runs": raw, "vs_naive": vs_naive,
                            "fast_vs_exact": fast_vs_exact})

    teacher = {}
    if args.images > 0:
        for mode in ("exact", "fast"):
            la0 = _loadavg()
            r = _run_worker(["teacher", "--mode", mode, "--images", str(args.images), "--root", args.root,
                             "--chunk", str(args.chunk), "--repeats", str(args.repeats)])
            r["load_average_before"], r["load_average_after"] = la0, _loadavg()
            teacher[mode] = r
            print(f"  teacher {mode}: median {r['median_s_per_image']:.3f} s/image, process peak RSS "
                  f"{r['process_peak_rss_mb']:.0f} MiB, timed peak extra {r['timed_peak_extra_mb']:.1f} MiB, "
                  f"others' CPU share {r.get('others_cpu_share', float('nan')):.0%}", flush=True)

    ratios = ratios_by_grid(rows)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "teacher_divergence.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        w.writerows(rows)
    summary = {
        "started": started,
        "total_wall_s": round(time.perf_counter() - t_all, 1),
        "load_average_start": load_start,
        "load_average_end": _loadavg(),
        "machine": machine_info(),
        "settings": {"grids": grids, "heads": args.heads, "head_dim": args.head_dim, "blocks": args.blocks,
                     "chunk": args.chunk, "repeats": args.repeats, "case_budget_s": args.case_budget_s,
                     "malloc": args.malloc,
                     "logit_std": args.logit_std,
                     "step_noise": args.step_noise, "seed": args.seed, "dtype": "float32",
                     "workload": "ABDiv at 2 steps + 1 IEP point (D(SA_prev||SA_curr)), per method",
                     "note": f"{args.blocks} blocks per step (real SD3.5-L: 38 blocks x 38 heads; SD3.5-M: 24 x 24)"},
        "memory_method": {
            "description": "VmHWM (kernel peak RSS) from /proc/self/status; before each timed run glibc "
                           "malloc_trim(0) hands freed heap pages back and writing 5 to /proc/self/clear_refs "
                           "resets VmHWM to the current RSS; peak_extra = VmHWM after the run - VmRSS at the "
                           "reset (max over repeats). Fresh subprocess per case; the inputs are resident before "
                           "the reset (not counted). With --malloc default this is the RSS growth the normal "
                           "allocator really causes (fragmentation included); --malloc strict approximates peak "
                           "live bytes. tracemalloc does not see torch CPU tensors (see verification).",
            "verification": verify},
        "divergence_rows": rows,
        "ratios": ratios,
        "divergence_details": details,
        "teacher_tiny_sd3": teacher,
    }
    (out_dir / "teacher.json").write_text(json.dumps(summary, indent=2) + "\n")

    print()
    print(f"divergence paths: {args.blocks} blocks x {args.heads} heads x {args.head_dim} dims, 2 steps, "
          f"float32, median of `repeats` runs (<= {args.repeats}, case budget {args.case_budget_s:g} s); "
          f"torch threads {summary['machine']['torch_threads']}")
    shown = []
    for d in details:
        for row in (r for r in rows if r["grid"] == d["grid"]):
            run = d["runs"][row["method"]]
            share = run.get("others_cpu_share")
            shown.append({**row, "cpu_s": round(statistics.median(run["cpu_s_each"]), 3),
                          "others_cpu": None if share is None else f"{share:.0%}"})
    print(format_table(shown, [*CSV_FIELDS, "cpu_s", "others_cpu"]))
    print("(cpu_s: median process CPU seconds per run, all threads; others_cpu: share of the machine's "
          "CPU used by other processes during the case)")
    print()
    rat_rows = [{"grid": g, **{k: (None if v is None else round(v, 4)) for k, v in d.items()}}
                for g, d in ratios.items()]
    print(format_table(rat_rows, ["grid", "exact_over_naive_time", "fast_over_naive_time", "exact_over_naive_mem",
                                  "fast_over_naive_mem"]))
    for d in details:
        if d["fast_vs_exact"]:
            fe = d["fast_vs_exact"]
            print(f"{d['grid']}: fast vs exact (different quantities): ABDiv max|diff| {fe['abdiv_max_abs_diff']:.3g} "
                  f"(exact max {fe['abdiv_max_abs_ref']:.3g}), Pearson r {fe['abdiv_pearson']:.3f}; "
                  f"IEP fast {fe['iep_value']:.4g} vs exact {fe['iep_ref']:.4g}")
    if teacher:
        print()
        trows = [{"mode": m, "images": len(r["per_image"]), "median_s_per_image": round(r["median_s_per_image"], 4),
                  "per_image_s": " ".join(f"{x['median_s']:.3f}" for x in r["per_image"]),
                  "process_peak_rss_mb": round(r["process_peak_rss_mb"], 1),
                  "timed_peak_extra_mb": round(r["timed_peak_extra_mb"], 1),
                  "others_cpu": None if r.get("others_cpu_share") is None else f"{r['others_cpu_share']:.0%}"}
                 for m, r in teacher.items()]
        r0 = next(iter(teacher.values()))
        g0 = r0["per_image"][0]
        print(f"whole teacher, tiny SD3 ({g0['grid'][0]}x{g0['grid'][1]} tokens, {g0['blocks']} blocks, "
              f"{r0['steps']} steps), median of {args.repeats} after 1 warm-up:")
        print(format_table(trows, list(trows[0])))
    print(f"\nload average start {load_start} end {summary['load_average_end']}; total {summary['total_wall_s']} s")
    print(f"wrote {out_dir / 'teacher_divergence.csv'} and {out_dir / 'teacher.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
