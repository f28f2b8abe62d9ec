#!/usr/bin/env python
"""Measure the effect of following CutLER's MaskCut loop (issue 14, item 1) on the embedded images.

Two loops over the same ViT key features, the same graph steps (:mod:`trace_edges.proposals.ncut`)
and the same parameters (``proposals.maskcut`` of the config):

* ``cutler`` -- :func:`trace_edges.proposals.ncut.maskcut_patches`, CutLER's ``maskcut_forward``:
  N rounds, a rejected round counts and removes nothing; size and IoU checks from round 1 only;
* ``earlier`` -- this project's loop before issue 14 (git ed6986f^), kept here only to measure the
  change: the size check from round 0 and the whole loop stopped at the first rejection.

Per loop: masks per image, the number of images whose masks differ between the loops, and
class-agnostic COCO mask AP / AP50 / AR100 (pycocotools via ``evaluate_instances``) against
``instances_mini.json``. The embedded MaskCut model is the TINY RANDOM ViT built by rule
``build_tiny_vit`` (``snakemake --cores 1 build/models/tiny-dino/config.json``): the numbers
measure the loop's mechanics on real images, not MaskCut's quality (the paper preset uses DINO
ViT-B/8, which needs the hub).

Writes ``results/benchmarks/maskcut_loop.csv``.

    PYTHONPATH=src python benchmarks/bench_maskcut_loop.py [--max-images 16]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trace_edges.config import load_config  # noqa: E402
from trace_edges.data.images import load_rgb  # noqa: E402
from trace_edges.io import atomic_path, read_json  # noqa: E402
from trace_edges.metrics.instances import evaluate_instances  # noqa: E402
from trace_edges.proposals import maskcut as mc  # noqa: E402
from trace_edges.proposals.ncut import (CutMask, fiedler_vector, mask_iou, ncut_value,  # noqa: E402
                                        orient_bipartition, patch_affinity, seed_component)
from trace_edges.stages._results import results_for_image  # noqa: E402

FIELDS = ["loop", "AP", "AP50", "AR100", "masks", "masks_per_image", "images_differing", "seconds", "images", "model"]


def earlier_loop(feats, grid, *, n_masks=3, tau=0.2, eps=1e-5, corner_limit=3, min_frac=0.01, max_iou=0.5):
    """The loop before issue 14 (git ed6986f^, ``maskcut_patches``), verbatim but for the name."""
    h, w = grid
    f = np.asarray(feats, dtype=np.float64)
    base = patch_affinity(f, tau, eps)
    removed = np.zeros(h * w, dtype=bool)
    taken = np.zeros((h, w), dtype=bool)
    previous = None
    out = []
    for rnd in range(int(n_masks)):
        W = base.copy()
        W[removed, :] = eps
        W[:, removed] = eps
        vec, _ = fiedler_vector(W)
        fg, seed = orient_bipartition(vec, (h, w), corner_limit=corner_limit)
        comp = seed_component(fg, seed)
        if comp.mean() <= min_frac or (previous is not None and mask_iou(comp, previous) > max_iou):
            break
        ncut = ncut_value(W, comp)
        previous = comp
        removed |= comp.reshape(-1)
        new = comp & ~taken
        taken |= comp
        if new.any():
            out.append(CutMask(patches=new, ncut=ncut, round=rnd, seed=seed))
    return out


LOOPS = {"cutler": mc.maskcut_patches, "earlier": earlier_loop}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "maskcut_loop.csv"))
    args = ap.parse_args(argv)

    cfg = load_config(args.config)
    root = Path(cfg["data"]["root"])
    root = root if root.is_absolute() else ROOT / root
    params = dict(cfg["proposals"]["maskcut"])
    if not Path(params["model"]).is_absolute():
        params["model"] = str(ROOT / params["model"])
    gt = read_json(root / "annotations" / "instances_mini.json", what="COCO instances JSON")
    images = sorted(gt["images"], key=lambda im: im["id"])[: args.max_images]
    ids = {im["id"] for im in images}
    gt = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}

    model = (f"tiny random ViT ({cfg['proposals']['maskcut']['model']})" if params["tiny"]
             else cfg["proposals"]["maskcut"]["model"]) + f", {params['resolution']} px"
    per_loop: dict[str, dict[int, list[np.ndarray]]] = {}
    rows = []
    for name, loop in LOOPS.items():
        mc.maskcut_patches = loop  # maskcut_proposals looks the loop up in its module at call time
        try:
            t0 = time.perf_counter()
            results, masks_of = [], {}
            for im in images:
                masks, scores = mc.maskcut_proposals(load_rgb(root / "images" / im["file_name"]), params)
                masks_of[im["id"]] = masks
                results += results_for_image(im["id"], masks, scores)
            dt = time.perf_counter() - t0
        finally:
            mc.maskcut_patches = LOOPS["cutler"]
        per_loop[name] = masks_of
        s = evaluate_instances(gt, results, iou_type="segm", class_agnostic=True)
        n = sum(len(m) for m in masks_of.values())
        rows.append({"loop": name, "AP": 100 * s["AP"], "AP50": 100 * s["AP50"], "AR100": 100 * s["AR100"],
                     "masks": n, "masks_per_image": n / len(images), "seconds": dt})
    differ = sum(len(per_loop["cutler"][i]) != len(per_loop["earlier"][i])
                 or any(not np.array_equal(a, b) for a, b in zip(per_loop["cutler"][i], per_loop["earlier"][i]))
                 for i in ids)
    for r in rows:
        r["images_differing"] = differ
        print(f"{r['loop']}: AP {r['AP']:.2f} AP50 {r['AP50']:.2f} AR100 {r['AR100']:.2f} "
              f"{r['masks']} masks ({r['masks_per_image']:.2f}/image), {differ} images differ", flush=True)

    out = Path(args.out)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in r.items()},
                        "images": len(images), "model": model})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
