"""``trace-edges`` command line: one subcommand per workflow stage.

Every Snakemake rule calls exactly one subcommand with explicit inputs, outputs and a
``--params`` JSON block, so each stage also runs on its own without Snakemake. Errors the user
can act on print one message (what, which file, how to fix) and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from typing import Sequence

from trace_edges import __version__
from trace_edges.errors import TraceEdgesError
from trace_edges.logs import setup_logging

#: subcommand modules under trace_edges.commands, each with ``register(subparsers)``. Imported by
#: name only (importlib), so this module does not depend on them statically: a stage's code set
#: (trace_edges.code_deps) holds its own subcommand module, not every one; the command modules
#: take their shared options from trace_edges.commands, never from this module.
COMMAND_MODULES = (
    "download",
    "prepare",
    "edges",
    "hed",
    "teacher",
    "teacher_figures",
    "student",
    "proposals",
    "bgp",
    "wps",
    "score",
    "report",
    "pull",
    "audit",
)

log = logging.getLogger("trace_edges")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trace-edges",
        description="TRACE reproduction: data, edge sources, BGP grouping, AP/PQ/edge scoring, reports.",
    )
    parser.add_argument("--version", action="version", version=f"trace-edges {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("TRACE_EDGES_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"trace_edges.commands.{name}").register(sub)
    return parser


def limit_threads(threads: int) -> None:
    """At most ``threads`` compute threads: torch reads OMP_NUM_THREADS when it is first imported,
    so stages that never touch torch (BGP, scoring: most jobs) do not pay its ~3 s import for this."""
    n = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported: tell it directly
        torch.set_num_threads(n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    threads = getattr(args, "threads", None)
    if threads:
        limit_threads(threads)
    try:
        args.func(args)
    except TraceEdgesError as exc:
        print(f"trace-edges {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"trace-edges {args.command}: error: no space left on device{where} ({exc.strerror})\n"
              "  fix: free disk space (or move results/ to a larger disk) and rerun; every item finished "
              "before the failure is kept and will not be recomputed, and no partial file was left behind",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trace-edges {args.command}: interrupted; finished items are kept, rerun to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
