"""One exception type for every user-facing failure.

A :class:`TraceEdgesError` carries what went wrong, the file it concerns and how to fix it, so the
CLI can print a single clear message (and exit with status 2) instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class TraceEdgesError(Exception):
    """A failure the user can act on: bad input, bad config, interrupted download, ..."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.message if self.path is None else f"{self.path}: {self.message}"]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "\n  ".join(parts)


class ConfigError(TraceEdgesError):
    """The configuration (or a CLI parameter block) is invalid."""


class DataError(TraceEdgesError):
    """An input file (image, annotation, artifact) is missing, truncated or malformed."""


class DownloadError(TraceEdgesError):
    """A download failed, was interrupted, or did not verify."""
