"""Teacher vs student latency (``benchmarks/bench_speed.py`` JSON) beside the paper's 81x."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trace_edges.errors import DataError
from trace_edges.io import read_json

REQUIRED = ("teacher", "student", "ratio_teacher_over_student", "paper")


def load_speed(path: str | Path) -> dict[str, Any]:
    """The benchmark JSON, checked: both sides measured, positive latencies."""
    data = read_json(path, what="speed benchmark JSON")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DataError(f"speed benchmark JSON lacks {missing}", path=path,
                        fix="regenerate it: python benchmarks/bench_speed.py")
    for side in ("teacher", "student"):
        if not data[side].get("median_ms", 0) > 0:
            raise DataError(f"speed benchmark: no positive {side} latency", path=path,
                            fix="regenerate it: python benchmarks/bench_speed.py")
    return data


def speed_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table rows: ours (this machine) and the paper's, ms per image and the ratio."""
    t, s = data["teacher"], data["student"]
    m = data.get("machine", {})
    here = f"{t.get('device', '?')} ({m.get('cpu', '?')}, {m.get('affinity', '?')} cores)"
    return [
        {"run": f"ours: {data.get('model', {}).get('model', '?')}", "device": here,
         "teacher_ms": t["median_ms"], "student_ms": s["median_ms"], "ratio": data["ratio_teacher_over_student"],
         "teacher_peak_mb": t["memory"]["peak_extra_mb"], "student_peak_mb": s["memory"]["peak_extra_mb"]},
        {"run": "paper: SD3.5-Large", "device": data["paper"]["device"], "teacher_ms": data["paper"]["teacher_ms"],
         "student_ms": data["paper"]["student_ms"], "ratio": data["paper"]["ratio"],
         "teacher_peak_mb": None, "student_peak_mb": None},
    ]


def speed_figure(speed_json: str | Path, out_png: str | Path, out_pdf: str | Path, *, dpi: int = 150) -> None:
    """Two bar groups (ours | paper), teacher and student ms/img on a log axis, ratio annotated."""
    from trace_edges.report import style

    style.apply()
    import matplotlib.pyplot as plt

    rows = speed_rows(load_speed(speed_json))
    fig, ax = plt.subplots(figsize=(3.3, 2.2))
    width = 0.36
    for i, row in enumerate(rows):
        bars = ax.bar([i - width / 2, i + width / 2], [row["teacher_ms"], row["student_ms"]], width,
                      color=["#4c72b0", "#dd8452"], label=["teacher (trajectory+IEP+ABDiv)", "student (one pass)"]
                      if i == 0 else None)
        for b in bars:
            ax.annotate(f"{b.get_height():.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=5)
        ax.annotate(f"{row['ratio']:.1f}x", (i, max(row["teacher_ms"], row["student_ms"]) * 2.2), ha="center",
                    fontsize=7, weight="bold")
    ax.set_yscale("log")
    top = max(max(r["teacher_ms"], r["student_ms"]) for r in rows)
    bottom = min(min(r["teacher_ms"], r["student_ms"]) for r in rows)
    ax.set_ylim(bottom / 3, top * 6)
    ax.set_xticks(range(len(rows)), [f"{r['run']}\n{r['device']}" for r in rows], fontsize=5)
    ax.set_ylabel("ms per image (median)")
    ax.set_title("Teacher vs distilled student: latency")
    ax.legend(loc="upper right", frameon=False)
    style.save(fig, out_png, out_pdf, dpi=dpi)


__all__ = ["load_speed", "speed_figure", "speed_rows"]
