"""MaskCut (CutLER, Wang et al. CVPR 2023) as a base-proposal method: the paper's main UIS baseline.

Per image: resize to ``resolution`` px square -> DINO ViT last-layer keys per patch
(:mod:`~trace_edges.proposals.vit`) -> iterative normalized cut on the thresholded cosine
affinity, up to ``n_masks`` masks (:func:`~trace_edges.proposals.ncut.maskcut_patches`) ->
each patch mask upsampled bilinearly to the image size and thresholded at 0.5.

Differences from CutLER's release (docs/bgp.md §6): no dense-CRF refinement (and hence no
"CRF disagrees" filter); masks are upsampled from the patch grid bilinearly instead. Scores:
CutLER's masks carry none; ours are ``1 - Ncut/2`` (see :func:`mask_score`).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from trace_edges.proposals.plan import ProposalPlan
from trace_edges.proposals.ncut import CutMask, maskcut_patches
from trace_edges.proposals.vit import key_features, load_vit, prepare_image, resolve_device, vit_info

__all__ = ["maskcut_params", "maskcut_proposals", "maskcut_model", "upsample_mask", "mask_score", "stage_plan",
           "SCORE_FLOOR"]

#: lower bound of the score, so that it lies in (0, 1]
SCORE_FLOOR = 1e-6


def maskcut_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a ``proposals.maskcut`` block, filling in the schema defaults (memoised)."""
    return copy.deepcopy(_validated(json.dumps(dict(params or {}), sort_keys=True, default=str)))


@lru_cache(maxsize=64)
def _validated(key: str) -> dict[str, Any]:
    from trace_edges.config import validate

    block = validate({"method": "maskcut", "maskcut": json.loads(key)}, block="proposals",
                     where="proposals params")
    return block["maskcut"]


def maskcut_model(params: Mapping[str, Any]):
    """The configured ViT (loaded once per process and device), checked against ``patch_size``
    and ``resolution``."""
    from trace_edges.errors import ConfigError

    p = maskcut_params(params)
    vit = load_vit(p["model"], p["revision"], str(resolve_device(p["device"])))
    patch = int(vit.config.patch_size)
    if patch != p["patch_size"]:
        raise ConfigError(f"proposals.maskcut.patch_size is {p['patch_size']} but {p['model']!r} has patch "
                          f"size {patch}", fix=f"set proposals.maskcut.patch_size: {patch}")
    if p["resolution"] % patch:
        raise ConfigError(f"proposals.maskcut.resolution {p['resolution']} is not a multiple of the patch "
                          f"size {patch}", fix=f"use a multiple of {patch} (CutLER: 480 with patch 8)")
    return vit


def model_info(params: Mapping[str, Any]) -> dict[str, Any]:
    p = maskcut_params(params)
    return vit_info(maskcut_model(p), p["model"], p["revision"])


def upsample_mask(patches: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Patch-grid mask ``bool [h, w]`` -> image mask ``bool [H, W]``: bilinear interpolation of the
    0/1 grid (``align_corners=False``, patch centres at pixel centres) kept where >= 0.5."""
    grid = torch.from_numpy(np.asarray(patches, dtype=np.float32))[None, None]
    up = F.interpolate(grid, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)
    return up[0, 0].numpy() >= 0.5


def mask_score(cut: CutMask) -> float:
    """``max(1 - Ncut/2, 1e-6)`` in (0, 1]: Ncut in [0, 2] is the normalized-cut value of the
    seed component in the graph of its round, so a cleanly separable region scores near 1."""
    return max(1.0 - cut.ncut / 2.0, SCORE_FLOOR)


def maskcut_proposals(rgb: np.ndarray, params: Mapping[str, Any] | None = None
                      ) -> tuple[list[np.ndarray], np.ndarray]:
    """MaskCut proposals for a ``uint8 [H, W, 3]`` image.

    Returns ``(masks, scores)``: at most ``n_masks`` non-empty boolean ``[H, W]`` masks (disjoint
    on the patch grid), sorted by descending score (ties: round order).
    """
    p = maskcut_params(params)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"maskcut_proposals: expected an [H, W, 3] image, got {rgb.shape}")
    vit = maskcut_model(p)
    feats, grid = key_features(vit, prepare_image(rgb, p["resolution"]))
    cuts = maskcut_patches(feats, grid, n_masks=p["n_masks"], tau=p["tau"], eps=p["eps"],
                           corner_limit=p["corner_limit"], min_frac=p["min_frac"], max_iou=p["max_iou"])
    masks, scores = [], []
    for cut in cuts:
        m = upsample_mask(cut.patches, rgb.shape[:2])
        if m.any():
            masks.append(m)
            scores.append(mask_score(cut))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [masks[i] for i in order], np.asarray(scores, dtype=np.float64)[order]


def stage_plan(block: Mapping[str, Any], images) -> ProposalPlan:
    """The proposals stage's plan (:func:`trace_edges.proposals.stage_plan`): the block with the
    schema defaults, the ViT loaded once (patch size / resolution checked); an image's cache key
    adds the weights' bytes (local tiny model) or the resolved hub commit."""
    from trace_edges.data.images import load_rgb
    from trace_edges.io import sha256_file

    block = maskcut_params(block)
    model = model_info(block)
    weights = _model_files(block["model"])
    model_key = [sha256_file(f) for f in weights] or [model["commit"]]
    return ProposalPlan(params=block, propose=lambda rec: maskcut_proposals(load_rgb(rec["file"]), block),
                        key_parts=lambda rec: [rec["sha256"], *model_key], inputs=list(weights), model=model)


def _model_files(model: str) -> list[Path]:
    """The config and weight files of a local model directory (sorted); [] for a hub id."""
    root = Path(model)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
