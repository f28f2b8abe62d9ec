"""Results tables: every metrics JSON of a run -> tidy CSV, wide table (CSV + Markdown), summary JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from trace_edges.edges import display_name, oracle_sources
from trace_edges.io import read_json, write_json, write_text

#: the wide table's columns: (task, metric key, column name)
WIDE_COLUMNS = (
    ("uis", "AP", "AP"), ("uis", "AP50", "AP50"), ("uis", "AP75", "AP75"), ("uis", "AR100", "AR100"),
    ("wps", "All.pq", "PQ"), ("wps", "Things.pq", "PQ_th"), ("wps", "Stuff.pq", "PQ_st"),
    ("wps", "All.sq", "SQ"), ("wps", "All.rq", "RQ"),
    ("edges", "ODS", "ODS"), ("edges", "OIS", "OIS"), ("edges", "clDice", "clDice"),
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def tidy_metrics(files: Iterable[str | Path], preset: str) -> pd.DataFrame:
    """One row per (task, edge source, metric): the long format pandas users want."""
    rows = []
    for f in files:
        m = read_json(f, what="metrics JSON")
        for metric, value in _flatten(m["metrics"]).items():
            rows.append({"preset": preset, "dataset": m["dataset"], "num_images": m["num_images"],
                         "task": m["task"], "edge_source": m["edge_source"], "metric": metric,
                         "value": value, "file": str(f)})
    if not rows:
        raise ValueError("no metrics files given")
    return pd.DataFrame(rows).sort_values(["task", "edge_source", "metric"], kind="stable").reset_index(drop=True)


def wide_table(tidy: pd.DataFrame, source_order: list[str]) -> pd.DataFrame:
    table = pd.DataFrame(index=pd.Index(source_order, name="edge_source"))
    for task, key, col in WIDE_COLUMNS:
        sel = tidy[(tidy.task == task) & (tidy.metric == key)].set_index("edge_source")["value"]
        table[col] = sel.reindex(table.index)
    return table


def to_markdown(table: pd.DataFrame, *, title: str, notes: list[str]) -> str:
    cols = list(table.columns)
    lines = [f"# {title}", ""]
    lines += [f"> {n}" for n in notes] + [""]
    lines.append("| edge source | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for src, row in table.iterrows():
        cells = ["–" if pd.isna(v) else f"{100 * v:.1f}" for v in row.values]
        lines.append(f"| {display_name(src)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("All numbers ×100. `–` = not applicable (no edge map for the `none` baseline).")
    oracles = [s for s in table.index if s in oracle_sources()]
    if oracles:
        lines.append(f"Rows marked (ORACLE) ({', '.join(f'`{s}`' for s in oracles)}) use the instance-edge ground "
                     "truth itself as the edge map: an upper bound for BGP and WPS, not a method; their ODS/OIS "
                     "score the GT against itself.")
    return "\n".join(lines) + "\n"


def build_tables(metric_files: list[str | Path], out_dir: str | Path, *, preset: str,
                 source_order: list[str], notes: list[str]) -> pd.DataFrame:
    out_dir = Path(out_dir)
    tidy = tidy_metrics(metric_files, preset)
    table = wide_table(tidy, source_order)
    from trace_edges.io import atomic_path

    with atomic_path(out_dir / "metrics_tidy.csv") as tmp:
        tidy.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_path(out_dir / "results.csv") as tmp:
        table.to_csv(tmp, float_format="%.6f")
    write_text(out_dir / "results.md", to_markdown(table, title=f"Results — preset `{preset}`", notes=notes))
    summary = {src: {k: (None if pd.isna(v) else round(float(v), 6)) for k, v in row.items()}
               for src, row in table.iterrows()}
    write_json(out_dir / "summary.json", summary)
    return table
