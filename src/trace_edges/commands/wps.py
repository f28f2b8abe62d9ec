"""``trace-edges wps``: pseudo-panoptic labels from a semantic source plus an edge source."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, add_shard_args, shard_options, stage_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wps", help="semantic map + edges -> pseudo-panoptic PNG + JSON")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--edges", help="edge-source directory; omit for the no-edge baseline")
    p.add_argument("--out", required=True, help="panoptic JSON; PNGs go to the folder of the same name")
    add_shard_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.stages.wps import run_wps_stage

    run_wps_stage(stage_params(args, "wps"), args.manifest, args.edges, args.out, **shard_options(args))
