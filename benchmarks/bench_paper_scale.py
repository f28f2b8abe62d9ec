#!/usr/bin/env python3
"""Scale rehearsal of the paper preset (COCO 2017 val, 5000 images) without downloading anything.

1. **DAG.** In a fresh copy of the project, a COCO-format dataset of ``--n`` images is built from
   the embedded images repeated under new ids (annotation files + symlinks, no download), and
   ``snakemake -n --configfile config.paper.yaml <that dataset>`` is timed; the job count per rule
   is parsed from its job table. The dry run of the plain paper preset (COCO 2017 val before its
   download: sized from its published 5000 images) is timed as well.
2. **CPU cost per image** of every CPU stage at the paper preset's settings (config.yaml +
   config.paper.yaml), on the first ``--images`` real embedded images, in this process, one stage
   after the other: CPU seconds per image (``time.process_time``), wall seconds, peak extra RSS.
   MaskCut runs at the paper's 480 px / patch 8 (60x60 = 3600-node graphs, CPU eigen-solves) on the
   tiny random ViT (the DINO ViT-B/8 forward is a GPU cost, not measured here). BGP, WPS and edge
   scoring of the staged sources (teacher, student: soft maps) are projected from the soft Sobel
   map's measured cost; the gradient sources are measured each.
3. **GPU cost** from ``results/benchmarks/teacher_scale.json`` (benchmarks/bench_teacher_scale.py):
   the teacher's ``teacher_s_per_image`` of the paper backbone at full depth on a GPU, where such a
   row exists; otherwise "not measured".
4. **Projection** for 5000 images: CPU-hours per stage (CPU-s/image x images x sources), and the
   wall time on (a) one machine with 1 GPU and 16 cores and (b) a SLURM cluster of N such nodes,
   from the total CPU and GPU hours and the longest single job (shard sizes: config.paper.yaml).

Writes ``results/benchmarks/paper_scale.json`` and ``.md``. Usage (nice: the machine is shared):

    nice python benchmarks/bench_paper_scale.py [--images 3] [--n 5000] [--nodes 8 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _measure import PeakRSS  # noqa: E402

OUT = ROOT / "results" / "benchmarks" / "paper_scale"
#: whole-set scoring stages: measured on one source, the same cost assumed for every source
SET_STAGES = ("score_uis", "score_wps")
PAPER = ("config.yaml", "config.paper.yaml")
#: per-image stages measured here, in DAG order; `per_source`: runs once per edge source
#: ('none' included for WPS)
STAGES = {
    "prepare": {"rule": "prepare", "per_source": False},
    "edges": {"rule": "edges_shard", "per_source": True},
    "proposals": {"rule": "proposals_shard", "per_source": False},
    "bgp": {"rule": "bgp_shard", "per_source": True},
    "wps": {"rule": "wps_shard", "per_source": True},
    "score_edges": {"rule": "score_edges_shard", "per_source": True},
    "score_uis": {"rule": "score_uis", "per_source": True},
    "score_wps": {"rule": "score_wps", "per_source": True},
}


# ---------------------------------------------------------------------------------------------
# 1. the DAG at paper scale


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def snapshot(dst: Path) -> Path:
    for rel in project_files():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    return dst


def build_repeated_dataset(src: Path, dst: Path, n: int) -> dict:
    """A COCO-format dataset of ``n`` images: ``src``'s images repeated in id order under new ids
    (1 000 000 + k), image and panoptic PNG files symlinked, every annotation copied. Returns the
    data block pointing at it."""
    inst = json.loads((src / "annotations/instances_mini.json").read_text())
    pan = json.loads((src / "annotations/panoptic_mini.json").read_text())
    images = sorted(inst["images"], key=lambda im: im["id"])
    anns_by = {}
    for a in inst["annotations"]:
        anns_by.setdefault(a["image_id"], []).append(a)
    pan_by = {a["image_id"]: a for a in pan["annotations"]}
    (dst / "images").mkdir(parents=True)
    (dst / "annotations/panoptic").mkdir(parents=True)
    out_images, out_anns, out_pan = [], [], []
    ann_id = 1
    for k in range(n):
        im = images[k % len(images)]
        new_id = 1_000_000 + k
        name = f"{new_id:012d}.jpg"
        os.symlink((src / "images" / im["file_name"]).resolve(), dst / "images" / name)
        out_images.append({**im, "id": new_id, "file_name": name})
        for a in anns_by.get(im["id"], []):
            out_anns.append({**a, "id": ann_id, "image_id": new_id})
            ann_id += 1
        p = pan_by[im["id"]]
        png = f"{new_id:012d}.png"
        os.symlink((src / "annotations/panoptic_mini" / p["file_name"]).resolve(),
                   dst / "annotations/panoptic" / png)
        out_pan.append({**p, "image_id": new_id, "file_name": png})
    (dst / "annotations/instances.json").write_text(json.dumps({**inst, "images": out_images,
                                                                 "annotations": out_anns}))
    (dst / "annotations/panoptic.json").write_text(json.dumps({**pan, "images": out_images, "annotations": out_pan}))
    shutil.copy2(src / "annotations/panoptic_coco_categories.json", dst / "annotations/categories.json")
    return {"dataset": "coco_mini", "root": str(dst), "images_dir": "images",
            "instances_json": "annotations/instances.json", "panoptic_json": "annotations/panoptic.json",
            "panoptic_dir": "annotations/panoptic", "panoptic_categories": "annotations/categories.json",
            "checksums": None, "max_images": None}


def job_table(text: str) -> dict[str, int]:
    """rule -> jobs from the first 'Job stats' table of a Snakemake (dry) run."""
    block = text.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def dry_run(wd: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile", "config.paper.yaml", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"dry run failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    jobs = job_table(res.stdout + res.stderr)
    return {"command": "snakemake " + " ".join(cmd[3:]), "wall_s": round(wall, 2), "jobs": jobs}


def dag(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="paper_scale_") as tmp:
        wd = snapshot(Path(tmp) / "project")
        data = build_repeated_dataset(ROOT / "data/coco_mini", Path(tmp) / "repeated", n)
        overlay = Path(tmp) / "repeated.yaml"
        overlay.write_text(json.dumps({"data": data}))
        repeated = dry_run(wd, [str(overlay)])
        plain = dry_run(wd, [])
    return {"n_images": n, "repeated_dataset": repeated, "paper_preset": plain}


# ---------------------------------------------------------------------------------------------
# 2. CPU cost per image at the paper settings


def paper_config(k: int, tmp: Path) -> dict:
    from trace_edges.config import load_workflow_config, validate
    from trace_edges.proposals.vit import build_tiny_vit

    cfg = load_workflow_config(*(ROOT / f for f in PAPER))
    embedded = load_workflow_config(ROOT / "config.yaml")
    cfg["data"] = {**embedded["data"], "root": str(ROOT / "data/coco_mini"), "max_images": k}
    vit = build_tiny_vit(tmp / "tiny-dino", seed=0)
    # the paper's MaskCut (480 px, patch 8, tau, N) on the tiny random ViT, on the CPU
    cfg["proposals"]["maskcut"].update(model=str(vit), revision=None, tiny=True, device="cpu")
    return validate(cfg)


class Meter:
    def __init__(self, k: int):
        self.k = k
        self.rows: list[dict] = []
        self.probe = PeakRSS()

    def __call__(self, stage: str, source: str | None, fn) -> None:
        self.probe.reset()
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            fn()
        except Exception as exc:  # a source that cannot run here (e.g. weights not present)
            self.rows.append({"stage": stage, "source": source, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(f"{stage:12s} {source or '':14s} NOT MEASURED: {exc}", flush=True)
            return
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        row = {"stage": stage, "source": source, "images": self.k, "cpu_s_per_image": round(cpu / self.k, 3),
               "wall_s_per_image": round(wall / self.k, 3), "peak_extra_mb": round(self.probe.extra_mb(), 1)}
        self.rows.append(row)
        print(f"{stage:12s} {source or '':14s} {row['cpu_s_per_image']:8.3f} CPU-s/img "
              f"{row['peak_extra_mb']:8.1f} MiB", flush=True)


def per_image_costs(k: int) -> dict:
    from trace_edges.data.coco import prepare
    from trace_edges.edges import staged_sources
    from trace_edges.stages.bgp import run_bgp_stage
    from trace_edges.stages.edges import run_edges
    from trace_edges.stages.proposals import run_proposals
    from trace_edges.stages.score import score_edges, score_uis, score_wps
    from trace_edges.stages.wps import run_wps_stage

    with tempfile.TemporaryDirectory(prefix="paper_cost_") as tmp:
        tmp = Path(tmp)
        cfg = paper_config(k, tmp)
        meter = Meter(k)
        manifest = tmp / "data/manifest.json"
        meter("prepare", None, lambda: prepare(cfg["data"], cfg["edge_gt"], tmp / "data"))
        sources = [s for s in cfg["edges"]["sources"] if s not in staged_sources()]
        for s in sources:
            meter("edges", s, lambda s=s: run_edges(s, cfg["edges"], manifest, tmp / "edges" / s))
        proposals = tmp / "proposals/maskcut/proposals.json"
        meter("proposals", "maskcut", lambda: run_proposals(cfg["proposals"], manifest, proposals))
        done = [s for s in sources if (tmp / "edges" / s / "manifest.json").is_file()]
        for s in done:
            meter("bgp", s, lambda s=s: run_bgp_stage(cfg["bgp"], manifest, proposals, tmp / "edges" / s,
                                                       tmp / "bgp" / s / "instances.json"))
        for s in ["none", *done]:
            meter("wps", s, lambda s=s: run_wps_stage(cfg["wps"], manifest, None if s == "none" else tmp / "edges" / s,
                                                       tmp / "wps" / s / "panoptic.json"))
        for s in done:
            meter("score_edges", s, lambda s=s: score_edges(manifest, tmp / "edges" / s,
                                                            tmp / "metrics/edges" / f"{s}.json",
                                                            params=cfg["score"]["edges"]))
        meter("score_uis", done[0], lambda: score_uis(manifest, tmp / "bgp" / done[0] / "instances.json",
                                                      tmp / "metrics/uis.json", label=done[0]))
        meter("score_wps", done[0], lambda: score_wps(manifest, tmp / "wps" / done[0] / "panoptic.json",
                                                      tmp / "metrics/wps.json", label=done[0]))
        images = [rec["id"] for rec in json.loads(manifest.read_text())["images"]]
    return {"images": images, "rows": meter.rows, "config": {
        "bgp.propagate.stride": cfg["bgp"]["propagate"]["stride"],
        "score.edges.thresholds": cfg["score"]["edges"]["thresholds"],
        "score.edges.matcher": cfg["score"]["edges"].get("matcher", "reference"),
        "proposals.maskcut": {k2: cfg["proposals"]["maskcut"][k2]
                              for k2 in ("resolution", "patch_size", "tau", "n_masks")},
    }}


# ---------------------------------------------------------------------------------------------
# 3. GPU rows and 4. the projection


#: the teacher-at-real-size results that may hold a GPU row (bench_teacher_scale.py: --preset gpu writes
#: teacher_scale_gpu.json, --sa-kernel torch|triton a suffixed file; the CPU preset teacher_scale.json)
GPU_RESULTS = ("teacher_scale_gpu.json", "teacher_scale_gpu_triton.json", "teacher_scale_gpu_torch.json",
               "teacher_scale.json")


def gpu_rows() -> dict:
    """The fastest measured GPU row of the paper backbone (SD3.5-L) at full depth, from whichever of
    GPU_RESULTS exist, with the student's latency measured in the same run where recorded."""
    found = []
    for name in GPU_RESULTS:
        path = ROOT / "results/benchmarks" / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        for check in data.get("checks", []) if isinstance(data, dict) else []:
            r = check.get("row", {})
            if (str(r.get("device", "")).startswith("cuda") and r.get("family") == "sd3"
                    and str(r.get("depth")) == "full" and r.get("teacher_s_per_image")):
                found.append((float(r["teacher_s_per_image"]), name, r, check.get("student", {})))
    if not found:
        return {"status": "not measured", "why": "no GPU row of SD3.5-L at full depth in results/benchmarks/"
                f"{{{','.join(GPU_RESULTS)}}} (scripts/gpu_rehearsal.sh on a GPU machine writes one)"}
    s, name, row, student = min(found, key=lambda f: f[0])
    return {"status": "measured", "row": row, "teacher_s_per_image": s, "source": f"results/benchmarks/{name}",
            "student_s_per_image": student.get("student_s_per_image")}


