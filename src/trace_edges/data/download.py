"""Resumable, verified downloads and safe zip extraction (the paper preset's COCO 2017 stage).

Guarantees:

* :func:`download` streams to ``<dest>.part`` and resumes it with an HTTP ``Range`` request after
  an interruption; only a file whose size, md5 (and sha256 when given) all match is renamed onto
  ``dest``. A verified ``dest`` is never fetched again: a ``<dest>.verified`` stamp records its
  size, mtime and checksums so later calls do not re-hash an 800 MB file (a changed size or mtime
  invalidates the stamp and the file is hashed again).
* :func:`extract` unpacks into a temporary sibling directory and moves the result into place only
  when every member (and every requested nested zip) is out and CRC-checked; a marker file then
  records the completed extraction so a re-run skips it. Absolute and ``..`` member names are
  rejected before anything is written.
* :func:`download_coco` does both for a list of archive entries (config schema
  ``data.download.archives``) and returns a summary for the run manifest.

Only the standard library talks to the network (``urllib.request``); tqdm draws the progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

from tqdm import tqdm

from trace_edges import __version__
from trace_edges.errors import DownloadError
from trace_edges.io import write_json

log = logging.getLogger(__name__)

#: Errors worth another attempt: dropped/refused connections, timeouts, truncated responses.
_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)
#: HTTP status codes that may succeed on a later attempt; any other error status is final.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class _ShortRead(Exception):
    """The server closed the stream before the expected number of bytes arrived."""


class _RemoteMismatch(Exception):
    """The server describes a file of a different size than expected (not worth retrying)."""


def _progress_disabled(progress: bool) -> bool:
    return (not progress) or bool(os.environ.get("TRACE_EDGES_NO_PROGRESS"))


# --------------------------------------------------------------------------------------------
# checksums and the .verified stamp


def hash_file(path: str | Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """Size, md5 and sha256 of ``path`` in one pass."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            md5.update(block)
            sha.update(block)
            n += len(block)
    return {"size": n, "md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _read_stamp(dest: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads(_stamp_path(dest).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _write_stamp(dest: Path, url: str, digest: Mapping[str, Any]) -> None:
    st = dest.stat()
    write_json(_stamp_path(dest), {
        "url": url, "file": dest.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "md5": digest["md5"], "sha256": digest["sha256"],
    })


def _matches(digest: Mapping[str, Any], size: int, md5: str, sha256: str | None) -> bool:
    return (digest.get("size") == size and digest.get("md5") == md5.lower()
            and (sha256 is None or digest.get("sha256") == sha256.lower()))


def verified_digest(dest: str | Path, *, size: int, md5: str,
                    sha256: str | None = None) -> dict[str, Any] | None:
    """The digest of ``dest`` when it exists and matches ``size``/``md5``/``sha256``, else None.

    A stamp whose recorded size and mtime still match the file is trusted without re-hashing;
    otherwise the file is hashed (and the stamp rewritten if it verifies).
    """
    dest = Path(dest)
    if not dest.is_file():
        return None
    st = dest.stat()
    if st.st_size != size:
        return None
    stamp = _read_stamp(dest)
    if stamp and stamp.get("mtime_ns") == st.st_mtime_ns and _matches(stamp, size, md5, sha256):
        return stamp
    log.info("verifying existing %s (%d bytes)", dest, size)
    digest = hash_file(dest)
    if not _matches(digest, size, md5, sha256):
        return None
    _write_stamp(dest, (stamp or {}).get("url", ""), digest)
    return {**digest, "url": (stamp or {}).get("url", "")}


# --------------------------------------------------------------------------------------------
# download


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/200"`` -> (100, 200); ``"bytes */200"`` -> (None, 200)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _open(url: str, offset: int, timeout_s: float):
    headers = {"User-Agent": f"trace-edges/{__version__}", "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)


def _fetch_once(url: str, part: Path, *, size: int, timeout_s: float, chunk_bytes: int,
                progress: bool) -> None:
    """One HTTP attempt: append to (or restart) ``part`` until it holds ``size`` bytes.

    Raises a retryable error (see ``_RETRYABLE``, :class:`_ShortRead`) when the transfer breaks,
    :class:`_RemoteMismatch` when the server's file has another size, or ``HTTPError``.
    """
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        log.warning("%s is larger than expected (%d > %d bytes); restarting", part, offset, size)
        part.unlink()
        offset = 0
    if offset == size:
        return
    try:
        resp = _open(url, offset, timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code != 416:
            raise
        # Range not satisfiable: the part is complete, or the remote file is shorter.
        _, total = _parse_content_range(exc.headers.get("Content-Range"))
        exc.close()
        if total is not None and total != size:
            raise _RemoteMismatch(f"server reports {total} bytes, expected {size}") from None
        log.warning("server rejected Range bytes=%d- (416); restarting %s from 0", offset, part.name)
        part.unlink()
        raise _ShortRead("416 Range Not Satisfiable") from None
    with resp:
        status = resp.status
        if status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if total is not None and total != size:
                raise _RemoteMismatch(f"server reports {total} bytes, expected {size}")
            if start != offset:
                log.warning("server answered bytes %s- to Range bytes=%d-; restarting %s from 0",
                            start, offset, part.name)
                part.unlink()
                raise _ShortRead(f"206 for bytes {start}- instead of {offset}-")
            mode = "ab"
        else:  # 200: whole file (a server that ignores Range also answers 200)
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != size:
                raise _RemoteMismatch(f"server reports {length} bytes, expected {size}")
            if offset:
                log.warning("server ignored Range bytes=%d- (status %d); restarting %s from 0",
                            offset, status, part.name)
            offset, mode = 0, "wb"
        with open(part, mode) as fh, tqdm(
            total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], disable=_progress_disabled(progress),
            file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
        ) as bar:
            received = offset
            while received < size:
                # read1: return what has arrived (a stall then loses nothing already received)
                block = resp.read1(min(chunk_bytes, size - received))
                if not block:
                    break
                fh.write(block)
                received += len(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
    if received < size:
        raise _ShortRead(f"connection closed after {received} of {size} bytes")


def download(url: str, dest: str | Path, *, size: int, md5: str, sha256: str | None = None,
             retries: int = 5, timeout_s: float = 60, chunk_bytes: int = 1 << 20,
             progress: bool = True, backoff_s: float = 1.0, max_backoff_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resumable), verify it, and return ``dest``.

    ``size`` (bytes), ``md5`` and optionally ``sha256`` are the expected values. An existing,
    verified ``dest`` is returned without any request. Otherwise data streams into
    ``<dest>.part``; an existing part is resumed with ``Range: bytes=N-`` (206 appends, 200 means
    the server ignored the range and the part restarts from 0). Connection errors, timeouts,
    short reads and 5xx/429 answers are retried up to ``retries`` times with exponential backoff
    (``backoff_s * 2**k``, capped at ``max_backoff_s``; tests pass 0). Other HTTP errors, a
    remote size differing from ``size`` and a checksum mismatch raise :class:`DownloadError`
    at once; on a mismatch the ``.part`` is deleted and nothing is left under ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if verified_digest(dest, size=size, md5=md5, sha256=sha256) is not None:
        log.info("%s already downloaded and verified", dest)
        return dest
    if dest.exists():
        log.warning("%s does not match the expected size/checksum; downloading it again", dest)
        dest.unlink()
        _stamp_path(dest).unlink(missing_ok=True)
    part = dest.with_name(dest.name + ".part")
    fix_net = (f"check the network (and proxy settings), then rerun: the partial file {part.name} "
               "is kept and the download resumes where it stopped")

    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, size=size, timeout_s=timeout_s, chunk_bytes=chunk_bytes,
                        progress=progress)
            break
        except _RemoteMismatch as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: {exc}", path=dest,
                                fix="the URL no longer serves the expected file: check the archive "
                                    "entry (url/size/md5) in the config") from None
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code not in _RETRY_STATUS or attempt == retries:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}", path=dest,
                                    fix=fix_net if exc.code in _RETRY_STATUS else
                                    "check the URL in the config's data.download.archives") from None
            error: Exception = exc
        except (_ShortRead, *_RETRYABLE) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: download failed after {retries + 1} attempts ({exc})",
                                    path=dest, fix=fix_net) from exc
            error = exc
        delay = min(max_backoff_s, backoff_s * 2 ** attempt)
        have = part.stat().st_size if part.exists() else 0
        log.warning("download of %s interrupted (%s); retry %d/%d in %.1fs from byte %d",
                    url, error, attempt + 1, retries, delay, have)
        if delay > 0:
            time.sleep(delay)

    digest = hash_file(part)
    if not _matches(digest, size, md5, sha256):
        part.unlink(missing_ok=True)
        wanted = f"size {size}, md5 {md5}" + (f", sha256 {sha256}" if sha256 else "")
        got = f"size {digest['size']}, md5 {digest['md5']}" + (
            f", sha256 {digest['sha256']}" if sha256 else "")
        raise DownloadError(
            f"checksum mismatch for {url}: expected {wanted}; got {got}", path=dest,
            fix="the partial download was deleted; rerun to fetch it again. If it keeps failing "
                "the server or a proxy serves different bytes: check the URL and the checksums "
                "in data.download.archives")
    os.replace(part, dest)
    _write_stamp(dest, url, digest)
    log.info("downloaded and verified %s (%d bytes, md5 %s)", dest, size, digest["md5"])
    return dest


