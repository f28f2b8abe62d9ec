"""Logging and progress bars: one format for every stage."""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # matplotlib's PDF backend subsets fonts through fontTools, which logs pages at INFO
    logging.getLogger("fontTools").setLevel(logging.WARNING)


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "img") -> Iterable[T]:
    """A tqdm bar on stderr; quiet when TRACE_EDGES_NO_PROGRESS is set (tests, CI logs)."""
    disable = bool(os.environ.get("TRACE_EDGES_NO_PROGRESS"))
    return tqdm(items, desc=desc, total=total, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0)
