"""``trace-edges edges``: compute one edge source for every image of a data manifest (or one shard)."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, add_shard_args, shard_options, stage_params
from trace_edges.edges import available_sources


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edges", help="edge maps in [0,1] (16-bit PNG + manifest) for one source")
    add_common(p)
    p.add_argument("--source", required=True, choices=available_sources(), help="edge source name")
    p.add_argument("--manifest", required=True, help="data manifest (results/<preset>/data/manifest.json)")
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/edges/<source>")
    add_shard_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.stages.edges import run_edges

    run_edges(args.source, stage_params(args, "edges"), args.manifest, args.out_dir, **shard_options(args))
