"""Figures of the TRACE teacher: SA PCA along the trajectory (paper Fig. 1b), the IEP curves with
t* (Eq. 1), and the neighbour attention rows behind ABDiv (paper Fig. 5).

These figures need the aggregated self-attention SA(X_τ) itself, so unlike the teacher
(:func:`~trace_edges.teacher.trajectory.run_teacher`, which never holds an N×N map) they
materialise it, one [N, N] float32 map per step, N = H·W tokens. That is fine for figures on
grids up to 32×32 (1024² floats, 4 MB per step) and is refused above :data:`MAX_GRID` (64×64).

:func:`walk_trajectory` is the teacher's own loop (same trajectory, same capture, same IEP curve
and ABDiv calls with the same parameters, so ``t*`` and the ABDiv maps are *identical* to
``run_teacher``'s), which additionally keeps SA at every step. SA is assembled from the chunked
row path :func:`~trace_edges.teacher.divergence.sa_rows` (equal to
:func:`~trace_edges.teacher.divergence.aggregate_attention`, tested, without its
heads×N×N temporaries).

Pure helpers, tested on their own: :func:`pca_rgb` (one PCA basis over all given rows, numpy SVD,
deterministic signs, joint percentile scaling to [0, 1]) and :func:`pick_pixels` (boundary =
argmax, interior = argmin of an ABDiv map over non-border pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from trace_edges.errors import ConfigError, DataError
from trace_edges.report import style

#: largest token grid (per side) whose SA the figures materialise.
MAX_GRID = 64

#: the four neighbours of ABDiv (Eq. 2): name -> (di, dj) on the token grid (row i, column j).
NEIGHBOURS: tuple[tuple[str, int, int], ...] = (("left", 0, -1), ("right", 0, 1), ("up", -1, 0), ("down", 1, 0))

TINY_NOTE = "tiny random model: machinery check, not the paper's result"

#: figure widths (inches): a paper column and the full text width
COLUMN_W = 3.4
TEXT_W = 6.9


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
    kl_curve: dict[int, float]             # as run_teacher
    t_star: int
    image: np.ndarray                      # uint8 [R, R, 3]: the input as the backbone sees it
    info: dict[str, Any] = field(default_factory=dict)

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
    (through its ``on_step`` callback), so ``t_star``, ``kl_curve`` and ``abdiv`` are its results.
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
    return TrajectorySA(steps=res.steps, grid=res.grid, sa=sas, abdiv=res.abdiv, kl_curve=res.kl_curve,
                        t_star=res.t_star, image=resize_rgb(rgb, int(backbone.resolution)), info=res.info)


# ---------------------------------------------------------------------------------------------
# figure plumbing
# ---------------------------------------------------------------------------------------------
def _suptitle(fig, text: str, tiny: bool) -> str:
    if tiny:
        text = f"{text}\n{TINY_NOTE}"
    fig.suptitle(text, fontsize=7)
    return text


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, color: str, lw: float = 2.0) -> None:
    for s in ax.spines.values():
        s.set_edgecolor(color)
        s.set_linewidth(lw)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _describe(params: Mapping[str, Any]) -> str:
    bb = params["backbone"]
    return f"{bb['family']} @ {bb['resolution']} px, {params['trajectory']}, {params['divergence'].upper()}"


def _step_ticks(ax, steps: Sequence[int], max_ticks: int = 11) -> None:
    steps = list(steps)
    every = max(1, math.ceil(len(steps) / max_ticks))
    ticks = steps[::every]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks], rotation=45 if len(ticks) > 6 else 0)


# ---------------------------------------------------------------------------------------------
# Fig. 1b analogue
# ---------------------------------------------------------------------------------------------
def trajectory_pca_figure(backbone: Any, rgb: np.ndarray, params: Mapping[str, Any], out_png: str | Path,
                          out_pdf: str | Path, *, dpi: int = 150, seed: int = 0, ncols: int = 6) -> dict:
    """Input image, then SA PCA (one joint basis, 3 components as RGB) at every step τ; t* framed.

    Returns ``{"t_star", "steps", "kl_curve", "grid", "title"}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
    res = walk_trajectory(backbone, rgb, params, seed=seed)
    rgbs = pca_rgb(res.sa, res.grid)                                   # [S, H, W, 3]
    n = 1 + len(res.steps)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    side = TEXT_W / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(TEXT_W, side * 1.25 * nrows + 0.45), squeeze=False,
                             layout="constrained")
    flat = axes.ravel()
    flat[0].imshow(res.image, interpolation="bilinear")
    flat[0].set_title(f"input ({res.image.shape[1]}²)\n")
    for k, t in enumerate(res.steps):
        ax = flat[1 + k]
        ax.imshow(rgbs[k], interpolation="nearest")
        d = "clean latent" if t not in res.kl_curve else f"D = {_fmt(res.kl_curve[t])}"
        if t == res.t_star:
            ax.set_title(f"τ = {t}  (t*)\n{d}", color="crimson", fontweight="bold")
            _frame(ax, "crimson", 2.5)
        else:
            ax.set_title(f"τ = {t}\n{d}")
    for ax in flat:
        _blank(ax)
    for ax in flat[n:]:
        ax.axis("off")
    h, w = res.grid
    text = (f"Self-attention PCA along the trajectory ({_describe(params)}, token grid {h}×{w})\n"
            f"one PCA basis for all steps; IEP t* = {res.t_star} (framed); D = D(SA(τ_prev) ‖ SA(τ))")
    title = _suptitle(fig, text, bool(params["backbone"].get("tiny")))
    style.save(fig, out_png, out_pdf, dpi=dpi)
    return {"t_star": res.t_star, "steps": res.steps, "kl_curve": res.kl_curve, "grid": res.grid, "title": title}


