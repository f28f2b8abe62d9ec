#!/usr/bin/env python3
"""Teacher vs student: per-image latency and peak memory, side by side in one run (paper: 81x).

The paper's claim (Table 3 / §3.5): the teacher (inversion trajectory + IEP + ABDiv) takes
3682 ms per image on an A100, the distilled student (one forward pass at t = 0) 45 ms: 81x.
This script measures both on THIS machine, with the SAME backbone (the configured
``teacher.backbone``; the student carries its own copy of it plus LoRA and the edge decoder), on
the same images, in one invocation:

* each side runs in a FRESH subprocess (``--worker teacher|student``), one after the other, so the
  memory numbers do not mix; both load the model, run ``--warmup`` untimed calls on the first
  image, then ``--repeats`` timed calls on each of the first ``--images`` images;
* teacher per image = ``run_teacher`` (VAE encode, the whole trajectory with Q/K capture, IEP over
  the trajectory, ABDiv at t*) + the edge map at image resolution (what ``trace_edges`` stores);
  student per image = ``predict_edge`` (VAE encode, one denoiser pass at t = 0 with adapters, the
  decoder, the map at image resolution);
* latency: median over repeats per image, then median over images; CUDA is synchronised around
  every timed call when the device is a GPU;
* the VAE encode both sides start with is also timed alone (``vae_encode_median_ms``): on the tiny
  embedded model it dominates the student's pass, so ``ratio_excluding_vae_encode`` is reported too;
* memory: on CPU the kernel's peak resident set above the RSS after loading (``_measure.PeakRSS``:
  VmHWM reset through /proc/self/clear_refs; torch's CPU allocations are invisible to
  tracemalloc); on CUDA ``torch.cuda.max_memory_allocated`` above the allocation after loading;
* the student's weights: ``--student-model`` (default: the workflow's trained checkpoint
  ``results/<preset>/student/<family>/model.safetensors``) when it exists; otherwise an untrained student
  of the configured architecture (LoRA B = 0, fresh decoder; the latency and memory of a forward
  pass do not depend on the weight values) - recorded in the JSON as ``student_weights``.

Writes ``results/benchmarks/speed_<preset>.json`` (settings, machine, per-image walls, ratio, the
paper's numbers) and ``speed_<preset>.csv`` (one row per side and image). The report
(``trace-edges report speed`` / rule ``speed_figure``) reads the JSON. Usage:

    python benchmarks/bench_speed.py                         # embedded default (tiny SD3, CPU)
    python benchmarks/bench_speed.py --configfile config.paper.yaml --device cuda   # the paper's model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import PeakRSS, machine_info  # noqa: E402

PAPER = {"teacher_ms": 3682.0, "student_ms": 45.0, "ratio": 81.0, "device": "NVIDIA A100 (paper, Table 3 / §3.5)"}
CSV_FIELDS = ("side", "image", "height", "width", "repeats", "median_ms", "min_ms", "max_ms")


# ---------------------------------------------------------------------------------------------
# pure helpers (tested in tests/test_bench_speed.py)
# ---------------------------------------------------------------------------------------------
def summarise(per_image: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Median over images of the per-image median wall time, in ms (+ min/max of those medians)."""
    if not per_image:
        raise ValueError("no images were timed")
    meds = [statistics.median(r["walls"]) * 1000.0 for r in per_image]
    return {"median_ms": statistics.median(meds), "min_ms": min(meds), "max_ms": max(meds)}


def speed_ratio(teacher_ms: float, student_ms: float) -> float:
    if student_ms <= 0 or teacher_ms <= 0:
        raise ValueError(f"latencies must be positive (teacher {teacher_ms}, student {student_ms})")
    return teacher_ms / student_ms


def _ratio_or_none(a: float, b: float) -> float | None:
    """speed_ratio, or None when timing noise makes a difference non-positive (a shared machine)."""
    return speed_ratio(a, b) if a > 0 and b > 0 else None


