#!/usr/bin/env python
"""Benchmark BGP (split -> propagate -> merge) on the embedded coco_mini images.

For each requested stride and edge source this runs ``run_bgp`` on the 16 images with the
multi-scale Felzenszwalb proposals (schema defaults) and records the wall time per image, the
number of masks at each stage, and the peak traced memory of one BGP call (``tracemalloc``,
which sees every numpy/scipy buffer; measured in a separate pass so it does not slow the timed
one). Writes ``results/benchmarks/bgp.json``.

Edge maps come from the package's edge-source registry (``trace_edges.edges.get_edge_source``,
schema defaults), so ``sobel`` / ``canny`` here are the workflow's own sources.

    python benchmarks/bench_bgp.py --strides 4,8,16 --edges sobel,canny
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trace_edges.bgp import bgp_stages  # noqa: E402
from trace_edges.data.images import load_rgb  # noqa: E402
from trace_edges.edges import get_edge_source  # noqa: E402
from trace_edges.io import read_json, write_json  # noqa: E402
from trace_edges.proposals.felzenszwalb import felzenszwalb_proposals  # noqa: E402


def edge_map(rgb: np.ndarray, source: str) -> np.ndarray:
    return get_edge_source(source).compute(rgb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT / "data" / "coco_mini"))
    ap.add_argument("--strides", default="4,8,16")
    ap.add_argument("--edges", default="sobel")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--memory-images", type=int, default=2,
                    help="images per configuration measured again under tracemalloc")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "bgp.json"))
    args = ap.parse_args(argv)

    root = Path(args.root)
    meta = read_json(root / "annotations" / "instances_mini.json", what="COCO instances JSON")
    images = sorted(meta["images"], key=lambda im: im["id"])[: args.max_images]
    strides = [int(s) for s in args.strides.split(",")]
    sources = args.edges.split(",")

    data = []
    t_prop = []
    for im in images:
        rgb = load_rgb(root / "images" / im["file_name"])
        t0 = time.perf_counter()
        masks, scores = felzenszwalb_proposals(rgb)
        t_prop.append(time.perf_counter() - t0)
        data.append((im, rgb, masks, scores, {s: edge_map(rgb, s) for s in sources}))
        print(f"proposals {im['id']}: {len(masks)} in {t_prop[-1]:.2f}s", flush=True)

    runs = []
    for source in sources:
        for stride in strides:
            params = {"propagate": {"stride": stride}}
            per_image = []
            for im, rgb, masks, scores, edges in data:
                t0 = time.perf_counter()
                st = bgp_stages(masks, scores, edges[source], params)
                dt = time.perf_counter() - t0
                per_image.append({
                    "image_id": im["id"], "height": rgb.shape[0], "width": rgb.shape[1],
                    "proposals": len(masks), "pieces": len(st["split"][0]),
                    "merged": len(st["merged"][0]), "final": len(st["final"][0]),
                    "seconds": round(dt, 4),
                })
            peaks = []
            for im, rgb, masks, scores, edges in data[: args.memory_images]:
                tracemalloc.start()
                bgp_stages(masks, scores, edges[source], params)
                peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
                tracemalloc.stop()
            secs = [r["seconds"] for r in per_image]
            run = {
                "edge_source": source, "stride": stride, "params": params,
                "images": len(per_image), "total_seconds": round(sum(secs), 3),
                "mean_seconds_per_image": round(float(np.mean(secs)), 4),
                "max_seconds_per_image": round(float(np.max(secs)), 4),
                "peak_traced_mib": round(max(peaks), 1) if peaks else None,
                "per_image": per_image,
            }
            runs.append(run)
            print(f"{source} stride {stride}: total {run['total_seconds']:.1f}s, "
                  f"mean {run['mean_seconds_per_image']:.2f}s/img, peak {run['peak_traced_mib']} MiB", flush=True)

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    out = {
        "benchmark": "bgp", "script": "benchmarks/bench_bgp.py",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": __import__("scipy").__version__, "load_average_at_end": load},
        "note": ("single process; wall times on a shared machine are noisy, compare within one file; "
                 "proposals = Felzenszwalb schema defaults; BGP params = schema defaults except stride"),
        "proposal_seconds_total": round(sum(t_prop), 3),
        "runs": runs,
    }
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