def fetch_file(url: str, dest: str | Path, *, retries: int = 5, timeout_s: float = 60,
               backoff_s: float = 1.0, max_backoff_s: float = 60.0) -> Path:
    """Fetch a small file whose checksum is not published (one COCO image) into ``dest``, atomically.

    The whole body is read in one request (retried like :func:`download` on connection errors,
    timeouts and 5xx/429); a body shorter than the server's Content-Length is retried. The caller
    verifies the content (e.g. decodes the image and compares its size with the annotation)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            with _open(url, 0, timeout_s) as resp:
                body = resp.read()
                length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) != len(body):
                raise _ShortRead(f"{len(body)} of {length} bytes")
            part.write_bytes(body)
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code not in _RETRY_STATUS or attempt == retries:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}", path=dest,
                                    fix="check the network / the image's coco_url") from None
            error: Exception = exc
        except (_ShortRead, *_RETRYABLE) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: download failed after {retries + 1} attempts ({exc})", path=dest,
                                    fix="check the network, then rerun: images already fetched are kept") from exc
            error = exc
        delay = min(max_backoff_s, backoff_s * 2 ** attempt)
        log.warning("fetch of %s failed (%s); retry %d/%d in %.1fs", url, error, attempt + 1, retries, delay)
        if delay > 0:
            time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# extraction


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    """The member's relative path; raise on absolute names, drive letters and ``..``."""
    norm = name.replace("\\", "/")
    rel = PurePosixPath(norm)
    if (not norm or norm.startswith("/") or rel.is_absolute() or ".." in rel.parts
            or (rel.parts and ":" in rel.parts[0])):
        raise DownloadError(f"unsafe member name {name!r} (absolute path or '..')", path=archive,
                            fix="the archive is not the expected one: delete it and download it "
                                "again from the official URL")
    return rel


