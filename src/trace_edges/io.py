"""Atomic writes and small I/O helpers shared by every stage.

Every artifact is written to a temporary file in the destination directory and renamed into
place only when complete (``os.replace`` is atomic on POSIX), so a killed job never leaves a
half-written file behind under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from trace_edges.errors import DataError


def _file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 minus the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` defaults to the destination's suffix so format-sniffing writers (PIL,
    safetensors, matplotlib) see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=(path.suffix if suffix is None else suffix) + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _file_mode())  # mkstemp makes 0600; a plain open() would honour umask
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n"


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (numpy scalars and arrays are converted)."""
    write_text(path, dumps_json(obj, indent=indent))


def read_json(path: str | Path, *, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into a :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found", path=path,
                        fix="check the path, or rerun the stage that produces it")
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} is not valid JSON ({exc})", path=path,
                        fix="the file is truncated or corrupt: restore it (dvc pull / re-download) "
                            "or delete it and rerun the stage that produces it") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable digest of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
