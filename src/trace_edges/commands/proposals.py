"""``trace-edges proposals``: base instance proposals as a COCO results JSON;
``trace-edges build-tiny-vit``: the tiny random ViT that MaskCut runs on in the embedded default."""

from __future__ import annotations

import argparse

from trace_edges.commands import add_common, add_shard_args, shard_options, stage_params
from trace_edges.proposals import PROPOSERS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proposals", help=f"base UIS proposals as a COCO results JSON (proposals.method: "
                                         f"{' | '.join(PROPOSERS)})")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True,
                   help="COCO results JSON, e.g. results/<preset>/proposals/<method>/proposals.json")
    add_shard_args(p)
    p.set_defaults(func=run)

    p = sub.add_parser("build-tiny-vit", help="build a tiny random ViT (transformers layout) for MaskCut")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True, help="e.g. build/models/tiny-dino")
    p.set_defaults(func=run_build_tiny_vit)


def run(args: argparse.Namespace) -> None:
    from trace_edges.stages.proposals import run_proposals

    run_proposals(stage_params(args, "proposals"), args.manifest, args.out, **shard_options(args))


def run_build_tiny_vit(args: argparse.Namespace) -> None:
    from trace_edges.proposals.vit import build_tiny_vit

    build_tiny_vit(args.out_dir, seed=args.seed)