def _unzip_into(archive: Path, target: Path, members_prefix: Sequence[str] | None,
                report_as: Path) -> list[PurePosixPath]:
    """Extract the (selected) members of ``archive`` under ``target``; return their files."""
    files: list[PurePosixPath] = []
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        rels = [_safe_member(info.filename, report_as) for info in infos]  # validate first
        for info, rel in zip(infos, rels):
            if not rel.parts:
                continue
            if members_prefix and not any(info.filename.startswith(p) for p in members_prefix):
                continue
            out = target.joinpath(*rel.parts)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:  # CRC checked at end of read
                shutil.copyfileobj(src, dst, 1 << 20)
            files.append(rel)
    return files


def _move_into_place(src: Path, dst: Path) -> None:
    """Move the tree ``src`` onto ``dst``: whole-directory rename when ``dst`` is new, else merge
    entry by entry (every rename is atomic; files are complete before they are renamed)."""
    if dst.is_dir() and not dst.is_symlink():
        if src.is_dir():
            for child in sorted(src.iterdir()):
                _move_into_place(child, dst / child.name)
            return
        shutil.rmtree(dst)
    elif src.is_dir() and (dst.exists() or dst.is_symlink()):
        dst.unlink()
    os.replace(src, dst)


def _marker_path(archive: Path, dest_dir: Path) -> Path:
    return dest_dir / f".{archive.name}.extracted.json"


