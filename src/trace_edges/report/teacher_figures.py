"""Figures of the TRACE teacher, drawing only: SA PCA along the trajectory (paper Fig. 1b), the IEP
curves with t* (Eq. 1), the neighbour attention rows behind ABDiv (paper Fig. 5) and SA PCA per
backbone (Fig. 8 analogue).

What they show is computed in :mod:`trace_edges.teacher.attention_views`: the per-image figures
draw from one :class:`~trace_edges.teacher.attention_views.TrajectorySA` (one
:func:`~trace_edges.teacher.attention_views.walk_trajectory` serves both), the IEP curves from an
iep.json (:func:`~trace_edges.teacher.attention_views.load_iep`). :func:`draw_teacher_figures`
draws all three per-run figures from one walk.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trace_edges.report import style
from trace_edges.teacher.attention_views import (NEIGHBOURS, TrajectorySA, load_iep, neighbour_rows,
                                                 pair_divergences, pca_rgb, pick_pixels)

TINY_NOTE = "tiny random model: machinery check, not the paper's result"

#: figure widths (inches): a paper column and the full text width
COLUMN_W = 3.4
TEXT_W = 6.9

#: the per-run figures, by id (file ``teacher_<id>.{png,pdf}``); ``kl`` is the IEP-curve figure,
#: whatever the divergence (its historical id)
FIGURES = ("pca", "kl", "neighbours")

#: axis text of each IEP divergence D(SA(τ_prev), SA(τ))
DIVERGENCE_LABELS = {"kl": "D_KL", "jsd": "JSD", "mse": "MSE", "mae": "MAE"}


def divergence_label(divergence: str) -> str:
    """``"D_KL(SA(τ_prev) ‖ SA(τ))"`` for KL (asymmetric), ``"JSD(SA(τ_prev), SA(τ))"`` etc. otherwise."""
    name = DIVERGENCE_LABELS.get(divergence, divergence.upper())
    return f"{name}(SA(τ_prev) ‖ SA(τ))" if divergence == "kl" else f"{name}(SA(τ_prev), SA(τ))"


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
def trajectory_pca_figure(res: TrajectorySA, params: Mapping[str, Any], out_png: str | Path,
                          out_pdf: str | Path, *, dpi: int = 150, ncols: int = 6) -> dict:
    """Input image, then SA PCA (one joint basis, 3 components as RGB) at every step τ; t* framed.

    ``res``: the walk (:func:`~trace_edges.teacher.attention_views.walk_trajectory`) with ``params``,
    the teacher block it ran with. Returns ``{"t_star", "steps", "divergence_curve", "grid", "title"}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
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
        d = "clean latent" if t not in res.divergence_curve else f"D = {_fmt(res.divergence_curve[t])}"
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
            f"one PCA basis for all steps; IEP t* = {res.t_star} (framed); "
            f"D = {divergence_label(params['divergence'])}")
    title = _suptitle(fig, text, bool(params["backbone"].get("tiny")))
    style.save(fig, out_png, out_pdf, dpi=dpi)
    return {"t_star": res.t_star, "steps": res.steps, "divergence_curve": res.divergence_curve, "grid": res.grid,
            "title": title}


