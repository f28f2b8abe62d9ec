"""``trace-edges prepare``: verify the dataset, write the manifest, derived GT and edge GT."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, stage_params
from trace_edges.config import parse_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="verify checksums, validate annotations, derive class-agnostic and edge GT")
    add_common(p, threads=False)
    p.add_argument("--edge-gt-params", metavar="JSON", help="the edge_gt config block as JSON")
    p.add_argument("--out-dir", required=True, help="e.g. results/embedded/data")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.data.coco import prepare

    data = stage_params(args, "data")
    if args.config:
        from trace_edges.config import load_config

        edge_gt = load_config(args.config)["edge_gt"]
    else:
        edge_gt = parse_params(args.edge_gt_params, "edge_gt")
    prepare(data, edge_gt, args.out_dir)
