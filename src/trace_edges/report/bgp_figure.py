"""Paper Fig. 6 analogue: boundary-guided propagation step by step on one image.

Panels: image | edge map with its walls | base proposals | split at the walls | propagated inside
the edges | merged (the stage's output, before the ``max_masks`` cut). The masks are recomputed
with :func:`trace_edges.bgp.bgp_stages` from the same proposals, edge map and ``bgp`` block the
``bgp`` rule used, so the last panel holds the masks the workflow scored for that image
(``tests/test_bgp_figure.py`` checks this against ``run_bgp``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from trace_edges.bgp import bgp_stages
from trace_edges.data.manifest import load_manifest
from trace_edges.data.images import load_rgb
from trace_edges.edges.store import EdgeSet
from trace_edges.errors import DataError
from trace_edges.io import read_json
from trace_edges.masks import decode_rle
from trace_edges.report import style
from trace_edges.report.figures import colorize_masks
from trace_edges.stages._results import group_by_image


def bgp_steps_for_image(manifest_path: str | Path, proposals_path: str | Path, edge_dir: str | Path,
                        params: Mapping[str, Any], image_id: int) -> dict[str, Any]:
    """The image, its edge map and :func:`bgp_stages` on its proposals (sorted by score)."""
    recs = {r["id"]: r for r in load_manifest(manifest_path)["images"]}
    if image_id not in recs:
        raise DataError(f"image {image_id} is not in {manifest_path}",
                        fix=f"pick one of {sorted(recs)[:8]}... (config report.bgp_image)")
    entries = group_by_image(read_json(proposals_path, what="proposals results JSON")).get(image_id, [])
    if not entries:
        raise DataError(f"{proposals_path}: no proposals for image {image_id}: nothing for BGP to refine",
                        fix="pick another image (config report.bgp_image)")
    edge = EdgeSet(edge_dir).load(image_id)
    masks = [decode_rle(e["segmentation"]) for e in entries]
    scores = [float(e["score"]) for e in entries]
    return {"rgb": load_rgb(recs[image_id]["file"]), "edge": edge, "base": (masks, np.asarray(scores)),
            "stages": bgp_stages(masks, scores, edge, params)}


def _sorted(masks, scores, n):
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:n]
    return [masks[i] for i in order]


def bgp_figure(manifest_path: str | Path, proposals_path: str | Path, edge_dir: str | Path,
               params: Mapping[str, Any], out_png: str | Path, out_pdf: str | Path, *, image_id: int,
               edge_label: str = "", dpi: int = 150, max_masks: int = 20) -> dict[str, int]:
    """Draw the six panels; returns the mask count of each step (also printed in the panel titles)."""
    import matplotlib.pyplot as plt

    style.apply()
    d = bgp_steps_for_image(manifest_path, proposals_path, edge_dir, params, image_id)
    st, shape = d["stages"], d["edge"].shape
    walls_rgb = np.repeat(d["edge"][..., None], 3, axis=2).astype(np.float32)
    walls_rgb[st["walls"]] = (1.0, 0.15, 0.1)
    steps = {
        "proposals": d["base"],
        "split": st["split"][:2],
        "propagated": st["propagated"],
        "merged": st["merged"],
    }
    counts = {k: len(v[0]) for k, v in steps.items()}
    panels = [("image", d["rgb"]), ("edges + walls (red)", walls_rgb)]
    panels += [(f"{k} ({counts[k]})", colorize_masks(shape, _sorted(m, s, max_masks))) for k, (m, s) in steps.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.15 * len(panels), 1.25), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    source = f" with {edge_label} edges" if edge_label else ""
    fig.suptitle(f"BGP on image {image_id}{source}: split at edge walls -> propagate inside edges -> merge "
                 f"(top {max_masks} masks by score)", fontsize=6, y=1.02)
    style.save(fig, out_png, out_pdf, dpi=dpi)
    return counts


__all__ = ["bgp_figure", "bgp_steps_for_image"]
