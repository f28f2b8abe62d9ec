#!/usr/bin/env python3
"""Wall time and peak memory of every stage of a workflow run (default: the embedded default).

Runs `snakemake --cores N --forceall` on a fresh copy of the project (so nothing is reused) and
collects the per-job benchmark files Snakemake writes (``benchmark:`` of every rule): wall seconds,
peak RSS, CPU seconds. Writes ``results/benchmarks/workflow_<preset>.csv`` (one row per job) and
``.json`` (totals + machine). Usage:

    python benchmarks/bench_workflow.py [--cores 2] [--configfile config.yaml]
"""

from __future__ import annotations

import argparse
import csv
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


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def timeline(log: str) -> list[dict]:
    """Per job of a Snakemake log (its stderr): rule, threads and start / end in seconds from the
    first timestamp (Snakemake stamps to the second). A job's block is a ``[date]`` line, then
    ``rule|localrule NAME:``, ``jobid: N`` and ``threads: T``; its end is ``[date]`` followed by
    ``Finished jobid: N``."""
    from datetime import datetime

    jobs: dict[str, dict] = {}
    t0 = stamp = None
    current = None
    for line in log.splitlines():
        m = _STAMP.match(line.strip())
        if m:
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            t0 = t0 or stamp
            current = None
            continue
        line = line.strip()
        r = re.match(r"^(?:local)?rule (\w+):$", line)
        if r and stamp is not None:
            current = {"rule": r.group(1), "start_s": (stamp - t0).total_seconds(), "threads": 1}
            continue
        if current is not None and line.startswith("jobid: "):
            jobs[line.split()[1]] = current
        elif current is not None and line.startswith("threads: "):
            current["threads"] = int(line.split()[1])
        f = re.match(r"^Finished jobid: (\d+)", line)
        if f and f.group(1) in jobs and stamp is not None:
            jobs[f.group(1)]["end_s"] = (stamp - t0).total_seconds()
    return [dict(jobid=int(k), **v) for k, v in sorted(jobs.items(), key=lambda kv: kv[1]["start_s"])
            if "end_s" in v]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", default="2")
    ap.add_argument("--configfile", default="config.yaml")
    ap.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--publish", action="store_true",
                    help="after the timed run, run rule publish_paper_vs_ours in the copy and bring its "
                         "results/paper_vs_ours.md back: the committed snapshot then comes from this run")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from trace_edges.config import load_config

    preset = load_config(ROOT / args.configfile)["preset"]
    with tempfile.TemporaryDirectory(prefix="trace-edges-bench-") as tmp:
        wd = Path(tmp)
        for rel in project_files():
            (wd / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, wd / rel)
        env = dict(os.environ, TRACE_EDGES_NO_PROGRESS="1",
                   PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", args.cores, "--forceall",
                              "--configfile", args.configfile], cwd=wd, env=env, capture_output=True, text=True)
        total = time.perf_counter() - t0
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
            return 1
        print(f"{preset}: run finished in {total:.1f} s", flush=True)
        bench_root = wd / "results" / preset / "benchmarks"
        rows = []
        for tsv in sorted(bench_root.rglob("*.tsv")):
            with open(tsv) as fh:
                rec = next(csv.DictReader(fh, delimiter="\t"))
            rows.append({
                "job": str(tsv.relative_to(bench_root).with_suffix("")),
                "wall_s": round(float(rec["s"]), 3),
                "max_rss_mb": None if rec.get("max_rss") in (None, "", "NA", "-") else round(float(rec["max_rss"]), 1),
                "cpu_s": None if rec.get("cpu_time") in (None, "", "NA", "-") else round(float(rec["cpu_time"]), 2),
            })
        if args.publish:
            pub = subprocess.run([sys.executable, "-m", "snakemake", "publish_paper_vs_ours", "--cores", "1",
                                  "--configfile", args.configfile], cwd=wd, env=env, capture_output=True, text=True)
            if pub.returncode != 0:
                print(pub.stderr[-3000:], file=sys.stderr)
                return 1
            shutil.copy2(wd / "results" / "paper_vs_ours.md", ROOT / "results" / "paper_vs_ours.md")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"workflow_{preset}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["job", "wall_s", "max_rss_mb", "cpu_s"])
        w.writeheader()
        w.writerows(rows)
    spans = timeline(res.stderr)
    makespan = max((j["end_s"] for j in spans), default=0.0)
    busy = sum(j["threads"] * (j["end_s"] - j["start_s"]) for j in spans)
    summary = {
        "preset": preset,
        "cores": args.cores,
        "total_wall_s": round(total, 1),
        "sum_job_wall_s": round(sum(r["wall_s"] for r in rows), 1),
        "max_job_rss_mb": max((r["max_rss_mb"] or 0) for r in rows),
        "jobs": len(rows),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "per_job": rows,
        # from Snakemake's own log: when each job ran; the core-seconds it reserved over cores x makespan
        # (below 1: cores idle while the DAG had nothing ready, e.g. the serial tail of the run)
        "reserved_core_fraction": round(busy / (int(args.cores) * makespan), 3) if makespan else None,
        "timeline": spans,
    }
    (out_dir / f"workflow_{preset}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{preset}: {len(rows)} jobs, total wall {total:.1f} s on {args.cores} cores; "
          f"slowest: " + ", ".join(f"{r['job']} {r['wall_s']:.1f}s"
                                   for r in sorted(rows, key=lambda r: -r['wall_s'])[:5]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
