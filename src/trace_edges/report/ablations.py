"""Ablation grids -> one tidy CSV, a Markdown table per grid, the teacher latencies and a figure.

Inputs: the cell list (``trace_edges.ablations.cells_json``), the per-variant metrics written by
the ablation scoring rules (``metrics/uis/<variant>.json``, ``metrics/edges/<variant>.json``),
the student variants' ``model.json`` (their reconstruction SSIM(I, Î) on the held-out training
images, reported next to AP as the paper's L_rec ablation does) and the teacher variants'
``latency_0.json`` (written by their one trajectory shard). Timings are
kept out of the tidy CSV (which is deterministic) and go to ``ablations_latency.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from trace_edges.errors import DataError
from trace_edges.io import atomic_path, read_json, write_text

UIS_METRICS = ("AP", "AP50", "AR100")
EDGE_METRICS = ("ODS", "OIS", "clDice")
#: from a student cell's model.json: SSIM(I, Î) on its validation images (in [0, 1], not ×100)
STUDENT_METRICS = ("SSIM",)
TIDY_COLUMNS = ("preset", "grid", "paper", "cell", "edges", "variant", "dataset", "num_images", "task", "metric",
                "value")


def student_rows(c: Mapping[str, Any], model_json: str | Path, preset: str) -> list[dict[str, Any]]:
    """The SSIM row of a student cell from its ``model.json`` (``val_metrics.val_ssim``)."""
    meta = read_json(model_json, what=f"student model.json of cell {c['grid']}/{c['cell']}")
    v = (meta.get("val_metrics") or {}).get("val_ssim")
    return [{"preset": preset, "grid": c["grid"], "paper": c.get("paper", ""), "cell": c["cell"], "edges": c["edges"],
             "variant": c["variant"], "dataset": "student_val",
             "num_images": len((meta.get("training_data") or {}).get("val_ids") or []), "task": "student",
             "metric": "SSIM", "value": None if v is None else float(v)}]


def tidy_rows(cells: Sequence[Mapping[str, Any]], metrics_dir: str | Path, preset: str, *,
              edge_metrics: bool = True, students: Mapping[str, str | Path] | None = None) -> pd.DataFrame:
    """One row per (cell, metric). A cell without edges (or every cell, without ``edge_metrics``)
    has UIS metrics only; a student cell whose variant is in ``students`` (variant -> model.json)
    also has its SSIM."""
    metrics_dir = Path(metrics_dir)
    rows = []
    for c in cells:
        if c["edges"] == "student" and students and c["variant"] in students:
            rows += student_rows(c, students[c["variant"]], preset)
        files = [("uis", metrics_dir / "uis" / f"{c['variant']}.json", UIS_METRICS)]
        if c["edges"] != "none" and edge_metrics:
            files.append(("edges", metrics_dir / "edges" / f"{c['variant']}.json", EDGE_METRICS))
        for task, path, keys in files:
            m = read_json(path, what=f"ablation metrics of cell {c['grid']}/{c['cell']}")
            for k in keys:
                v = m["metrics"].get(k)
                rows.append({"preset": preset, "grid": c["grid"], "paper": c.get("paper", ""), "cell": c["cell"],
                             "edges": c["edges"], "variant": c["variant"], "dataset": m["dataset"],
                             "num_images": m["num_images"], "task": task, "metric": k,
                             "value": None if v is None else float(v)})
    if not rows:
        raise DataError("no ablation cells", fix="configure ablations.grids (config.yaml)")
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))


def latency_rows(cells: Sequence[Mapping[str, Any]], teacher_dir: str | Path) -> pd.DataFrame:
    rows = []
    for c in cells:
        if c["edges"] != "teacher":
            continue
        lat = read_json(Path(teacher_dir) / c["variant"] / "latency_0.json", what="teacher latency")
        rows.append({"grid": c["grid"], "cell": c["cell"], "variant": c["variant"],
                     "teacher_ms_per_image": round(float(lat["ms_per_image"]), 1)})
    return pd.DataFrame(rows, columns=["grid", "cell", "variant", "teacher_ms_per_image"])


def grid_markdown(tidy: pd.DataFrame, latency: pd.DataFrame, *, preset: str) -> str:
    cols = [m for m in UIS_METRICS + EDGE_METRICS]
    ssim_on = bool((tidy["metric"] == "SSIM").any())
    lines = [f"# Ablations — preset `{preset}`", "",
             "> Every cell runs on the same ablation images (first `ablations.max_images`); UIS = the base "
             "proposals refined by BGP with the cell's edges, scored class-agnostically (pycocotools); edges "
             "scored against the instance-edge GT. All numbers ×100; teacher latency in ms/image on this "
             "machine (not deterministic, kept out of ablations_tidy.csv)."
             + (" SSIM = SSIM(I, Î) of the student's reconstruction on its held-out training images, in [0, 1] "
                "(the paper's L_rec ablation)." if ssim_on else ""), ""]
    lat = {(r.grid, r.cell): r.teacher_ms_per_image for r in latency.itertuples()}
    for grid, sub in tidy.groupby("grid", sort=False):
        paper = sub["paper"].iloc[0]
        n = int(sub[sub.task != "student"]["num_images"].iloc[0])
        lines += [f"## {grid}" + (f" — {paper}" if paper else ""), "", f"{n} images.", ""]
        lines.append("| cell | edges | variant | " + " | ".join(cols) + (" | SSIM" if ssim_on else "")
                     + " | teacher ms/img |")
        lines.append("|---|---|---|" + "---|" * (len(cols) + 1 + ssim_on))
        for cell, cs in sub.groupby("cell", sort=False):
            vals = {r.metric: r.value for r in cs.itertuples()}
            cells_txt = ["–" if vals.get(m) is None or pd.isna(vals.get(m)) else f"{100 * vals[m]:.1f}"
                         for m in cols]
            if ssim_on:
                s = vals.get("SSIM")
                cells_txt.append("–" if s is None or pd.isna(s) else f"{s:.3f}")
            ms = lat.get((grid, cell))
            lines.append(f"| {cell} | {cs['edges'].iloc[0]} | `{cs['variant'].iloc[0]}` | " + " | ".join(cells_txt)
                         + f" | {'–' if ms is None else f'{ms:.0f}'} |")
        lines.append("")
    return "\n".join(lines)


def ablation_figure(tidy: pd.DataFrame, out_png: str | Path, out_pdf: str | Path, *, dpi: int = 150) -> None:
    """One panel per grid: AP (bars) and ODS (dots) per cell."""
    from trace_edges.report import style

    style.apply()
    import matplotlib.pyplot as plt

    grids = list(dict.fromkeys(tidy["grid"]))
    with_ods = bool((tidy["metric"] == "ODS").any())
    ncol = min(4, len(grids))
    nrow = (len(grids) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.9 * ncol, 1.7 * nrow), squeeze=False)
    for ax, grid in zip(axes.flat, grids):
        sub = tidy[tidy.grid == grid]
        cells = list(dict.fromkeys(sub["cell"]))
        ap = [100 * float(sub[(sub.cell == c) & (sub.metric == "AP")]["value"].iloc[0]) for c in cells]
        ods = [sub[(sub.cell == c) & (sub.metric == "ODS")]["value"] for c in cells]
        ods = [100 * float(o.iloc[0]) if len(o) and pd.notna(o.iloc[0]) else float("nan") for o in ods]
        x = range(len(cells))
        ax.bar(x, ap, color="#4c72b0", label="AP (UIS)")
        if with_ods:
            ax2 = ax.twinx()
            ax2.plot(x, ods, "o", color="#dd8452", ms=3, label="ODS (edges)")
            ax2.set_ylim(0, 100)
            ax2.tick_params(labelsize=5)
        ax.set_xticks(list(x), cells, rotation=45, ha="right", fontsize=5)
        paper = sub["paper"].iloc[0]
        ax.set_title(f"{grid}\n{paper}" if paper else grid, fontsize=6)
        ax.tick_params(labelsize=5)
    for ax in list(axes.flat)[len(grids):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color="#4c72b0")]
    labels = ["mask AP ×100 (BGP with the cell's edges)"]
    if with_ods:
        handles.append(plt.Line2D([], [], marker="o", ls="", color="#dd8452", ms=3))
        labels.append("ODS ×100 (right axis)")
    fig.legend(handles=handles, labels=labels, loc="lower center", ncol=2, frameon=False, fontsize=6,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    style.save(fig, out_png, out_pdf, dpi=dpi)


def build_ablation_report(cells: Sequence[Mapping[str, Any]], metrics_dir: str | Path, teacher_dir: str | Path,
                          out_dir: str | Path, *, preset: str, dpi: int = 150,
                          edge_metrics: bool = True, students: Mapping[str, str | Path] | None = None) -> pd.DataFrame:
    out_dir = Path(out_dir)
    tidy = tidy_rows(cells, metrics_dir, preset, edge_metrics=edge_metrics, students=students)
    latency = latency_rows(cells, teacher_dir)
    with atomic_path(out_dir / "ablations_tidy.csv") as tmp:
        tidy.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(out_dir / "ablations_latency.csv") as tmp:
        latency.to_csv(tmp, index=False)
    write_text(out_dir / "ablations.md", grid_markdown(tidy, latency, preset=preset))
    ablation_figure(tidy, out_dir / "figures" / "ablations.png", out_dir / "figures" / "ablations.pdf", dpi=dpi)
    return tidy


__all__ = ["build_ablation_report", "grid_markdown", "latency_rows", "student_rows", "tidy_rows"]
