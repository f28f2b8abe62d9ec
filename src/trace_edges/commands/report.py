"""Tables and figures: ``trace-edges report-tables | report-figure | student-figure | report-speed |
report-ablations | report-paper-vs-ours``."""

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

    p = sub.add_parser("report-bgp-figure", help="BGP split -> propagate -> merge on one image (paper Fig. 6)")
    p.add_argument("--params", required=True, help="the bgp config block as JSON")
    p.add_argument("--manifest", required=True)
    p.add_argument("--proposals", required=True, help="base proposals (COCO results JSON)")
    p.add_argument("--edges", required=True, help="edge-map directory of one source")
    p.add_argument("--image-id", type=int, default=None, help="default: the first image of the manifest")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.set_defaults(func=run_bgp_figure)

    register_student(sub)

    p = sub.add_parser("report-speed", help="teacher vs student latency bar chart (benchmarks/bench_speed.py JSON)")
    p.add_argument("--speed-json", required=True)
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.set_defaults(func=run_speed)

    p = sub.add_parser("report-ablations", help="ablation grids: tidy CSV, Markdown per grid, latencies, figure")
    p.add_argument("--cells", required=True, help="JSON list of cells (grid, cell, paper, edges, variant)")
    p.add_argument("--preset", required=True)
    p.add_argument("--metrics-dir", required=True, help="ablations/metrics (uis/<variant>.json, edges/<variant>.json)")
    p.add_argument("--teacher-dir", required=True, help="ablations/teacher (<variant>/latency_0.json)")
    p.add_argument("--students", nargs="*", default=[], metavar="VARIANT=MODEL_JSON",
                   help="student variants' model.json (their SSIM(I, Î) joins the student cells)")
    p.add_argument("--no-edge-metrics", action="store_true",
                   help="cells have UIS metrics only (ablations.edge_metrics)")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=run_ablations)

    p = sub.add_parser("report-paper-vs-ours", help="paper_vs_ours.md: every paper number beside ours, with a status")
    p.add_argument("--config", required=True, metavar="JSON", help="the run's whole (validated) config as JSON")
    p.add_argument("--summary", required=True, help="tables/summary.json")
    p.add_argument("--ablations", default=None, help="ablations/ablations_tidy.csv (optional)")
    p.add_argument("--speed", default=None, help="results/benchmarks/speed_<preset>.json (optional)")
    p.add_argument("--evidence", action="append", default=[], metavar="NAME=PATH",
                   help="a benchmark measuring a protocol choice (names: report.paper_vs_ours.EVIDENCE; optional)")
    p.add_argument("--out", nargs="+", required=True, help="output Markdown file(s)")
    p.set_defaults(func=run_paper_vs_ours)


def run_tables(args: argparse.Namespace) -> None:
    from trace_edges.report.tables import build_tables

    build_tables(args.metrics, args.out_dir, preset=args.preset, source_order=args.sources, notes=args.note)


def run_figure(args: argparse.Namespace) -> None:
    from trace_edges.report.figures import qualitative_figure

    qualitative_figure(args.manifest, _kv(args.edges), _kv(args.results), args.out_png, args.out_pdf,
                       image_ids=args.image_ids, dpi=args.dpi)


def run_bgp_figure(args: argparse.Namespace) -> None:
    import json
    import logging

    from trace_edges.bgp import bgp_params
    from trace_edges.data.manifest import load_manifest
    from trace_edges.edges import display_name
    from trace_edges.edges.store import EdgeSet
    from trace_edges.report.bgp_figure import bgp_figure

    image_id = (args.image_id if args.image_id is not None
                else min(r["id"] for r in load_manifest(args.manifest)["images"]))
    counts = bgp_figure(args.manifest, args.proposals, args.edges, bgp_params(json.loads(args.params)),
                        args.out_png, args.out_pdf, image_id=image_id,
                        edge_label=display_name(EdgeSet(args.edges).source),
                        dpi=args.dpi)
    logging.getLogger(__name__).info("BGP steps on image %d: %s", image_id, counts)


def register_student(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("student-figure", help="student edges over training vs the teacher (paper Fig. 4 strip)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--teacher-edges", required=True, help="edges/trace_teacher directory")
    p.add_argument("--model", required=True, help="student model.safetensors (snapshots/ next to it)")
    p.add_argument("--image-ids", nargs="*", type=int, default=[])
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--null-prompt", default=None,
                   help="the null_prompt stage's embeddings for the backbone: its text encoders are not loaded")
    p.set_defaults(func=run_student_figure)


def run_student_figure(args: argparse.Namespace) -> None:
    from trace_edges.report.student_figures import student_strip_figure

    student_strip_figure(args.manifest, args.teacher_edges, args.model, args.out_png, args.out_pdf,
                         image_ids=args.image_ids, dpi=args.dpi, null_prompt=args.null_prompt)


def run_speed(args: argparse.Namespace) -> None:
    from trace_edges.report.speed_figure import speed_figure

    speed_figure(args.speed_json, args.out_png, args.out_pdf, dpi=args.dpi)


def run_ablations(args: argparse.Namespace) -> None:
    import json

    from trace_edges.errors import ConfigError
    from trace_edges.report.ablations import build_ablation_report

    try:
        cells = json.loads(args.cells)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--cells is not valid JSON ({exc})") from exc
    build_ablation_report(cells, args.metrics_dir, args.teacher_dir, args.out_dir, preset=args.preset, dpi=args.dpi,
                          edge_metrics=not args.no_edge_metrics, students=_kv(args.students))


def run_paper_vs_ours(args: argparse.Namespace) -> None:
    import json

    from trace_edges.config import validate
    from trace_edges.errors import ConfigError
    from trace_edges.report.paper_vs_ours import build_paper_vs_ours

    try:
        config = validate(json.loads(args.config), where="--config")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config is not valid JSON ({exc})") from exc
    build_paper_vs_ours(config, args.summary, args.out, ablations_csv=args.ablations, speed_json=args.speed,
                        evidence=_kv(args.evidence))
