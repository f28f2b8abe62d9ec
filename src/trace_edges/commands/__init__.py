"""CLI subcommands: thin argument parsing around the package's stage functions."""

from __future__ import annotations

import argparse
from typing import Any

from trace_edges.config import load_config, parse_params


def stage_params(args: argparse.Namespace, block: str) -> dict[str, Any]:
    """The validated config block for a stage: from ``--config`` if given, else ``--params``."""
    if getattr(args, "config", None):
        return load_config(args.config)[block]
    return parse_params(getattr(args, "params", None), block)


def add_common(p: argparse.ArgumentParser, *, threads: bool = True, params: bool = True) -> None:
    """Options shared by stage subcommands."""
    if params:
        p.add_argument("--params", metavar="JSON",
                       help="the stage's config block as JSON (defaults from the schema fill the rest)")
        p.add_argument("--config", metavar="YAML",
                       help="take the stage's block from this config file instead of --params")
    if threads:
        p.add_argument("--threads", type=int, default=1, help="CPU threads / worker processes (default 1)")


def add_shard_args(p: argparse.ArgumentParser) -> None:
    """Options of a sharded per-image stage (config ``shards``; trace_edges.stages.shards)."""
    g = p.add_argument_group("shards (config shards.<stage>; none of them: every image, one job)")
    g.add_argument("--shard", type=int, metavar="I",
                   help="compute only shard I (manifest images [I*size, (I+1)*size)) and write --shard-out")
    g.add_argument("--shard-size", type=int, metavar="N", help="images per shard (with --shard)")
    g.add_argument("--shard-out", metavar="JSON", help="the shard file to write (with --shard)")
    g.add_argument("--shards", nargs="+", metavar="JSON",
                   help="gather: the shard files of every shard; writes --out from their per-image results")


def shard_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{"shard": ShardJob | None, "gather": [shard files] | None}`` from :func:`add_shard_args`."""
    from trace_edges.errors import ConfigError
    from trace_edges.stages.shards import ShardJob

    if args.shard is None:
        if args.shard_size is not None or args.shard_out is not None:
            raise ConfigError("--shard-size / --shard-out need --shard", fix="pass --shard I as well")
        return {"shard": None, "gather": args.shards}
    if args.shards:
        raise ConfigError("--shard (compute one shard) and --shards (gather) exclude each other",
                          fix="pass one of them")
    if args.shard_size is None or args.shard_out is None:
        raise ConfigError("--shard needs --shard-size and --shard-out", fix="pass both")
    return {"shard": ShardJob(args.shard, args.shard_size, args.shard_out), "gather": None}
