"""What the teacher figures show, computed: the aggregated self-attention SA(X_τ) along the
trajectory, its PCA colours, the boundary / interior pixels of an ABDiv map, their neighbours' SA
rows, and the IEP curves of an iep.json. No plotting here (that is :mod:`trace_edges.report.teacher_figures`).

Unlike the teacher (:func:`~trace_edges.teacher.trajectory.run_teacher`, which never holds an N×N
map) these views materialise SA, one [N, N] float32 map per step, N = H·W tokens. That is fine for
grids up to 32×32 (1024² floats, 4 MB per step) and is refused above :data:`MAX_GRID` (64×64).

:func:`walk_trajectory` is the teacher's own loop (same trajectory, same capture, same IEP curve
and ABDiv calls with the same parameters, so ``t*`` and the ABDiv maps are *identical* to
``run_teacher``'s), which additionally keeps SA at every step. SA is assembled from the chunked
row path :func:`~trace_edges.teacher.divergence.sa_rows` (equal to
:func:`~trace_edges.teacher.divergence.aggregate_attention`, tested, without its
heads×N×N temporaries). One walk serves every per-image teacher figure.

Pure helpers, tested on their own: :func:`pca_rgb` (one PCA basis over all given rows, numpy SVD,
deterministic signs, joint percentile scaling to [0, 1]) and :func:`pick_pixels` (boundary =
argmax, interior = argmin of an ABDiv map over non-border pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from trace_edges.errors import ConfigError, DataError

#: largest token grid (per side) whose SA the figures materialise.
MAX_GRID = 64

#: the four neighbours of ABDiv (Eq. 2): name -> (di, dj) on the token grid (row i, column j).
NEIGHBOURS: tuple[tuple[str, int, int], ...] = (("left", 0, -1), ("right", 0, 1), ("up", -1, 0), ("down", 1, 0))


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------
def check_grid(grid: Sequence[int], max_side: int = MAX_GRID) -> tuple[int, int]:
    """``(H, W)`` if both sides are ≤ ``max_side``; otherwise a :class:`ConfigError`."""
    h, w = (int(grid[0]), int(grid[1]))
    if h > max_side or w > max_side:
        raise ConfigError(
            f"token grid {h}x{w} is too large for the teacher figures: they materialise the "
            f"self-attention map ({h * w}x{h * w} floats per step); at most {max_side}x{max_side} is allowed",
            fix="lower teacher.backbone.resolution for the figure (e.g. 512 px gives a 32x32 grid for "
                "SD3/FLUX-style /16 models)")
    return h, w


def _as_row_blocks(rows) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """[N, D], [S, N, D] or a sequence of [N, D] -> list of 2-D float32 blocks and the leading shape."""
    if isinstance(rows, np.ndarray) or torch.is_tensor(rows):
        arr = np.asarray(rows.cpu() if torch.is_tensor(rows) else rows)
        if arr.ndim == 2:
            return [arr], (arr.shape[0],)
        if arr.ndim == 3:
            return list(arr), arr.shape[:2]
        raise ValueError(f"rows must be [N, D] or [S, N, D], got shape {arr.shape}")
    blocks = [np.asarray(r) for r in rows]
    if not blocks or any(b.ndim != 2 or b.shape != blocks[0].shape for b in blocks):
        raise ValueError("rows must be a non-empty sequence of equally shaped [N, D] arrays")
    return blocks, (len(blocks), blocks[0].shape[0])


def pca_basis(rows, n_components: int = 3, *, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and principal axes ``[n_components, D]`` of all rows jointly (float64).

    The axes are the leading left singular vectors (numpy SVD) of the D×D scatter matrix
    Σ (x − μ)(x − μ)ᵀ, accumulated in row blocks so the rows are never copied to float64 at once.
    Sign convention: each axis is flipped so that its largest-magnitude entry is positive.
    Axes beyond the data's dimension are zero.
    """
    blocks, _ = _as_row_blocks(rows)
    d = blocks[0].shape[1]
    m = sum(b.shape[0] for b in blocks)
    mean = sum(b.sum(0, dtype=np.float64) for b in blocks) / m
    scatter = np.zeros((d, d), dtype=np.float64)
    for b in blocks:
        for r0 in range(0, b.shape[0], block):
            x = b[r0:r0 + block].astype(np.float64) - mean
            scatter += x.T @ x
    u, _, _ = np.linalg.svd(scatter, hermitian=True)
    k = min(n_components, d)
    axes = np.zeros((n_components, d), dtype=np.float64)
    axes[:k] = u[:, :k].T
    for c in range(k):
        if axes[c, int(np.argmax(np.abs(axes[c])))] < 0:
            axes[c] = -axes[c]
    return mean, axes


