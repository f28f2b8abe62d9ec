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
