"""The per-image loop shared by stages: resume finished items, write each atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from trace_edges import provenance
from trace_edges.cache import ItemCache
from trace_edges.logs import progress

log = logging.getLogger(__name__)


def run_items(
    items: Sequence[Mapping[str, Any]],
    *,
    stage: str,
    params: Mapping[str, Any],
    out_dir: str | Path,
    outputs: Callable[[Mapping[str, Any]], Iterable[Path]],
    work: Callable[[Mapping[str, Any]], None],
    key_parts: Callable[[Mapping[str, Any]], Any] = lambda rec: rec.get("sha256"),
    desc: str | None = None,
) -> tuple[int, int]:
    """Run ``work(item)`` for every item whose outputs are not already done with the same key.

    ``work`` must write ``outputs(item)`` (atomically); the item is marked done only after it
    returns, so an interrupted job redoes at most the item it was working on.
    Returns ``(computed, reused)``.
    """
    cache = ItemCache(out_dir)
    computed = reused = 0
    for rec in progress(items, desc=desc or stage):
        item = str(rec["id"])
        key = provenance.item_key(stage, params, key_parts(rec))
        files = list(outputs(rec))
        if cache.is_done(item, key, files):
            reused += 1
            continue
        cache.invalidate(item)
        work(rec)
        cache.mark_done(item, key)
        computed += 1
    log.info("%s: %d computed, %d reused from an earlier run", stage, computed, reused)
    return computed, reused
