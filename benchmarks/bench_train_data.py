#!/usr/bin/env python
"""Measure the effect of the student's training images (issue 14, item 2) on the embedded run.

Two students, everything else the embedded default (``config.yaml``):

* ``train_set`` -- the default: trained on ``student.train_data`` (``data/coco_train_mini``, COCO
  train2017 images disjoint from the evaluation images), outputs under ``results/embedded/``;
* ``transductive`` -- ``student.train_data.transductive: true``: trained on the evaluation images
  themselves (the earlier behaviour), through an overlay with ``preset: transductive`` so its
  outputs go to ``results/transductive/`` and the default run is untouched.

The workflow builds each student and scores its edges on all evaluation images
(``metrics/edges/trace_student.json``: ODS/OIS, the BSDS protocol of the run) and its BGP
proposals (``metrics/uis/trace_student.json``: class-agnostic AP/AR100), with ``snakemake
--cores N`` on exactly those targets (``ablations: {enabled: false}`` in the overlay). The rows
add the student's own validation masked Dice (``model.json``) and its training list (size and
sha256). On the embedded config the teacher and student are TINY RANDOM models: the numbers
exercise the protocol, they say nothing about the paper's claim.

Writes ``results/benchmarks/student_train_data.csv``.

    PYTHONPATH=src python benchmarks/bench_train_data.py [--cores 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trace_edges.io import atomic_path, read_json  # noqa: E402

FIELDS = ["setting", "train_images", "train_list_sha256", "eval_images", "ODS", "OIS", "AP", "AR100",
          "val_dice", "seconds"]
TRANSDUCTIVE = {"preset": "transductive", "student": {"train_data": {"transductive": True}},
                "ablations": {"enabled": False}}
SETTINGS = {"train_set": ("embedded", None), "transductive": ("transductive", TRANSDUCTIVE)}


def targets(preset: str) -> list[str]:
    return [f"results/{preset}/metrics/edges/trace_student.json", f"results/{preset}/metrics/uis/trace_student.json"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "student_train_data.csv"))
    args = ap.parse_args(argv)

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    rows = []
    for name, (preset, overlay) in SETTINGS.items():
        cmd = [snakemake, "--cores", str(args.cores), *targets(preset)]
        if overlay is not None:
            over = ROOT / "build" / f"bench_train_data_{name}.yaml"
            over.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(over) as tmp:
                tmp.write_text(yaml.safe_dump(overlay))
            cmd += ["--configfile", str(over)]  # after the targets: --configfile takes several values
        t0 = time.perf_counter()
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
        dt = time.perf_counter() - t0
        edges = read_json(ROOT / targets(preset)[0], what="edge metrics")
        uis = read_json(ROOT / targets(preset)[1], what="UIS metrics")
        model = read_json(ROOT / "results" / preset / "student" / "sd3" / "model.json", what="student model.json")
        td = model["training_data"]
        rows.append({"setting": name, "train_images": td["num_images"], "train_list_sha256": td["list_sha256"],
                     "eval_images": edges["num_images"], "ODS": edges["metrics"]["ODS"],
                     "OIS": edges["metrics"]["OIS"], "AP": 100 * uis["metrics"]["AP"],
                     "AR100": 100 * uis["metrics"]["AR100"], "val_dice": model["val_metrics"]["val_dice"],
                     "seconds": dt})
        r = rows[-1]
        print(f"{name}: {r['train_images']} training images; ODS {r['ODS']:.3f} OIS {r['OIS']:.3f} "
              f"AP {r['AP']:.2f} AR100 {r['AR100']:.2f} val Dice {r['val_dice']:.4f} ({dt:.0f} s)", flush=True)

    out = Path(args.out)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if k in ("ODS", "OIS", "val_dice") else f"{v:.2f}" if isinstance(v, float)
                            else v) for k, v in r.items()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