def pca_rgb(rows, grid: Sequence[int], *, n_components: int = 3, percentile: float = 1.0) -> np.ndarray:
    """Self-attention rows -> an RGB image on the token grid, one PCA basis for all rows.

    ``rows``: ``[N, D]`` (one map) or ``[S, N, D]`` / a list of S ``[N, D]`` maps (N = H·W, row-major),
    fitted jointly so colours compare across maps. Each component is scaled to [0, 1] with its
    ``percentile`` / ``100 − percentile`` values over *all* rows, then clipped; a constant component
    is 0.5. Returns float32 ``[H, W, 3]`` or ``[S, H, W, 3]`` (first 3 components as R, G, B).
    Deterministic: the basis has a fixed sign convention (:func:`pca_basis`).
    """
    h, w = int(grid[0]), int(grid[1])
    blocks, lead = _as_row_blocks(rows)
    if blocks[0].shape[0] != h * w:
        raise ValueError(f"{blocks[0].shape[0]} rows per map do not fill the grid {h}x{w}")
    mean, axes = pca_basis(blocks, n_components)
    proj = np.concatenate([(b.astype(np.float64) - mean) @ axes.T for b in blocks], 0)  # [M, k]
    lo = np.percentile(proj, percentile, axis=0)
    hi = np.percentile(proj, 100.0 - percentile, axis=0)
    span = hi - lo
    ok = span > 1e-12 * max(1.0, float(np.abs(proj).max(initial=0.0)))
    scaled = np.where(ok, (proj - lo) / np.where(ok, span, 1.0), 0.5)
    rgb = np.clip(scaled, 0.0, 1.0).astype(np.float32)[:, :3]
    if rgb.shape[1] < 3:
        rgb = np.concatenate([rgb, np.full((rgb.shape[0], 3 - rgb.shape[1]), 0.5, np.float32)], 1)
    return rgb.reshape(*lead[:-1], h, w, 3)


