"""Per-item resume: skip work whose result is already on disk and was made by the same code/params.

A stage that processes many images writes each image's result atomically, then a small key file
(``.done/<item>.key``) holding :func:`trace_edges.provenance.item_key`. On a rerun an item is
skipped only if its key matches and every one of its files exists, so a job killed half-way keeps
everything it finished and redoes only the rest; a change of code or params recomputes all.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable

from trace_edges.io import write_text


class ItemCache:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.key_dir = self.dir / ".done"

    def _key_path(self, item: str) -> Path:
        return self.key_dir / f"{item}.key"

    def is_done(self, item: str, key: str, files: Iterable[str | Path]) -> bool:
        kp = self._key_path(item)
        try:
            if kp.read_text().strip() != key:
                return False
        except OSError:
            return False
        return all(Path(f).is_file() for f in files)

    def mark_done(self, item: str, key: str) -> None:
        write_text(self._key_path(item), key + "\n")

    def invalidate(self, item: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._key_path(item).unlink()
