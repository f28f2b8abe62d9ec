"""Teacher subcommands: ``build-tiny``, ``null-prompt``, ``trajectory`` (sharded), ``iep`` (gather),
``teacher-labels``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trace_edges.commands import add_common, stage_params
from trace_edges.errors import ConfigError
from trace_edges.families import FAMILIES

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-tiny", help="build a tiny random model of a backbone family (diffusers layout; "
                                          "dinov2: transformers layout)")
    p.add_argument("--family", required=True, nargs="+", choices=list(FAMILIES),
                   help="one or more families (several: with --out-root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", help="the model directory (one family)")
    p.add_argument("--out-root", help="several families: ROOT/tiny-<family> each (rule build_tiny_models)")
    p.set_defaults(func=run_build_tiny)

    p = sub.add_parser("null-prompt", help="the empty prompt's text-encoder outputs for the teacher's backbone, "
                                           "computed once (the pipeline without denoiser and VAE)")
    add_common(p, threads=False)
    p.add_argument("--out", required=True,
                   help="<name>.safetensors (+ <name>.json), e.g. results/<preset>/teacher/null_prompt/"
                        "sd3-<key>.safetensors")
    p.set_defaults(func=run_null_prompt)

    p = sub.add_parser("trajectory", help="teacher trajectory with SA capture for one shard of images: per image "
                                          "t* (IEP), the divergence curve and ABDiv at t* (GPU if available)")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--shard", type=int, required=True, help="shard index (images [i*shard_size, (i+1)*shard_size))")
    p.add_argument("--seed", type=int, default=0, help="seed of the forward-noise trajectory option")
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/teacher/<family>/trajectory")
    p.add_argument("--latency-out", default=None,
                   help="also time the per-image teacher (warm model) into this JSON (Table 4's latency)")
    p.add_argument("--null-prompt", default=None,
                   help="the null_prompt stage's embeddings for this backbone: the text encoders are not loaded")
    p.set_defaults(func=run_trajectory)

    p = sub.add_parser("iep", help="pool the trajectory shards' t* and divergence curves into iep.json")
    p.add_argument("--shards", nargs="+", required=True, help="trajectory/shard_<i>.json files")
    p.add_argument("--out", required=True, help="iep.json")
    p.set_defaults(func=run_iep)

    p = sub.add_parser("teacher-labels", help="ternary pseudo-labels at the student's size + trace_teacher edge "
                                              "maps, from the ABDiv at t* of the trajectory shards")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--shards", nargs="+", required=True, help="trajectory/shard_<i>.json files")
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/teacher/<family>/labels")
    p.add_argument("--edges-dir", required=True, help="e.g. results/<preset>/edges/trace_teacher")
    p.set_defaults(func=run_labels)


def run_build_tiny(args: argparse.Namespace) -> None:
    from trace_edges.backbones.tiny import build_tiny

    if (args.out_dir is None) == (args.out_root is None) or (args.out_dir and len(args.family) > 1):
        raise ConfigError("build-tiny: give --out-dir DIR for one family, or --out-root ROOT (models go to "
                          "ROOT/tiny-<family>)", fix="e.g. --family sd3 --out-dir build/models/tiny-sd3")
    for family in args.family:
        out = args.out_dir or Path(args.out_root) / f"tiny-{family}"
        build_tiny(family, out, seed=args.seed)
        log.info("built tiny %s -> %s", family, out)


def run_null_prompt(args: argparse.Namespace) -> None:
    from trace_edges.null_prompt import write_null_text

    meta = write_null_text(stage_params(args, "teacher")["backbone"], args.out)
    log.info("null-prompt embeddings %s -> %s", meta["tensors"], args.out)


def run_trajectory(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_trajectory as run

    run(stage_params(args, "teacher"), args.manifest, args.shard, args.out_dir, seed=args.seed,
        latency_out=args.latency_out, null_prompt=args.null_prompt)


def run_iep(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_iep as run

    run(args.shards, args.out)


def run_labels(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_labels as run

    run(stage_params(args, "teacher"), args.manifest, args.shards, args.out_dir, args.edges_dir)
