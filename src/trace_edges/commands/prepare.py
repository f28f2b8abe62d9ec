"""``trace-edges prepare``: verify the dataset, write the manifest, derived GT and edge GT
(or, for an images-only dataset, the manifest alone)."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, stage_params
from trace_edges.config import parse_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="verify checksums, validate annotations, derive class-agnostic and edge GT")
    add_common(p, threads=False)
    p.add_argument("--edge-gt-params", metavar="JSON", help="the edge_gt config block as JSON")
    p.add_argument("--check-image-ids", metavar="JSON",
                   help='{"<config key>": [image ids]}: refuse ids the selected images lack (the workflow passes '
                        "the report.* ids it could not check when it was parsed, e.g. before a download)")
    p.add_argument("--out-dir", required=True, help="e.g. results/embedded/data")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import json

    from trace_edges.data.selection import check_ids, has_ground_truth, selected_image_ids
    from trace_edges.errors import ConfigError

    data = stage_params(args, "data")
    checks = {}
    if args.check_image_ids:
        try:
            checks = json.loads(args.check_image_ids)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--check-image-ids is not valid JSON ({exc})") from exc
    if not has_ground_truth(data):
        from trace_edges.data.folder import prepare_images

        available = selected_image_ids(data)
        for key, ids in checks.items():
            check_ids(key, ids, available, data)
        prepare_images(data, args.out_dir)
        return
    from trace_edges.data.coco import prepare

    if args.config:
        from trace_edges.config import load_config

        edge_gt = load_config(args.config)["edge_gt"]
    else:
        edge_gt = parse_params(args.edge_gt_params, "edge_gt")
    prepare(data, edge_gt, args.out_dir, check_image_ids=checks)
