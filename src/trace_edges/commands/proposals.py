"""``trace-edges proposals``: base instance proposals as a COCO results JSON."""

from __future__ import annotations

import argparse

from trace_edges.cli import add_common
from trace_edges.commands import stage_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proposals", help="base UIS proposals (felzenszwalb | external COCO results JSON)")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="COCO results JSON, e.g. results/<preset>/proposals/<method>/proposals.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.stages.proposals import run_proposals

    run_proposals(stage_params(args, "proposals"), args.manifest, args.out)
