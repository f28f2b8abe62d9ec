"""``trace-edges download-coco``: fetch and unpack the official COCO 2017 archives (paper preset)."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, stage_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download-coco", help="download + verify + unpack COCO 2017 val (resumable)")
    add_common(p, threads=False)
    p.add_argument("--root", required=True, help="dataset root, e.g. data/coco2017")
    p.add_argument("--out", required=True, help="summary JSON written when everything verified")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from trace_edges.data.coco_urls import COCO2017_VAL_ARCHIVES
    from trace_edges.data.download import download_coco
    from trace_edges.io import write_json

    data = stage_params(args, "data")
    dl = data["download"]
    archives = dl["archives"] or COCO2017_VAL_ARCHIVES
    summary = download_coco(archives, args.root, retries=dl["retries"], timeout_s=dl["timeout_s"],
                            chunk_bytes=dl["chunk_bytes"])
    write_json(args.out, summary)