# ---------------------------------------------------------------------------------------------
# IEP curves + t* histogram (figure id "kl"; the divergence is the one iep.json names)
# ---------------------------------------------------------------------------------------------
def iep_curves_figure(iep_json: str | Path, out_png: str | Path, out_pdf: str | Path, *, dpi: int = 150,
                     tiny: bool = False, title: str | None = None) -> dict:
    """Per-image IEP curves D(SA(τ_prev), SA(τ)) (thin) + their mean, t* marked; t* histogram.

    D is the divergence iep.json names (kl | jsd | mse | mae), which labels the y-axis.
    ``tiny`` adds the tiny-model note to the title.
    Returns ``{"images", "steps", "divergence", "t_star_histogram", "ylabel", "title"}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
    recs = load_iep(iep_json)
    divergence = next(iter(recs.values()))["divergence"]  # one for all images (load_iep checks)
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
    ylabel = divergence_label(divergence)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("τ")
    _step_ticks(ax, steps)
    ax.legend(frameon=False, loc="best")
    ax.set_title(f"IEP curve (Eq. 1), D = {DIVERGENCE_LABELS.get(divergence, divergence.upper())}")

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
    return {"images": len(ids), "steps": steps, "divergence": divergence, "t_star_histogram": hist,
            "ylabel": ylabel, "title": title}


# ---------------------------------------------------------------------------------------------
# Fig. 5 analogue
# ---------------------------------------------------------------------------------------------
def _mark(ax, pixel, color: str, marker: str = "s", size: float = 22) -> None:
    ax.scatter([pixel[1]], [pixel[0]], s=size, marker=marker, facecolors="none", edgecolors=color, linewidths=1.0)


def neighbour_attention_figure(res: TrajectorySA, params: Mapping[str, Any], out_png: str | Path,
                               out_pdf: str | Path, *, dpi: int = 150) -> dict:
    """ABDiv at t* with a boundary and an interior pixel; each pixel's 4 neighbour SA rows.

    Row 1: input and ABDiv(SA(X_t*)) with both pixels marked, each pixel's own SA row. Rows 2-3:
    the left / right / up / down neighbours' SA rows of the boundary and the interior pixel (one
    colour scale per row), the pixel's ABDiv in each title and its two terms (Eq. 2) by the row.
    ``res``: the walk, ``params``: the teacher block it ran with (its divergence and eps give the terms).
    Returns ``{"t_star", "boundary", "interior", "abdiv": {"boundary", "interior"}, "grid", "title"}``.
    """
    import matplotlib.pyplot as plt

    style.apply()
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
def backbones_pca_figure(runs: Sequence[tuple[str, TrajectorySA, Mapping[str, Any]]],
                         out_png: str | Path, out_pdf: str | Path, *, dpi: int = 150) -> dict:
    """One row per backbone ``(label, its walk, teacher params)``: input, SA PCA at τ = 0 (what a
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
    for r, (label, res, params) in enumerate(runs):
        tiny = tiny or bool(params["backbone"].get("tiny"))
        k0, ks = res.index(res.steps[0]), res.index(res.t_star)
        pcs = pca_rgb([res.sa[k0], res.sa[ks]], res.grid)
        a = res.abdiv[ks]
        panels = [(res.image, "input"), (pcs[0], f"SA PCA, τ = {res.steps[0]}\n(no IEP)"),
                  (pcs[1], f"SA PCA, t* = {res.t_star}\n(IEP)"),
                  (None, f"ABDiv at t*\n{res.grid[0]}×{res.grid[1]} grid")]
        encoder = res.encoder
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


# ---------------------------------------------------------------------------------------------
# the per-run figures together
# ---------------------------------------------------------------------------------------------
def draw_teacher_figures(outs: Mapping[str, tuple[str | Path, str | Path]], params: Mapping[str, Any], *,
                         walk: TrajectorySA | None = None, iep_json: str | Path | None = None,
                         dpi: int = 150) -> dict[str, dict]:
    """Draw the figures ``outs = {figure id: (png, pdf)}`` (ids in :data:`FIGURES`) from ONE walk.

    ``pca`` and ``neighbours`` draw from ``walk`` (one
    :func:`~trace_edges.teacher.attention_views.walk_trajectory` of the figure image, run with the
    teacher block ``params``), ``kl`` from ``iep_json``. Returns ``{figure id: that figure's result}``.
    """
    unknown = sorted(set(outs) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown teacher figure(s) {unknown}; choose from {FIGURES}")
    if walk is None and ({"pca", "neighbours"} & set(outs)):
        raise ValueError("the pca and neighbours figures draw from a trajectory walk: pass walk=")
    if iep_json is None and "kl" in outs:
        raise ValueError("the kl figure (IEP curves) draws from iep.json: pass iep_json=")
    results: dict[str, dict] = {}
    for fig in FIGURES:
        if fig not in outs:
            continue
        png, pdf = outs[fig]
        if fig == "pca":
            results[fig] = trajectory_pca_figure(walk, params, png, pdf, dpi=dpi)
        elif fig == "neighbours":
            results[fig] = neighbour_attention_figure(walk, params, png, pdf, dpi=dpi)
        else:
            results[fig] = iep_curves_figure(iep_json, png, pdf, dpi=dpi, tiny=bool(params["backbone"].get("tiny")))
    return results
