"""``trace-edges audit``: check artifacts against dvc.lock hashes and their provenance records."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="verify every tracked artifact (dvc.lock hashes) and its provenance")
    p.add_argument("--stage", default="embedded", help="DVC stage = preset (default: embedded)")
    p.add_argument("--configfile", nargs="*", default=None,
                   help="config files as Snakemake merges them (default: config.yaml [+ config.<stage>.yaml])")
    p.add_argument("--root", default=".", help="project root (default: .)")
    p.add_argument("--verbose", "-v", action="store_true", help="also list every matching row")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from trace_edges.audit import FAILING, audit, format_table, summarize
    from trace_edges.io import write_json

    rows = audit(args.root, args.stage, args.configfile)
    print(format_table(rows, verbose=args.verbose))
    if args.out:
        write_json(args.out, {"stage": args.stage, "summary": summarize(rows), "rows": [asdict(r) for r in rows]})
    if any(r.status in FAILING for r in rows):
        sys.exit(1)