# ---------------------------------------------------------------------------------------------
# KL curves + t* histogram
# ---------------------------------------------------------------------------------------------
def load_iep(iep_json: str | Path) -> dict[str, dict[str, Any]]:
    """``{image_id: {"t_star": int, "curve": {τ: D}}}`` from an iep.json (stages.teacher.run_iep)."""
    from trace_edges.io import read_json

    data = read_json(iep_json, what="IEP results")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, dict) or not images:
        raise DataError("no per-image IEP entries ('images' is missing or empty)", path=iep_json,
                        fix="rerun the iep stage (trace-edges iep)")
    out = {}
    for iid, rec in images.items():
        try:
            curve = {int(t): float(v) for t, v in rec["kl_curve"].items()}
            t_star = int(rec["t_star"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"image {iid}: malformed IEP entry ({type(exc).__name__}: {exc})", path=iep_json,
                            fix="rerun the iep stage (trace-edges iep)") from exc
        if not curve:
            raise DataError(f"image {iid}: empty KL curve", path=iep_json, fix="rerun the invert and iep stages")
        out[str(iid)] = {"t_star": t_star, "curve": dict(sorted(curve.items()))}
    return out


def kl_curves_figure(iep_json: str | Path, out_png: str | Path, out_pdf: str | Path, *, dpi: int = 150,
                     tiny: bool = False, title: str | None = None) -> dict:
    """Per-image IEP curves D(SA(τ_prev) ‖ SA(τ)) (thin) + their mean, t* marked; t* histogram.

    ``tiny`` adds the tiny-model note to the title. Returns ``{"images", "steps", "t_star_histogram", "title"}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
    recs = load_iep(iep_json)
    ids = sorted(recs, key=lambda s: (len(s), s))
    steps = sorted({t for r in recs.values() for t in r["curve"]})
    mean = [float(np.mean([recs[i]["curve"][t] for i in ids if t in recs[i]["curve"]])) for t in steps]
    hist = {t: 0 for t in steps}
    for i in ids:
        hist[recs[i]["t_star"]] = hist.get(recs[i]["t_star"], 0) + 1
    hist = dict(sorted(hist.items()))

    fig, (ax, axh) = plt.subplots(2, 1, figsize=(COLUMN_W, 3.5), gridspec_kw={"height_ratios": [1.6, 1]},
                                  layout="constrained")
    alpha = float(np.clip(3.0 / math.sqrt(len(ids)), 0.08, 0.6))
    for i in ids:
        c = recs[i]["curve"]
        ts = sorted(c)
        ax.plot(ts, [c[t] for t in ts], color="tab:blue", lw=0.6, alpha=alpha)
    ts_star = [recs[i]["t_star"] for i in ids]
    ys_star = [recs[i]["curve"].get(recs[i]["t_star"], np.nan) for i in ids]
    ax.plot(ts_star, ys_star, ls="none", marker="o", ms=3, mfc="none", mec="crimson", mew=0.7,
            alpha=max(alpha, 0.5), label="t* per image")
    ax.plot(steps, mean, color="black", lw=1.4, label="mean")
    ax.plot([], [], color="tab:blue", lw=0.6, alpha=max(alpha, 0.4), label=f"per image (n = {len(ids)})")
    vals = np.array([v for r in recs.values() for v in r["curve"].values()])
    pos = vals[vals > 0]
    if pos.size == vals.size and pos.size and pos.max() / pos.min() > 30:
        ax.set_yscale("log")
    ax.set_ylabel("D(SA(τ_prev) ‖ SA(τ))")
    ax.set_xlabel("τ")
    _step_ticks(ax, steps)
    ax.legend(frameon=False, loc="best")
    ax.set_title("IEP curve (Eq. 1)")

    diffs = np.diff(steps)
    width = 0.8 * (float(diffs.min()) if diffs.size else 1.0)
    axh.bar(list(hist), list(hist.values()), width=width, color="tab:gray", edgecolor="black", lw=0.4)
    axh.set_xlabel("t* (τ)")
    axh.set_ylabel("images")
    axh.yaxis.get_major_locator().set_params(integer=True)
    _step_ticks(axh, steps)
    axh.set_xlim(ax.get_xlim())
    axh.set_title("t* histogram")
    title = _suptitle(fig, title or "Instance Emergence Point", tiny)
    style.save(fig, out_png, out_pdf, dpi=dpi)
    return {"images": len(ids), "steps": steps, "t_star_histogram": hist, "title": title}


# ---------------------------------------------------------------------------------------------
# Fig. 5 analogue
# ---------------------------------------------------------------------------------------------
def _mark(ax, pixel, color: str, marker: str = "s", size: float = 22) -> None:
    ax.scatter([pixel[1]], [pixel[0]], s=size, marker=marker, facecolors="none", edgecolors=color, linewidths=1.0)


def neighbour_attention_figure(backbone: Any, rgb: np.ndarray, params: Mapping[str, Any], out_png: str | Path,
                               out_pdf: str | Path, *, dpi: int = 150, seed: int = 0) -> dict:
    """ABDiv at t* with a boundary and an interior pixel; each pixel's 4 neighbour SA rows.

    Row 1: input and ABDiv(SA(X_t*)) with both pixels marked, each pixel's own SA row. Rows 2-3:
    the left / right / up / down neighbours' SA rows of the boundary and the interior pixel (one
    colour scale per row), the pixel's ABDiv in each title and its two terms (Eq. 2) by the row.
    Returns ``{"t_star", "boundary", "interior", "abdiv": {"boundary", "interior"}, "grid", "title"}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
    res = walk_trajectory(backbone, rgb, params, seed=seed)
    k = res.index(res.t_star)
    sa, emap, grid = res.sa[k], res.abdiv[k], res.grid
    boundary, interior = pick_pixels(emap)
    colors = {"boundary": "cyan", "interior": "lime"}
    pixels = {"boundary": boundary, "interior": interior}
    h, w = grid

    fig, axes = plt.subplots(3, 5, figsize=(5.4, 4.7), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 0.06]})
    ax = axes[0, 0]
    ax.imshow(res.image, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
    ax.set_title(f"input ({res.image.shape[1]}²)\n")
    for c, name in enumerate(("boundary", "interior"), start=1):
        i, j = pixels[name]
        ax = axes[0, c]
        ax.imshow(sa[i * w + j].reshape(h, w), cmap="viridis", vmin=0.0, interpolation="nearest")
        _mark(ax, pixels[name], colors[name])
        ax.set_title(f"{name} pixel ({i},{j})\nits own SA row")
        _frame(ax, colors[name], 1.5)
    ax = axes[0, 3]
    im = ax.imshow(emap, cmap="magma", interpolation="nearest")
    ax.set_title(f"ABDiv(SA(X_t*))\nt* = {res.t_star}")
    cb = fig.colorbar(im, cax=axes[0, 4])
    cb.ax.tick_params(labelsize=5)
    cb.set_label("ABDiv", fontsize=6)
    for name, p in pixels.items():
        for a in (axes[0, 0], axes[0, 3]):
            _mark(a, p, colors[name], size=30)

    values = {}
    for r, name in enumerate(("boundary", "interior"), start=1):
        p = pixels[name]
        rows = neighbour_rows(sa, grid, p)
        terms = pair_divergences(sa, grid, p, params["divergence"], params["eps"])
        values[name] = float(emap[p])
        vmax = max(float(v.max()) for v in rows.values())
        for c, (nb, di, dj) in enumerate(NEIGHBOURS):
            ax = axes[r, c]
            im = ax.imshow(rows[nb], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            _mark(ax, p, colors[name], size=14)
            _mark(ax, (p[0] + di, p[1] + dj), "white", marker="o", size=10)
            ax.set_title(f"{nb} neighbour's row\nABDiv = {_fmt(values[name])}", fontsize=6)
        cb = fig.colorbar(im, cax=axes[r, 4])
        cb.ax.tick_params(labelsize=5)
        cb.set_label("attention", fontsize=6)
        axes[r, 0].set_ylabel(f"{name} ({p[0]},{p[1]})\nD(right‖left) = {_fmt(terms['horizontal'])}\n"
                              f"D(down‖up) = {_fmt(terms['vertical'])}", fontsize=6)
    for a in axes[:, :4].ravel():
        _blank(a)
    text = (f"Neighbour attention at the IEP ({_describe(params)}, token grid {h}×{w})\n"
            f"boundary = argmax, interior = argmin of ABDiv off the grid border")
    title = _suptitle(fig, text, bool(params["backbone"].get("tiny")))
    style.save(fig, out_png, out_pdf, dpi=dpi)
    return {"t_star": res.t_star, "boundary": boundary, "interior": interior, "abdiv": values, "grid": grid,
            "title": title}


# ---------------------------------------------------------------------------------------------
# Fig. 8 analogue: SA PCA per backbone, at t* (IEP) and at τ = 0 (no IEP)
# ---------------------------------------------------------------------------------------------
def backbones_pca_figure(runs: Sequence[tuple[str, Any, Mapping[str, Any]]], rgb: np.ndarray,
                         out_png: str | Path, out_pdf: str | Path, *, dpi: int = 150, seed: int = 0) -> dict:
    """One row per backbone ``(label, backbone, teacher params)``: input, SA PCA at τ = 0 (what a
    reader of the clean image's attention sees: "without IEP"), SA PCA at the IEP t*, ABDiv at t*.

    An image encoder (DINOv2) has no trajectory: its row shows its SA PCA and ABDiv, no IEP.
    Returns ``{label: {"t_star" (None for an encoder), "grid"}}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
    rows = len(runs)
    fig, axes = plt.subplots(rows, 4, figsize=(TEXT_W * 0.75, TEXT_W * 0.75 / 4 * 1.2 * rows + 0.5),
                             squeeze=False, layout="constrained")
    out: dict[str, Any] = {}
    tiny = False
    for r, (label, backbone, params) in enumerate(runs):
        tiny = tiny or bool(params["backbone"].get("tiny"))
        res = walk_trajectory(backbone, rgb, params, seed=seed)
        k0, ks = res.index(res.steps[0]), res.index(res.t_star)
        pcs = pca_rgb([res.sa[k0], res.sa[ks]], res.grid)
        a = res.abdiv[ks]
        panels = [(res.image, "input"), (pcs[0], f"SA PCA, τ = {res.steps[0]}\n(no IEP)"),
                  (pcs[1], f"SA PCA, t* = {res.t_star}\n(IEP)"), (None, f"ABDiv at t*\n{res.grid[0]}×{res.grid[1]} grid")]
        encoder = getattr(backbone, "kind", None) == "encoder"
        if encoder:  # a non-diffusion control: one read of the clean image, nothing to pick an IEP from
            panels[1:] = [(pcs[0], "SA PCA\n(image encoder)"), ("", "no trajectory:\nno IEP"),
                          (None, f"ABDiv on SA\n{res.grid[0]}×{res.grid[1]} grid")]
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            if isinstance(img, str):
                ax.set_facecolor("0.92")
            elif img is None:
                ax.imshow(a, cmap="magma", interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest" if c else "bilinear")
            ax.set_title(title, fontsize=6)
            _blank(ax)
        axes[r, 0].set_ylabel(label, fontsize=7)
        out[label] = {"t_star": None if encoder else res.t_star, "grid": res.grid}
    _suptitle(fig, "Self-attention PCA per backbone (Fig. 8 analogue): clean-image attention vs attention at the "
                   "Instance Emergence Point", tiny)
    style.save(fig, out_png, out_pdf, dpi=dpi)
    return out
