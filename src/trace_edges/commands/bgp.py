"""``trace-edges bgp``: refine base proposals with an edge source (split -> propagate -> merge)."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, add_shard_args, shard_options, stage_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bgp", help="boundary-guided propagation of proposals with one edge source")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--proposals", required=True, help="COCO results JSON of the base proposals")
    p.add_argument("--edges", required=True, help="edge-source directory (with manifest.json)")
    p.add_argument("--out", required=True, help="COCO results JSON of the refined masks")
    add_shard_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.stages.bgp import run_bgp_stage

    run_bgp_stage(stage_params(args, "bgp"), args.manifest, args.proposals, args.edges, args.out,
                  **shard_options(args))
