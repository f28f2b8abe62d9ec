"""``trace-edges score-uis | score-wps | score-edges``: metrics JSON per edge source."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, add_shard_args, shard_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-uis", help="class-agnostic mask AP/AR (pycocotools) of a COCO results JSON")
    add_common(p, threads=False, params=False)
    p.add_argument("--manifest", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--label", required=True, help="edge source the results were refined with ('none' = baseline)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_uis)

    p = sub.add_parser("score-wps", help="PQ/SQ/RQ (COCO panoptic API semantics) of pseudo-panoptic labels")
    add_common(p, params=False)
    p.add_argument("--manifest", required=True)
    p.add_argument("--pred", required=True, help="panoptic JSON (PNGs in the folder of the same name)")
    p.add_argument("--label", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_wps)

    p = sub.add_parser("score-edges", help="ODS/OIS (BSDS protocol via pyEdgeEval) and clDice of an edge source")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--edges", required=True)
    p.add_argument("--out", required=True)
    add_shard_args(p)
    p.set_defaults(func=run_edges)


def run_uis(args: argparse.Namespace) -> None:
    from trace_edges.stages.score import score_uis

    score_uis(args.manifest, args.results, args.out, label=args.label)


def run_wps(args: argparse.Namespace) -> None:
    from trace_edges.stages.score import score_wps

    score_wps(args.manifest, args.pred, args.out, label=args.label, threads=args.threads)


def run_edges(args: argparse.Namespace) -> None:
    from trace_edges.commands import stage_params
    from trace_edges.stages.score import score_edges

    score_edges(args.manifest, args.edges, args.out, params=stage_params(args, "score")["edges"],
                threads=args.threads, **shard_options(args))
