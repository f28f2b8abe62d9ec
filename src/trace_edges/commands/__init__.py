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