def projection(costs: dict, dag_info: dict | None, n: int, nodes: list[int], cores: int) -> dict:
    from trace_edges.config import load_workflow_config
    from trace_edges.edges import staged_sources

    cfg = load_workflow_config(*(ROOT / f for f in PAPER))
    measured = [r for r in costs["rows"] if "error" not in r]
    stages = []
    for stage, meta in STAGES.items():
        rows = [r for r in measured if r["stage"] == stage]
        if not rows:
            continue
        if meta["per_source"]:
            # measured sources each; the staged sources (teacher, student: soft maps, no CPU edges
            # job) at the soft Sobel map's cost; a source that could not run here is left out
            by_src = {r["source"]: r["cpu_s_per_image"] for r in rows}
            proxy = by_src.get("sobel", max(by_src.values()))
            wanted = (["none"] if stage in ("wps", "score_uis", "score_wps") else []) + list(cfg["edges"]["sources"])
            if stage == "edges":
                wanted = [s for s in wanted if s not in staged_sources()]
            projected = sorted(s for s in wanted if s not in by_src and (s in staged_sources() or stage in SET_STAGES))
            per_src = {s: by_src.get(s, proxy) for s in wanted if s in by_src or s in projected}
        else:
            per_src = {rows[0]["source"] or "all": rows[0]["cpu_s_per_image"]}
            projected = []
        cpu_s = sum(per_src.values())
        size = cfg["shards"].get(stage) if stage in cfg["shards"] else None
        jobs = None
        if dag_info:
            jobs = dag_info["repeated_dataset"]["jobs"].get(meta["rule"])
        stages.append({
            "stage": stage, "rule": meta["rule"], "jobs": jobs, "shard_size": size,
            "sources": len(per_src), "cpu_s_per_image": {s: round(v, 3) for s, v in per_src.items()},
            "projected_from_sobel": projected,
            "peak_extra_mb": max(r["peak_extra_mb"] for r in rows),
            "cpu_hours": round(cpu_s * n / 3600, 2),
            # the longest single job: a shard (or the whole set) of one source
            "longest_job_h": round(max(per_src.values()) * (size or n) / 3600, 3),
        })
    cpu_h = sum(s["cpu_hours"] for s in stages)
    gpu = gpu_rows()
    gpu_h = gpu["teacher_s_per_image"] * n / 3600 if gpu["status"] == "measured" else None
    longest = max(s["longest_job_h"] for s in stages)
    one = {"cpu_bound_h": round(cpu_h / cores, 2)}
    if gpu_h is not None:
        one.update(lower_h=round(max(gpu_h, cpu_h / cores), 2), upper_h=round(gpu_h + cpu_h / cores, 2))
    cluster = {}
    for nn in nodes:
        row = {"cpu_bound_h": round(max(cpu_h / (cores * nn), longest), 2)}
        if gpu_h is not None:
            row["lower_h"] = round(max(gpu_h / nn, cpu_h / (cores * nn), longest), 2)
        cluster[str(nn)] = row
    return {"n_images": n, "edge_sources": list(cfg["edges"]["sources"]), "stages": stages,
            "cpu_hours_total": round(cpu_h, 2), "gpu": gpu,
            "gpu_hours_teacher": None if gpu_h is None else round(gpu_h, 2),
            "longest_cpu_job_h": longest, "cores_per_node": cores, "one_machine": one, "cluster": cluster}