def csv_rows(side: str, per_image: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in per_image:
        ms = [w * 1000.0 for w in r["walls"]]
        rows.append({"side": side, "image": r["image"], "height": r["shape"][0], "width": r["shape"][1],
                     "repeats": len(ms), "median_ms": round(statistics.median(ms), 3),
                     "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)})
    return rows


def first_images(images_dir: Path, n: int) -> list[Path]:
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise SystemExit(f"bench_speed: no images in {images_dir} (fix: run from the project root, or "
                         "download the dataset of the preset first: snakemake --cores all prepare)")
    return paths[:n]


# ---------------------------------------------------------------------------------------------
# worker (one side per fresh subprocess)
# ---------------------------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def _ensure_tiny_model(backbone: Mapping[str, Any]) -> None:
    """Build the embedded tiny model when the configured path is missing (same as rule build_tiny_models)."""
    if backbone.get("tiny") and not (ROOT / backbone["model"]).exists():
        from trace_edges.backbones.tiny import build_tiny

        build_tiny(backbone["family"], ROOT / backbone["model"], seed=0)


def worker(side: str, cfg: Mapping[str, Any], images: Sequence[str], repeats: int, warmup: int,
           student_model: str | None, device: str | None) -> dict[str, Any]:
    import torch

    from trace_edges.data.images import load_rgb
    from trace_edges.backbones.loader import load_configured_backbone
    from trace_edges.teacher.trajectory import teacher_edge_map
    from trace_edges.teacher.trajectory import run_teacher

    tcfg = dict(cfg["teacher"])
    spec = dict(tcfg["backbone"])
    if device:
        spec["device"] = device
    _ensure_tiny_model(spec)
    probe = PeakRSS()
    t0 = time.perf_counter()
    weights = None
    if side == "teacher":
        bb = load_configured_backbone(spec)

        def call(rgb):
            res = run_teacher(bb, rgb, tcfg, seed=int(cfg["seed"]))
            return teacher_edge_map(res.edge, rgb.shape[0], rgb.shape[1])
    else:
        from trace_edges.student.infer import load_student, predict_edge
        from trace_edges.student.model import StudentModel

        if student_model and Path(student_model).is_file():
            model = load_student(student_model, device=spec["device"])
            weights = {"path": str(student_model), "trained": True}
        else:
            model = StudentModel(load_configured_backbone(spec), cfg["student"], seed=int(cfg["seed"]))
            model.set_train(False)
            weights = {"path": None, "trained": False,
                       "note": "untrained student of the configured architecture (no checkpoint found); "
                               "a forward pass costs the same whatever the weight values"}
        bb = model.backbone

        def call(rgb):
            return predict_edge(model, rgb)
    dev = torch.device(bb.device)
    load_s = time.perf_counter() - t0
    rgbs = [(Path(p).name, load_rgb(p)) for p in images]
    cuda = dev.type == "cuda"
    for _ in range(max(0, warmup)):
        call(rgbs[0][1])
    _sync(dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        base_alloc = torch.cuda.memory_allocated(dev)
    probe.reset()
    per_image = []
    for name, rgb in rgbs:
        walls = []
        for _ in range(repeats):
            _sync(dev)
            t1 = time.perf_counter()
            out = call(rgb)
            _sync(dev)
            walls.append(time.perf_counter() - t1)
        if out.shape != rgb.shape[:2]:
            raise RuntimeError(f"{side}: edge map {out.shape} for an image of {rgb.shape[:2]}")
        per_image.append({"image": name, "shape": list(rgb.shape), "walls": walls})
    # the shared first stage, timed alone: VAE encode of the same images (both sides start with it)
    enc = []
    with torch.no_grad():
        for name, rgb in rgbs:
            walls = []
            for _ in range(repeats):
                _sync(dev)
                t1 = time.perf_counter()
                bb.encode(rgb)
                _sync(dev)
                walls.append(time.perf_counter() - t1)
            enc.append({"image": name, "shape": list(rgb.shape), "walls": walls})
    mem = {"method": "cuda.max_memory_allocated" if cuda else f"rss_{probe.method}",
           "peak_extra_mb": ((torch.cuda.max_memory_allocated(dev) - base_alloc) / 2**20 if cuda
                             else probe.extra_mb()),
           "process_peak_rss_mb": probe.peak_mb()}
    return {"side": side, "device": str(dev), "dtype": spec["dtype"], "load_s": load_s, "warmup": warmup,
            "repeats": repeats, "torch_threads": torch.get_num_threads(), "per_image": per_image,
            "memory": mem, "student_weights": weights, **summarise(per_image),
            "vae_encode_median_ms": summarise(enc)["median_ms"]}


def _run_side(side: str, argv: Sequence[str]) -> dict[str, Any]:
    env = dict(os.environ, TRACE_EDGES_NO_PROGRESS="1", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"),
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        res = subprocess.run([sys.executable, __file__, *argv, "--worker", side, "--worker-out", str(out)],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"bench_speed: the {side} worker failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", action="append", default=None,
                    help="workflow config file(s), merged in order on top of config.yaml (default: config.yaml)")
    ap.add_argument("--images", type=int, default=4, help="first N images of the preset's dataset")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default=None, help="override teacher.backbone.device (auto/cpu/cuda)")
    ap.add_argument("--student-model", default=None,
                    help="trained student (default: results/<preset>/student/<family>/model.safetensors if present)")
    ap.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--worker", choices=("teacher", "student"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.images < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--images and --repeats must be >= 1, --warmup >= 0")

    sys.path.insert(0, str(ROOT / "src"))
    from trace_edges.config import load_workflow_config

    files = [ROOT / "config.yaml"] + [ROOT / f for f in (args.configfile or []) if Path(f).name != "config.yaml"]
    cfg = load_workflow_config(*files)
    preset = cfg["preset"]
    data = cfg["data"]
    images = [str(p) for p in first_images(ROOT / data["root"] / data["images_dir"], args.images)]
    family = cfg["teacher"]["backbone"]["family"]
    student_model = args.student_model or str(ROOT / "results" / preset / "student" / family / "model.safetensors")

    if args.worker:
        out = worker(args.worker, cfg, images, args.repeats, args.warmup, student_model, args.device)
        Path(args.worker_out).write_text(json.dumps(out))
        return 0

    fwd = [a for a in (argv if argv is not None else sys.argv[1:])]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    sides = {side: _run_side(side, fwd) for side in ("teacher", "student")}
    ratio = speed_ratio(sides["teacher"]["median_ms"], sides["student"]["median_ms"])
    bb = cfg["teacher"]["backbone"]
    result = {
        "started": started, "total_wall_s": round(time.perf_counter() - t0, 1), "preset": preset,
        "machine": machine_info(),
        "model": {k: bb[k] for k in ("family", "model", "revision", "resolution", "dtype")},
        "settings": {"images": [Path(p).name for p in images], "repeats": args.repeats, "warmup": args.warmup,
                     "device": args.device or bb["device"], "teacher": {k: cfg["teacher"][k] for k in
                                                                         ("trajectory", "stride", "mode",
                                                                          "divergence", "neighbourhood")},
                     "student": {"lora_rank": cfg["student"]["lora"]["rank"],
                                 "decoder_input": cfg["student"]["decoder"]["input"]}},
        "teacher": sides["teacher"], "student": sides["student"],
        "ratio_teacher_over_student": ratio,
        # both sides begin with the same VAE encode; on a tiny model it dominates the student's pass
        "ratio_excluding_vae_encode": _ratio_or_none(
            sides["teacher"]["median_ms"] - sides["teacher"]["vae_encode_median_ms"],
            sides["student"]["median_ms"] - sides["student"]["vae_encode_median_ms"]),
        "paper": PAPER,
        "note": ("measured here, both sides in one run on the same machine and model; the embedded default "
                 "is a tiny random SD3 at 256 px on CPU, so the ratio is a property of this pipeline's cost "
                 "structure (11 trajectory steps + divergences vs one pass), not a reproduction of the paper's "
                 "A100 timings"),
    }
    out_dir = Path(args.out_dir)
    _write_atomic(out_dir / f"speed_{preset}.json", json.dumps(result, indent=1) + "\n")
    rows = csv_rows("teacher", sides["teacher"]["per_image"]) + csv_rows("student", sides["student"]["per_image"])
    tmp_rows = [",".join(CSV_FIELDS)] + [",".join(str(r[k]) for k in CSV_FIELDS) for r in rows]
    _write_atomic(out_dir / f"speed_{preset}.csv", "\n".join(tmp_rows) + "\n")
    t, s = sides["teacher"], sides["student"]
    print(f"{'':10s} {'ms/img (median)':>16s} {'peak extra MiB':>15s}   device {t['device']}, {len(images)} images "
          f"x {args.repeats} repeats")
    print(f"{'teacher':10s} {t['median_ms']:16.1f} {t['memory']['peak_extra_mb']:15.1f}")
    print(f"{'student':10s} {s['median_ms']:16.1f} {s['memory']['peak_extra_mb']:15.1f}")
    rx = result["ratio_excluding_vae_encode"]
    print(f"VAE encode (shared first step): {t['vae_encode_median_ms']:.1f} ms (teacher run) / "
          f"{s['vae_encode_median_ms']:.1f} ms (student run); ratio without it: "
          + (f"{rx:.1f}x" if rx else "n/a (timing noise)"))
    print(f"ratio teacher/student: {ratio:.1f}x here   (paper: {PAPER['teacher_ms']:.0f} ms / "
          f"{PAPER['student_ms']:.0f} ms = {PAPER['ratio']:.0f}x on an A100)")
    print(f"wrote {out_dir / f'speed_{preset}.json'} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
