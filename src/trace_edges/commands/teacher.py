"""Teacher subcommands: ``build-tiny``, ``invert``, ``iep``, ``abdiv-labels``, ``teacher-cell``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trace_edges.commands import add_common, stage_params
from trace_edges.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-tiny", help="build a tiny random model of a backbone family (diffusers layout; "
                                          "dinov2: transformers layout)")
    p.add_argument("--family", required=True, nargs="+", choices=["sd15", "sdxl", "sd3", "pixart", "flux", "dinov2"],
                   help="one or more families (several: with --out-root)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", help="the model directory (one family)")
    p.add_argument("--out-root", help="several families: ROOT/tiny-<family> each (rule build_tiny_models)")
    p.set_defaults(func=run_build_tiny)

    p = sub.add_parser("invert", help="teacher trajectory with SA capture for one shard of images (GPU if available)")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--shard", type=int, required=True, help="shard index (images [i*shard_size, (i+1)*shard_size))")
    p.add_argument("--seed", type=int, default=0, help="seed of the forward-noise trajectory option")
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/teacher/<family>/invert")
    p.set_defaults(func=run_invert)

    p = sub.add_parser("iep", help="Instance Emergence Point per image (Eq. 1) from the invert shards")
    p.add_argument("--shards", nargs="+", required=True, help="invert/shard_<i>.json files")
    p.add_argument("--out", required=True, help="iep.json")
    p.add_argument("--fixed-t", type=int, default=None,
                   help="teacher.t_star: one fixed timestep for every image instead of the IEP (Table 3 b)")
    p.set_defaults(func=run_iep)

    p = sub.add_parser("abdiv-labels", help="ABDiv at t*, ternary pseudo-labels, trace_teacher edge maps")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--iep", required=True)
    p.add_argument("--invert-dir", required=True)
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/teacher/<family>")
    p.add_argument("--edges-dir", required=True, help="e.g. results/<preset>/edges/trace_teacher")
    p.set_defaults(func=run_labels)

    p = sub.add_parser("teacher-cell", help="invert + iep + abdiv-labels on a small image set in one process "
                                            "(ablation cells)")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True, help="e.g. results/<preset>/ablations/teacher/<variant>")
    p.add_argument("--edges-dir", required=True, help="e.g. results/<preset>/ablations/edges/<variant>")
    p.set_defaults(func=run_cell)


def run_build_tiny(args: argparse.Namespace) -> None:
    from trace_edges.backbones.tiny import build_tiny

    if (args.out_dir is None) == (args.out_root is None) or (args.out_dir and len(args.family) > 1):
        raise ConfigError("build-tiny: give --out-dir DIR for one family, or --out-root ROOT (models go to "
                          "ROOT/tiny-<family>)", fix="e.g. --family sd3 --out-dir build/models/tiny-sd3")
    for family in args.family:
        out = args.out_dir or Path(args.out_root) / f"tiny-{family}"
        build_tiny(family, out, seed=args.seed)
        log.info("built tiny %s -> %s", family, out)


def run_invert(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_invert as run

    run(stage_params(args, "teacher"), args.manifest, args.shard, args.out_dir, seed=args.seed)


def run_iep(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_iep as run

    run(args.shards, args.out, fixed_t=args.fixed_t)


def run_labels(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_abdiv_labels

    run_abdiv_labels(stage_params(args, "teacher"), args.manifest, args.iep, args.invert_dir, args.out_dir,
                     args.edges_dir)


def run_cell(args: argparse.Namespace) -> None:
    from trace_edges.stages.teacher import run_teacher_cell

    run_teacher_cell(stage_params(args, "teacher"), args.manifest, args.out_dir, args.edges_dir, seed=args.seed)