def pick_pixels(abdiv_map: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(boundary, interior)`` grid pixels ``(i, j)`` of an ABDiv map, never on the grid border.

    boundary = argmax of ABDiv over the non-border pixels, interior = argmin over the non-border
    pixels other than ``boundary`` (ties: first in row-major order). Needs a grid of at least 3×3
    (and 3×4 for two distinct pixels).
    """
    e = np.asarray(abdiv_map, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 3 or e.shape[1] < 3:
        raise ValueError(f"pick_pixels needs an [H, W] map with H, W >= 3 (non-border pixels), got {e.shape}")
    inner = e[1:-1, 1:-1]
    if not np.isfinite(inner).all():
        raise ValueError("ABDiv map has non-finite values")
    bi, bj = np.unravel_index(int(np.argmax(inner)), inner.shape)
    rest = inner.copy()
    if rest.size > 1:
        rest[bi, bj] = np.inf
    ii, ij = np.unravel_index(int(np.argmin(rest)), rest.shape)
    return (int(bi) + 1, int(bj) + 1), (int(ii) + 1, int(ij) + 1)


def neighbour_rows(sa: np.ndarray, grid: Sequence[int], pixel: Sequence[int]) -> dict[str, np.ndarray]:
    """The SA rows of the 4 neighbours of ``pixel`` reshaped to the grid: ``{name: [H, W]}``.

    ``sa``: materialised ``[N, N]`` map on ``grid``; ``pixel`` must not lie on the grid border.
    """
    h, w = int(grid[0]), int(grid[1])
    i, j = int(pixel[0]), int(pixel[1])
    if not (0 < i < h - 1 and 0 < j < w - 1):
        raise ValueError(f"pixel {(i, j)} lies on the border of the {h}x{w} grid")
    sa = np.asarray(sa)
    return {name: sa[(i + di) * w + (j + dj)].reshape(h, w) for name, di, dj in NEIGHBOURS}


def pair_divergences(sa: np.ndarray, grid: Sequence[int], pixel: Sequence[int], divergence: str = "kl",
                     eps: float = 1e-12) -> dict[str, float]:
    """The two terms of ABDiv (Eq. 2) at an inner pixel from a materialised SA:
    ``{"vertical": D(down ‖ up), "horizontal": D(right ‖ left)}`` (their sum is ABDiv there)."""
    from trace_edges.teacher.divergence import row_divergence

    rows = neighbour_rows(sa, grid, pixel)
    div = row_divergence(divergence)
    t = {k: torch.from_numpy(np.ascontiguousarray(v.reshape(-1), dtype=np.float64)) for k, v in rows.items()}
    return {"vertical": float(div(t["down"], t["up"], eps)), "horizontal": float(div(t["right"], t["left"], eps))}


# ---------------------------------------------------------------------------------------------
# the teacher's loop, keeping SA at every step
# ---------------------------------------------------------------------------------------------
@dataclass
class TrajectorySA:
    """The teacher's per-image results plus the materialised SA at every step."""

    steps: list[int]
    grid: tuple[int, int]
    sa: list[np.ndarray]                   # float32 [N, N] per step, rows sum to 1
    abdiv: np.ndarray                      # float32 [S, H, W], as run_teacher
    divergence_curve: dict[int, float]     # as run_teacher: τ_k -> D(SA(τ_{k-1}) ‖ SA(τ_k))
    t_star: int
    image: np.ndarray                      # uint8 [R, R, 3]: the input as the backbone sees it
    info: dict[str, Any] = field(default_factory=dict)
    encoder: bool = False                  # an image encoder (DINOv2): one step, no trajectory, no IEP

    def index(self, t: int) -> int:
        return self.steps.index(int(t))


def materialise_sa(qs, ks, grids, out_grid, scales=None, *, chunk: int = 1024) -> torch.Tensor:
    """Aggregated SA ``[N, N]`` (as ``aggregate_attention``), assembled from ``sa_rows`` in chunks."""
    from trace_edges.teacher.divergence import sa_rows

    n = out_grid[0] * out_grid[1]
    device = qs[0].device
    parts = [sa_rows(qs, ks, grids, out_grid, torch.arange(c0, min(n, c0 + chunk), device=device), scales)
             for c0 in range(0, n, chunk)]
    return torch.cat(parts, 0)


def walk_trajectory(backbone: Any, rgb: np.ndarray, params: Mapping[str, Any], *, seed: int = 0) -> TrajectorySA:
    """:func:`~trace_edges.teacher.trajectory.run_teacher` itself, also materialising SA per step
    (through its ``on_step`` callback), so ``t_star``, ``divergence_curve`` and ``abdiv`` are its results.
    Grids above :data:`MAX_GRID` are refused before the first forward.
    """
    from trace_edges.backbones.base import resize_rgb
    from trace_edges.teacher.trajectory import _largest_grid, run_teacher

    sites = backbone.attention_sites()
    check_grid(_largest_grid([tuple(s.grid) for s in sites]))
    steps = backbone.timesteps(params["stride"])
    if len(steps) < 2 and getattr(backbone, "kind", None) != "encoder":
        raise ConfigError(f"stride {params['stride']} gives a single step; the IEP needs at least two")
    sas: list[np.ndarray] = []

    def keep_sa(t, qs, ks, grids, out_grid, scales):
        sas.append(materialise_sa(qs, ks, grids, check_grid(out_grid), scales, chunk=params["chunk"])
                   .float().cpu().numpy())

    res = run_teacher(backbone, rgb, params, seed=seed, on_step=keep_sa)
    return TrajectorySA(steps=res.steps, grid=res.grid, sa=sas, abdiv=res.abdiv,
                        divergence_curve=res.divergence_curve, t_star=res.t_star,
                        image=resize_rgb(rgb, int(backbone.resolution)), info=res.info,
                        encoder=getattr(backbone, "kind", None) == "encoder")


# ---------------------------------------------------------------------------------------------
# the IEP results of every image (teacher/<family>/iep.json)
# ---------------------------------------------------------------------------------------------
def load_iep(iep_json: str | Path) -> dict[str, dict[str, Any]]:
    """``{image_id: {"t_star": int, "divergence": str, "curve": {τ: D}}}`` from an iep.json.

    Each entry of its ``"images"`` is ``{"t_star", "divergence" (kl | jsd | mse | mae),
    "divergence_curve": {"<τ>": D}, "grid"}``; the curve comes back sorted by τ. Every image must
    have a non-empty curve (an image encoder has none: no IEP figure) and all the same divergence.
    """
    from trace_edges.io import read_json
    from trace_edges.teacher.divergence import DIVERGENCES

    data = read_json(iep_json, what="IEP results")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, dict) or not images:
        raise DataError("no per-image IEP entries ('images' is missing or empty)", path=iep_json,
                        fix="rerun the iep stage (trace-edges iep)")
    out = {}
    for iid, rec in images.items():
        try:
            curve = {int(t): float(v) for t, v in rec["divergence_curve"].items()}
            t_star = int(rec["t_star"])
            divergence = str(rec["divergence"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"image {iid}: malformed IEP entry ({type(exc).__name__}: {exc})", path=iep_json,
                            fix="rerun the iep stage (trace-edges iep)") from exc
        if divergence not in DIVERGENCES:
            raise DataError(f"image {iid}: unknown divergence {divergence!r} (one of {', '.join(DIVERGENCES)})",
                            path=iep_json, fix="rerun the iep stage (trace-edges iep)")
        if not curve:
            raise DataError(f"image {iid}: empty divergence curve", path=iep_json,
                            fix="rerun the trajectory and iep stages")
        out[str(iid)] = {"t_star": t_star, "divergence": divergence, "curve": dict(sorted(curve.items()))}
    names = sorted({r["divergence"] for r in out.values()})
    if len(names) > 1:
        raise DataError(f"the images' IEP curves use different divergences ({', '.join(names)})", path=iep_json,
                        fix="rerun the iep stage (trace-edges iep) with one teacher config")
    return out
