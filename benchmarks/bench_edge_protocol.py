#!/usr/bin/env python
"""Calibrate the instance-edge benchmark against the paper's Table 6 (issue 13 item 3).

For each edge source and each protocol setting, the 16 embedded images (data/coco_mini) are
scored with the project's own ``evaluate_edges`` (BSDS protocol through pyEdgeEval), and one row
(ODS, OIS, AP, clDice, the ODS precision/recall/threshold, GT pixels, seconds) goes to
``results/benchmarks/edge_protocol.csv``. The paper's pattern to reproduce (Table 6, COCO 2014
val): Canny 0.129 / 0.202 (ODS / OIS) far below HED 0.347 / 0.443, and ODS < OIS for Canny.

Sources (schema defaults unless stated): ``sobel``, ``canny`` (binary output), ``canny_soft``
(``edges.canny.output: soft``), the same two with ``sigma`` 1 instead of 2, ``hed`` (only when the source is registered and its weights are
present; otherwise it is reported as skipped). Protocol settings change one thing at a time from
the workflow default (GT thinned, void and crowd boundaries kept, ``max_dist`` 0.0075, NMS
``auto``), plus the combinations that matter; see ``PROTOCOLS``. NMS settings are run for soft
maps only (a binary map is already thin; ``auto`` gives it none).

Rows already in the output CSV with the same (source, protocol, thresholds) are kept and not
recomputed, so a later ``--sources hed`` adds the HED rows only. Deterministic (seeded matcher);
wall seconds depend on the machine's load (it was shared when the committed CSV was written).

    nice python benchmarks/bench_edge_protocol.py --thresholds 15
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trace_edges.data.edge_gt import load_edge_gts  # noqa: E402
from trace_edges.data.images import load_rgb  # noqa: E402
from trace_edges.edges import available_sources, get_edge_source  # noqa: E402
from trace_edges.io import read_json, write_text  # noqa: E402
from trace_edges.metrics.edges import evaluate_edges  # noqa: E402

#: the workflow default (config.yaml edge_gt + score.edges)
DEFAULT = {"gt_thin": True, "include_void": True, "include_crowd": True, "max_dist": 0.0075,
           "apply_nms": "auto"}

#: name -> the settings that differ from DEFAULT
PROTOCOLS: dict[str, dict[str, Any]] = {
    "default": {},
    "gt_raw": {"gt_thin": False},
    "no_crowd": {"include_crowd": False},
    "no_void": {"include_void": False},
    "no_void_crowd": {"include_void": False, "include_crowd": False},
    "max_dist_0.004": {"max_dist": 0.004},
    "max_dist_0.002": {"max_dist": 0.002},
    "nms_off": {"apply_nms": False},
    "no_void_crowd+max_dist_0.004": {"include_void": False, "include_crowd": False, "max_dist": 0.004},
    "no_void_crowd+max_dist_0.002": {"include_void": False, "include_crowd": False, "max_dist": 0.002},
    "no_void_crowd+nms_off": {"include_void": False, "include_crowd": False, "apply_nms": False},
}

#: source label -> (registered source, parameters on top of the schema defaults)
SOURCES: dict[str, tuple[str, dict[str, Any]]] = {
    "sobel": ("sobel", {}),
    "canny": ("canny", {}),
    "canny_soft": ("canny", {"output": "soft"}),
    "canny_sigma1": ("canny", {"sigma": 1.0}),  # less smoothing: more texture edges (paper's params unknown)
    "canny_sigma1_soft": ("canny", {"sigma": 1.0, "output": "soft"}),
    "hed": ("hed", {}),
}

COLUMNS = ["source", "protocol", "gt_thin", "include_void", "include_crowd", "max_dist", "apply_nms",
           "thresholds", "ODS", "OIS", "AP", "clDice", "ODS_precision", "ODS_recall", "ODS_threshold",
           "gt_pixels", "images", "seconds"]


def settings(protocol: str) -> dict[str, Any]:
    return {**DEFAULT, **PROTOCOLS[protocol]}


def applies(maps: dict[int, np.ndarray], protocol: str) -> bool:
    """NMS settings are for soft maps only: on a binary map ``auto`` already means no NMS."""
    binary = all(np.unique(m).size <= 2 for m in maps.values())
    return not (binary and "apply_nms" in PROTOCOLS[protocol])


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    order = {name: i for i, name in enumerate(SOURCES)}
    proto = {name: i for i, name in enumerate(PROTOCOLS)}
    for r in sorted(rows, key=lambda r: (order.get(r["source"], 99), proto.get(r["protocol"], 99),
                                         int(r["thresholds"]))):
        w.writerow({k: r[k] for k in COLUMNS})
    write_text(path, buf.getvalue())


def fmt(x: Any) -> str:
    return "" if x is None else f"{float(x):.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT / "data" / "coco_mini"))
    ap.add_argument("--sources", default=",".join(SOURCES))
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--thresholds", type=int, default=15, help="the embedded run's 15 (BSDS: 99)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "edge_protocol.csv"))
    args = ap.parse_args(argv)

    root = Path(args.root)
    ann = root / "annotations"
    meta = read_json(ann / "instances_mini.json", what="COCO instances JSON")
    images = sorted(meta["images"], key=lambda im: im["id"])[: args.max_images]
    ids = [int(im["id"]) for im in images]
    protocols = args.protocols.split(",")
    unknown = sorted(set(protocols) - set(PROTOCOLS)) + sorted(set(args.sources.split(",")) - set(SOURCES))
    if unknown:
        ap.error(f"unknown source/protocol {unknown}; sources {list(SOURCES)}, protocols {list(PROTOCOLS)}")

    out = Path(args.out)
    rows = read_rows(out)
    done = {(r["source"], r["protocol"], int(r["thresholds"])) for r in rows}

    gt_cache: dict[tuple, dict[int, np.ndarray]] = {}

    def gts(s: dict[str, Any]) -> dict[int, np.ndarray]:
        key = (s["gt_thin"], s["include_void"], s["include_crowd"])
        if key not in gt_cache:
            gt_cache[key] = load_edge_gts(ann / "panoptic_mini.json", ann / "panoptic_mini", image_ids=ids,
                                          thin=s["gt_thin"], include_void=s["include_void"],
                                          include_crowd=s["include_crowd"])
        return gt_cache[key]

    rgbs = {int(im["id"]): load_rgb(root / "images" / im["file_name"]) for im in images}
    for label in args.sources.split(","):
        name, params = SOURCES[label]
        todo = [p for p in protocols if (label, p, args.thresholds) not in done]
        if not todo:
            continue
        if name not in available_sources():
            print(f"{label}: skipped (edge source {name!r} is not registered here)", flush=True)
            continue
        try:
            source = get_edge_source(name, params)
            maps = {i: source.compute(rgb) for i, rgb in rgbs.items()}
        except Exception as exc:  # e.g. HED weights not fetched yet: say so, run the rest
            print(f"{label}: skipped ({type(exc).__name__}: {exc})", flush=True)
            continue
        for protocol in todo:
            if not applies(maps, protocol):
                continue
            s = settings(protocol)
            g = gts(s)
            t0 = time.perf_counter()
            r = evaluate_edges(maps, g, thresholds=args.thresholds, max_dist=s["max_dist"],
                               apply_thinning=True, apply_nms=s["apply_nms"], threads=args.threads)
            dt = time.perf_counter() - t0
            row = {"source": label, "protocol": protocol, **{k: s[k] for k in DEFAULT},
                   "thresholds": args.thresholds, "ODS": fmt(r["ODS"]), "OIS": fmt(r["OIS"]),
                   "AP": fmt(r["AP"]), "clDice": fmt(r["clDice"]), "ODS_precision": fmt(r["ODS_precision"]),
                   "ODS_recall": fmt(r["ODS_recall"]), "ODS_threshold": fmt(r["ODS_threshold"]),
                   "gt_pixels": int(sum(int(m.sum()) for m in g.values())), "images": r["n_images"],
                   "seconds": f"{dt:.1f}"}
            rows.append(row)
            write_rows(out, rows)  # after every row: an interrupted grid keeps what it measured
            print(f"{label:11s} {protocol:30s} ODS {row['ODS']} OIS {row['OIS']} AP {row['AP']} "
                  f"clDice {row['clDice']} ({dt:.0f}s, load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
