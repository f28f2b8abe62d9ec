"""``trace-edges report-tables | report-figure``: results tables and the qualitative figure."""

from __future__ import annotations

import argparse


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=PATH, got {it!r}")
        out[k] = v
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report-tables", help="tidy CSV + wide results table (CSV, Markdown) + summary JSON")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files")
    p.add_argument("--preset", required=True)
    p.add_argument("--sources", nargs="+", required=True, help="row order (edge sources, 'none' first)")
    p.add_argument("--note", action="append", default=[], help="a line printed above the Markdown table")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run_tables)

    p = sub.add_parser("report-figure", help="qualitative figure (PNG + PDF)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--edges", nargs="*", default=[], metavar="LABEL=DIR")
    p.add_argument("--results", nargs="*", default=[], metavar="LABEL=JSON")
    p.add_argument("--image-ids", nargs="*", type=int, default=[])
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.set_defaults(func=run_figure)

    register_student(sub)


def run_tables(args: argparse.Namespace) -> None:
    from trace_edges.report.tables import build_tables

    build_tables(args.metrics, args.out_dir, preset=args.preset, source_order=args.sources, notes=args.note)


def run_figure(args: argparse.Namespace) -> None:
    from trace_edges.report.figures import qualitative_figure

    qualitative_figure(args.manifest, _kv(args.edges), _kv(args.results), args.out_png, args.out_pdf,
                       image_ids=args.image_ids, dpi=args.dpi)


def register_student(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("student-figure", help="student edges over training vs the teacher (paper Fig. 4 strip)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--teacher-edges", required=True, help="edges/trace_teacher directory")
    p.add_argument("--model", required=True, help="student model.safetensors (snapshots/ next to it)")
    p.add_argument("--image-ids", nargs="*", type=int, default=[])
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.set_defaults(func=run_student_figure)


def run_student_figure(args: argparse.Namespace) -> None:
    from trace_edges.report.student_figures import student_strip_figure

    student_strip_figure(args.manifest, args.teacher_edges, args.model, args.out_png, args.out_pdf,
                         image_ids=args.image_ids, dpi=args.dpi)
