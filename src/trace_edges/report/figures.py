"""Qualitative figure: image, GT instance edges (when the dataset has GT), each edge source, and the
masks each produces."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import load_rgb, read_png
from trace_edges.edges import oracle_sources
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


def column_title(kind: str, source: str) -> str:
    """A column title on as many lines as it has parts, so neighbouring titles never run into each
    other: ``"edges:\ncanny"``, ``"masks:\noracle_gt\n(ORACLE)"`` (an oracle is labelled ORACLE)."""
    title = f"{kind}:\n{source}"
    return title + "\n(ORACLE)" if source in oracle_sources() else title


#: smallest gap between two neighbouring column titles (inches)
TITLE_GAP_IN = 0.08


def title_extents(fig, axes_row) -> list[tuple[float, float]]:
    """(x0, x1) in display pixels of each axes' title, after layout (aspect applied)."""
    renderer = fig.canvas.get_renderer()
    for ax in axes_row:
        ax.apply_aspect()
    return [(bb.x0, bb.x1) for bb in (ax.title.get_window_extent(renderer) for ax in axes_row)]


def qualitative_grid(panels: Sequence[Sequence[np.ndarray]], cols: Sequence[str], row_labels: Sequence[str], *,
                     cell_in: tuple[float, float] = (1.1, 0.9)):
    """The figure: one row of panels per image under the column titles ``cols``. The figure is
    widened until every title clears its neighbours by :data:`TITLE_GAP_IN` (titles keep their font
    size; a long source name never overlaps the next column)."""
    import matplotlib.pyplot as plt

    style.apply()
    n_rows, n_cols = len(panels), len(cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_in[0] * n_cols, cell_in[1] * n_rows), squeeze=False)
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest",
                      vmin=0, vmax=1 if panel.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c])
            if c == 0:
                ax.set_ylabel(row_labels[r])
    # the title centres are one cell apart: widen the cells until the widest title fits in one
    extents = title_extents(fig, axes[0])
    widest_in = max(x1 - x0 for x0, x1 in extents) / fig.dpi
    cell_w = fig.get_size_inches()[0] / n_cols
    if widest_in + TITLE_GAP_IN > cell_w * fig.subplotpars.right - cell_w * fig.subplotpars.left:
        scale = (widest_in + TITLE_GAP_IN) / (cell_w * (fig.subplotpars.right - fig.subplotpars.left))
        fig.set_size_inches(fig.get_size_inches()[0] * scale, fig.get_size_inches()[1], forward=False)
    return fig


def qualitative_figure(manifest_path: str | Path, edge_dirs: Mapping[str, str | Path],
                       results: Mapping[str, str | Path], out_png: str | Path, out_pdf: str | Path, *,
                       image_ids: Sequence[int] = (), dpi: int = 150, max_masks: int = 20) -> None:
    """One row per image: image | GT edges | edges of each source | masks of each result set
    (no GT column for a manifest without ground truth, an images-only dataset).

    ``results`` maps a label ("none", "sobel", ...) to a COCO results JSON; the top ``max_masks``
    masks by score are drawn. An ORACLE source (``oracle_gt``) is labelled so in its titles.
    """
    manifest = load_manifest(manifest_path)
    recs = {r["id"]: r for r in manifest["images"]}
    ids = list(image_ids) or sorted(recs)[:4]
    edge_sets = {k: EdgeSet(v) for k, v in edge_dirs.items()}
    res = {k: group_by_image(read_json(v, what="results JSON")) for k, v in results.items()}
    has_gt = manifest["gt"] is not None  # an images-only dataset has no GT column
    cols = ["image"] + ["GT\ninstance edges"] * has_gt + [column_title("edges", k) for k in edge_sets] + \
        [column_title("masks", k) for k in res]
    rows, labels = [], []
    for iid in ids:
        rec = recs[iid]
        # 1-px GT lines alias away when the figure is downsampled: thicken for display only
        panels = [load_rgb(rec["file"])]
        if has_gt:
            panels.append(ndimage.binary_dilation(read_png(rec["edge_gt"]) > 0, iterations=1))
        panels += [es.load(iid) for es in edge_sets.values()]
        for entries in res.values():
            ents = sorted(entries.get(iid, []), key=lambda e: -e["score"])[:max_masks]
            panels.append(colorize_masks((rec["height"], rec["width"]), [decode_rle(e["segmentation"]) for e in ents]))
        rows.append(panels)
        labels.append(f"{iid}\n{rec['name']}" if rec.get("name") else str(iid))  # images-only: the file
    style.save(qualitative_grid(rows, cols, labels), out_png, out_pdf, dpi=dpi)