def extract(archive: str | Path, dest_dir: str | Path, *,
            members_prefix: str | Sequence[str] | None = None,
            extract_nested: bool | Iterable[str] = False) -> list[Path]:
    """Unpack the zip ``archive`` into ``dest_dir``; return the extracted files (sorted).

    Members go to a temporary directory beside their destination first; only when all of them
    (and the nested zips) are out and CRC-checked are they moved into place, so an interrupted or
    failed extraction never leaves a half-extracted tree under the final names. A marker file in
    ``dest_dir`` then records the completed extraction (archive size and mtime, files), and a
    re-run with an unchanged archive whose files still exist returns at once.

    ``members_prefix``: extract only members whose name starts with (one of) these prefixes.
    ``extract_nested``: ``True`` unpacks every extracted ``*.zip`` member, or give member names
    (e.g. ``["annotations/panoptic_val2017.zip"]``); each inner zip is unpacked into its own
    directory and kept. Member names that are absolute or contain ``..`` raise
    :class:`DownloadError` before anything is written; so does a corrupt archive.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    prefixes = [members_prefix] if isinstance(members_prefix, str) else members_prefix
    if extract_nested is True:
        nested_rule: bool | set[str] = True
    else:
        nested_rule = set(extract_nested or ())
    st = archive.stat()
    key = {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "members_prefix": list(prefixes or []),
           "extract_nested": nested_rule if nested_rule is True else sorted(nested_rule)}
    marker = _marker_path(archive, dest_dir)
    with contextlib.suppress(OSError, ValueError):
        done = json.loads(marker.read_text("utf-8"))
        if isinstance(done, dict) and {k: done.get(k) for k in key} == key:
            files = [dest_dir / f for f in done.get("files", [])]
            if all(f.is_file() for f in files):
                log.info("%s already extracted into %s", archive.name, dest_dir)
                return files

    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}.", dir=dest_dir))
    try:
        log.info("extracting %s into %s", archive, dest_dir)
        files = _unzip_into(archive, tmp, prefixes, archive)
        for rel in list(files):
            if rel.suffix.lower() != ".zip":
                continue
            if nested_rule is not True and rel.as_posix() not in nested_rule:
                continue
            inner = tmp.joinpath(*rel.parts)
            log.info("extracting nested %s", rel)
            inner_files = _unzip_into(inner, inner.parent, None, archive / rel)
            files.extend(rel.parent / f for f in inner_files)
        if nested_rule is not True:
            missing = nested_rule - {f.as_posix() for f in files}
            if missing:
                raise DownloadError(f"nested archive(s) {sorted(missing)} not found", path=archive,
                                    fix="check the extract_nested member names")
        for child in sorted(tmp.iterdir()):
            _move_into_place(child, dest_dir / child.name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(f"corrupt archive: {exc}", path=archive,
                            fix="delete the archive (and its .verified stamp) and download it "
                                "again") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = sorted({f.as_posix() for f in files})
    write_json(marker, {**key, "files": names}, indent=None)
    return [dest_dir / n for n in names]


# --------------------------------------------------------------------------------------------
# the COCO stage


def _archive_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    if not name:
        raise DownloadError(f"cannot derive a file name from URL {url!r}",
                            fix="give an URL that ends in the archive's file name")
    return name


def _relative_subdir(root: Path, extract_to: str) -> Path:
    rel = PurePosixPath(extract_to or ".")
    if rel.is_absolute() or ".." in rel.parts:
        raise DownloadError(f"extract_to {extract_to!r} must stay inside the dataset root",
                            path=root, fix="use a relative path such as '.' or 'annotations'")
    return root.joinpath(*rel.parts) if rel.parts else root


def download_coco(archives: Sequence[Mapping[str, Any]], root: str | Path, *, retries: int = 5,
                  timeout_s: float = 60, chunk_bytes: int = 1 << 20, progress: bool = True,
                  backoff_s: float = 1.0,
                  nested: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """Download every archive into ``root/downloads/`` and extract it into ``root/<extract_to>``.

    ``archives`` are config entries ``{url, size, md5, sha256?, extract_to?}`` (e.g.
    :data:`trace_edges.data.coco_urls.COCO2017_VAL_ARCHIVES`); ``nested`` maps an archive file
    name to the inner zips to unpack (default :data:`~trace_edges.data.coco_urls.NESTED_ZIPS`).
    Returns a JSON-ready summary: per archive its URL, file, size, md5, sha256, extraction
    directory and number of extracted files. Re-running after success makes no request.
    """
    if nested is None:
        from trace_edges.data.coco_urls import NESTED_ZIPS
        nested = NESTED_ZIPS
    root = Path(root)
    downloads = root / "downloads"
    summary: dict[str, Any] = {"root": str(root), "archives": []}
    for entry in archives:
        url, size, md5 = entry["url"], int(entry["size"]), str(entry["md5"]).lower()
        sha256 = entry.get("sha256")
        name = _archive_name(url)
        target = _relative_subdir(root, str(entry.get("extract_to", ".")))
        path = download(url, downloads / name, size=size, md5=md5, sha256=sha256,
                        retries=retries, timeout_s=timeout_s, chunk_bytes=chunk_bytes,
                        progress=progress, backoff_s=backoff_s)
        files = extract(path, target, extract_nested=tuple(nested.get(name, ())))
        stamp = _read_stamp(path) or hash_file(path)
        summary["archives"].append({
            "url": url, "file": path.relative_to(root).as_posix(), "size": size, "md5": md5,
            "sha256": stamp.get("sha256"), "extract_to": target.relative_to(root).as_posix(),
            "n_files": len(files),
        })
    return summary
