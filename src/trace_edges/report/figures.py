"""Qualitative figure: image, GT instance edges (when the dataset has GT), each edge source, and the
masks each produces."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import load_rgb, read_png
from trace_edges.edges.store import EdgeSet
from trace_edges.io import read_json
from trace_edges.masks import decode_rle
from trace_edges.report import style
from trace_edges.stages._results import group_by_image


def colorize_masks(shape: tuple[int, int], masks: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
    """Paint masks (highest score first = painted last on top) with fixed pseudo-random colours."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros(shape + (3,), dtype=np.float32)
    colors = rng.uniform(0.25, 1.0, size=(max(len(masks), 1), 3))
    for m, c in zip(reversed(masks), colors[::-1]):
        canvas[m] = c
    return canvas


def qualitative_figure(manifest_path: str | Path, edge_dirs: Mapping[str, str | Path],
                       results: Mapping[str, str | Path], out_png: str | Path, out_pdf: str | Path, *,
                       image_ids: Sequence[int] = (), dpi: int = 150, max_masks: int = 20) -> None:
    """One row per image: image | GT edges | edges of each source | masks of each result set
    (no GT column for a manifest without ground truth, an images-only dataset).

    ``results`` maps a label ("none", "sobel", ...) to a COCO results JSON; the top ``max_masks``
    masks by score are drawn.
    """
    import matplotlib.pyplot as plt

    style.apply()
    manifest = load_manifest(manifest_path)
    recs = {r["id"]: r for r in manifest["images"]}
    ids = list(image_ids) or sorted(recs)[:4]
    edge_sets = {k: EdgeSet(v) for k, v in edge_dirs.items()}
    res = {k: group_by_image(read_json(v, what="results JSON")) for k, v in results.items()}
    has_gt = manifest["gt"] is not None  # an images-only dataset has no GT column
    cols = ["image"] + ["GT instance edges"] * has_gt + [f"edges: {k}" for k in edge_sets] + \
        [f"masks: {k}" for k in res]
    fig, axes = plt.subplots(len(ids), len(cols), figsize=(1.1 * len(cols), 0.9 * len(ids)), squeeze=False)
    for r, iid in enumerate(ids):
        rec = recs[iid]
        # 1-px GT lines alias away when the figure is downsampled: thicken for display only
        panels = [load_rgb(rec["file"])]
        if has_gt:
            panels.append(ndimage.binary_dilation(read_png(rec["edge_gt"]) > 0, iterations=1))
        panels += [es.load(iid) for es in edge_sets.values()]
        for entries in res.values():
            ents = sorted(entries.get(iid, []), key=lambda e: -e["score"])[:max_masks]
            panels.append(colorize_masks((rec["height"], rec["width"]), [decode_rle(e["segmentation"]) for e in ents]))
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest",
                      vmin=0, vmax=1 if panel.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c])
            if c == 0:
                ax.set_ylabel(f"{iid}\n{rec['name']}" if rec.get("name") else str(iid))  # images-only: the file
    style.save(fig, out_png, out_pdf, dpi=dpi)