# ---------------------------------------------------------------------------------------------
# report


def markdown(res: dict) -> str:
    p, d, c = res["projection"], res.get("dag"), res["costs"]
    lines = [
        "# Paper preset at scale: jobs, CPU cost per image, projection for 5000 images",
        "",
        f"Generated by `benchmarks/bench_paper_scale.py` on {res['machine']['cpus']} shared cores "
        f"({res['machine']['platform']}, Python {res['machine']['python']}; the machine was shared with "
        "other jobs, so times are upper bounds). Settings: config.yaml + config.paper.yaml.",
        "",
    ]
    if d:
        r, pl = d["repeated_dataset"], d["paper_preset"]
        lines += [
            "## DAG (dry run)",
            "",
            f"- `{r['command']}` on the embedded images repeated under new ids to {d['n_images']} "
            f"(annotation files + symlinks, no download): **{r['jobs']['total']} jobs, {r['wall_s']} s**.",
            f"- the plain paper preset (COCO 2017 val before its download, sized from its 5000 images): "
            f"{pl['jobs']['total']} jobs, {pl['wall_s']} s.",
            "",
            "| rule | jobs |", "|---|---:|",
            *[f"| {k} | {v} |" for k, v in r["jobs"].items() if k != "total"],
            "",
        ]
    lines += [
        f"## CPU cost per image (measured on {len(c['images'])} embedded images: {', '.join(map(str, c['images']))})",
        "",
        f"Paper settings: BGP stride {c['config']['bgp.propagate.stride']}, {c['config']['score.edges.thresholds']} "
        f"BSDS thresholds (matcher `{c['config']['score.edges.matcher']}`), MaskCut {c['config']['proposals.maskcut']} "
        "on the tiny random ViT (its NCut eigen-solves are the CPU cost; the DINO ViT-B/8 forward is GPU "
        "work, not in this table). Staged sources (trace_teacher, trace_student) have no CPU edge job; "
        "their BGP / WPS / scoring cost is projected from the soft Sobel map's (marked *); score_uis / "
        "score_wps are measured on one source (*: the same cost assumed for the others).",
        "",
        "| stage | jobs (5000 img) | shard size | CPU-s / image (per source) | peak extra MiB "
        "| CPU-hours (5000 img, all sources) | longest job (h) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for s in p["stages"]:
        per = ", ".join(f"{k} {v}{'*' if k in s['projected_from_sobel'] else ''}"
                        for k, v in s["cpu_s_per_image"].items())
        lines.append(f"| {s['stage']} | {s['jobs'] if s['jobs'] is not None else '-'} | {s['shard_size'] or 'all'} | "
                     f"{per} | {s['peak_extra_mb']} | {s['cpu_hours']} | {s['longest_job_h']} |")
    errors = [r for r in c["rows"] if "error" in r]
    if errors:
        lines += ["", "Not measured here (left out of the totals): "
                  + "; ".join(f"{r['stage']}/{r['source']} ({r['error']})" for r in errors)]
    g = p["gpu"]
    lines += ["", f"**CPU total: {p['cpu_hours_total']} CPU-hours for {p['n_images']} images.**", "", "## GPU", ""]
    if g["status"] == "measured":
        lines.append(f"Teacher (trajectory + IEP + ABDiv, {g['row'].get('family')} {g['row'].get('resolution')} px, "
                     f"{g['row'].get('dtype')}, {g['row'].get('device')}): {g['teacher_s_per_image']} s/image -> "
                     f"**{p['gpu_hours_teacher']} GPU-hours** (from {g['source']}, "
                     f"map kernel: {g['row'].get('sa_kernel') or 'torch'}). "
                     + (f"Student inference at the same size: {g['student_s_per_image']} s/image -> "
                        f"{round(g['student_s_per_image'] * p['n_images'] / 3600, 2)} GPU-hours (random weights, "
                        "same run). " if g.get("student_s_per_image") else "")
                     + "Distillation and the MaskCut ViT forward: not measured.")
    else:
        lines.append(f"GPU-hours: **not measured** ({g['why']}). Distillation, student inference and the "
                     "MaskCut ViT forward are not measured either.")
    lines += ["", "## Projected wall time", ""]
    one = p["one_machine"]
    if "lower_h" in one:
        lines.append(f"- (a) one machine, 1 GPU + {p['cores_per_node']} cores: between {one['lower_h']} h (GPU and CPU "
                     f"work fully overlapped) and {one['upper_h']} h (one after the other).")
    else:
        lines.append(f"- (a) one machine, 1 GPU + {p['cores_per_node']} cores: the CPU stages alone "
                     f"{one['cpu_bound_h']} h ({p['cpu_hours_total']} CPU-h / {p['cores_per_node']} cores), plus the "
                     "GPU stages (not measured).")
    for nn, row in p["cluster"].items():
        extra = (f", at least {row['lower_h']} h with the GPU work" if "lower_h" in row
                 else " + the GPU stages / N (not measured)")
        lines.append(f"- (b) SLURM, {nn} such nodes: CPU stages {row['cpu_bound_h']} h "
                     f"(max of CPU-h / {p['cores_per_node']}N and the longest job, {p['longest_cpu_job_h']} h){extra}.")
    lines += ["", "Projections are linear in images (per-image cost x images x sources) and assume perfect "
              "packing. CPU seconds include each stage's first-call imports on these few images (an upper "
              "bound). Not in the table: the gathers (`edges`, `proposals`, `bgp`, `wps`, `score_edges`: "
              "concatenation, or for edge scoring pooling counts + clDice at the ODS threshold), "
              "`teacher_labels` (CPU, per image, after the GPU trajectory) and the report jobs. The longest "
              "job is a MaskCut shard on one core; its rule gives it 8 threads for the eigen-solves. "
              "Raw numbers: paper_scale.json.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3, help="embedded images to measure per-image costs on")
    ap.add_argument("--n", type=int, default=5000, help="images of the rehearsal (COCO 2017 val: 5000)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[8, 32], help="cluster sizes to project for")
    ap.add_argument("--cores", type=int, default=16, help="cores per node")
    ap.add_argument("--skip-dag", action="store_true", help="no dry runs (costs only)")
    ap.add_argument("--out", default=str(OUT), help="output stem (.json, .md)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)   # relative paths of the config (e.g. edges.hed.weights) are the project's
    os.environ.setdefault("TRACE_EDGES_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    dag_info = None if args.skip_dag else dag(args.n)
    costs = per_image_costs(args.images)
    res = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "load_average": os.getloadavg()},
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dag": dag_info, "costs": costs,
           "projection": projection(costs, dag_info, args.n, args.nodes, args.cores)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
