"""Download + extraction stage against a real HTTP server on 127.0.0.1 (no internet).

The server (``http.server`` in a thread, OS-assigned port) serves zip archives built here and
can be told to cut the first transfer, stall, corrupt the bytes, ignore ``Range``, or serve a
file of another size; it records every request so the tests can check what the client asked.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from trace_edges.data import download as dl
from trace_edges.data.coco_urls import COCO2017_VAL_ARCHIVES, NESTED_ZIPS
from trace_edges.errors import DownloadError

FAST = dict(retries=3, timeout_s=5, chunk_bytes=1024, progress=False, backoff_s=0.0)


# --------------------------------------------------------------------------------------------
# archives


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _panoptic_like() -> bytes:
    """An outer zip shaped like panoptic_annotations_trainval2017.zip (with an inner zip)."""
    inner = _zip({f"panoptic_val2017/{i:012d}.png": os.urandom(300) for i in (139, 285)})
    return _zip({
        "annotations/panoptic_val2017.json": b'{"annotations": []}',
        "annotations/panoptic_val2017.zip": inner,
        "annotations/panoptic_train2017.json": b"{}",
    })


def _images_like() -> bytes:
    # random (incompressible) bytes so the archive spans several 1 KiB chunks
    return _zip({f"val2017/{i:012d}.jpg": os.urandom(3000) for i in (139, 285, 632)})


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------------
# the server


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv = self.server
        with srv.lock:
            srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
            first = len([r for r in srv.requests if r["path"] == self.path]) == 1
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if srv.corrupt:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        payload = body[start:]
        if first and srv.stall_first:
            self.wfile.write(payload[:100])
            self.wfile.flush()
            srv.release.wait(5)  # longer than the client's timeout; released at teardown
            return
        if first and srv.cut_first_after is not None:
            payload = payload[: srv.cut_first_after]  # then close: the client sees a short read
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.corrupt = False
        self.ignore_range = False
        self.cut_first_after: int | None = None
        self.stall_first = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture()
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _serve(srv: _Server, name: str, data: bytes) -> dict:
    srv.files[f"/{name}"] = data
    return {"url": srv.url(f"/{name}"), "size": len(data), "md5": _md5(data)}


# --------------------------------------------------------------------------------------------
# download


@pytest.mark.network
def test_plain_download_verifies_and_stamps(server, tmp_path):
    data = _images_like()
    e = _serve(server, "val2017.zip", data)
    dest = dl.download(e["url"], tmp_path / "val2017.zip", size=e["size"], md5=e["md5"],
                       sha256=hashlib.sha256(data).hexdigest(), **FAST)
    assert dest.read_bytes() == data
    assert not (tmp_path / "val2017.zip.part").exists()
    stamp = json.loads((tmp_path / "val2017.zip.verified").read_text())
    assert stamp["md5"] == e["md5"] and stamp["size"] == len(data)
    assert len(server.requests) == 1 and server.requests[0]["range"] is None


@pytest.mark.network
def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    server.cut_first_after = 4000
    dest = dl.download(e["url"], tmp_path / "a.zip", size=e["size"], md5=e["md5"], **FAST)
    assert dest.read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=4000-"]


@pytest.mark.network
def test_existing_part_is_resumed(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(data[:1234])  # left by a killed earlier run
    dl.download(e["url"], tmp_path / "a.zip", size=e["size"], md5=e["md5"], **FAST)
    assert (tmp_path / "a.zip").read_bytes() == data
    assert [r["range"] for r in server.requests] == ["bytes=1234-"]


@pytest.mark.network
def test_complete_part_needs_no_request(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(data)
    dl.download(e["url"], tmp_path / "a.zip", size=e["size"], md5=e["md5"], **FAST)
    assert (tmp_path / "a.zip").read_bytes() == data and server.requests == []


@pytest.mark.network
def test_stalled_transfer_times_out_and_resumes(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    server.stall_first = True
    opts = {**FAST, "timeout_s": 0.3}
    dl.download(e["url"], tmp_path / "a.zip", size=e["size"], md5=e["md5"], **opts)
    assert (tmp_path / "a.zip").read_bytes() == data
    assert [r["range"] for r in server.requests] == [None, "bytes=100-"]


@pytest.mark.network
def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    server.ignore_range = True
    server.cut_first_after = 4000
    dl.download(e["url"], tmp_path / "a.zip", size=e["size"], md5=e["md5"], **FAST)
    assert (tmp_path / "a.zip").read_bytes() == data  # not the first 4000 bytes twice
    assert [r["range"] for r in server.requests] == [None, "bytes=4000-"]


@pytest.mark.network
def test_corrupt_bytes_raise_and_leave_nothing(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    server.corrupt = True
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as info:
        dl.download(e["url"], dest, size=e["size"], md5=e["md5"], **FAST)
    msg = str(info.value)
    bad = _md5(bytes([data[0] ^ 0xFF]) + data[1:])
    assert str(dest) in msg and e["url"] in msg and "fix:" in msg
    assert e["md5"] in msg and bad in msg
    assert not dest.exists() and not (tmp_path / "a.zip.part").exists()
    assert not (tmp_path / "a.zip.verified").exists()


@pytest.mark.network
def test_wrong_remote_size_fails_fast(server, tmp_path):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    with pytest.raises(DownloadError, match=rf"server reports {len(data)} bytes, expected {len(data) + 5}"):
        dl.download(e["url"], tmp_path / "a.zip", size=len(data) + 5, md5=e["md5"], **FAST)
    assert len(server.requests) == 1  # not retried
    # remote shorter than an existing part's offset: 416 with its total -> same clear error
    (tmp_path / "b.zip.part").write_bytes(data + b"x" * 10)
    with pytest.raises(DownloadError, match="server reports"):
        dl.download(e["url"], tmp_path / "b.zip", size=len(data) + 20, md5=e["md5"], **FAST)
    assert server.requests[-1]["range"] == f"bytes={len(data) + 10}-"
    assert not (tmp_path / "b.zip.part").exists()


@pytest.mark.network
def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download(server.url("/missing.zip"), tmp_path / "m.zip", size=10, md5="0" * 32, **FAST)
    assert len(server.requests) == 1


@pytest.mark.network
def test_refused_connection_is_retried_then_fails(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server()  # bound, then closed: nothing listens on the port any more
    url = srv.url("/gone.zip")
    srv.server_close()
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        dl.download(url, tmp_path / "g.zip", size=10, md5="0" * 32, **{**FAST, "retries": 2})
    assert "resumes" in str(info.value)


@pytest.mark.network
def test_verified_file_is_not_downloaded_again(server, tmp_path, monkeypatch):
    data = _images_like()
    e = _serve(server, "a.zip", data)
    dest = tmp_path / "a.zip"
    dl.download(e["url"], dest, size=e["size"], md5=e["md5"], **FAST)
    assert len(server.requests) == 1

    # second call: the stamp is trusted -> no request and no hashing
    hashed = []
    real_hash = dl.hash_file
    monkeypatch.setattr(dl, "hash_file", lambda p, *a, **k: hashed.append(p) or real_hash(p))
    dl.download(e["url"], dest, size=e["size"], md5=e["md5"], **FAST)
    assert len(server.requests) == 1 and hashed == []

    # a touched file (new mtime) invalidates the stamp: re-hashed, still no request
    st = dest.stat()
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dl.download(e["url"], dest, size=e["size"], md5=e["md5"], **FAST)
    assert len(server.requests) == 1 and hashed == [dest]

    # same size, different content -> detected and fetched again
    dest.write_bytes(b"\0" * len(data))
    dl.download(e["url"], dest, size=e["size"], md5=e["md5"], **FAST)
    assert len(server.requests) == 2 and dest.read_bytes() == data


# --------------------------------------------------------------------------------------------
# extraction


def test_extract_nested_zip_and_skip_on_rerun(tmp_path, monkeypatch):
    archive = tmp_path / "panoptic.zip"
    archive.write_bytes(_panoptic_like())
    out = tmp_path / "root"
    files = dl.extract(archive, out, extract_nested=["annotations/panoptic_val2017.zip"])
    rel = sorted(p.relative_to(out).as_posix() for p in files)
    assert rel == ["annotations/panoptic_train2017.json", "annotations/panoptic_val2017.json",
                   "annotations/panoptic_val2017.zip",
                   "annotations/panoptic_val2017/000000000139.png",
                   "annotations/panoptic_val2017/000000000285.png"]
    assert all(p.is_file() for p in files)
    assert [p.name for p in out.iterdir() if p.name.startswith(".extract-")] == []

    # rerun: the marker short-circuits (opening the zip would fail)
    monkeypatch.setattr(dl.zipfile, "ZipFile", None)
    assert dl.extract(archive, out, extract_nested=["annotations/panoptic_val2017.zip"]) == files


def test_extract_merges_into_existing_directory(tmp_path):
    out = tmp_path / "root"
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    a.write_bytes(_zip({"annotations/instances_val2017.json": b"{}"}))
    b.write_bytes(_zip({"annotations/panoptic_val2017.json": b"{}"}))
    dl.extract(a, out)
    dl.extract(b, out)
    assert sorted(p.name for p in (out / "annotations").iterdir()) == [
        "instances_val2017.json", "panoptic_val2017.json"]


def test_extract_members_prefix(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip({"annotations/instances_val2017.json": b"{}",
                              "annotations/instances_train2017.json": b"{}"}))
    files = dl.extract(archive, tmp_path / "out", members_prefix="annotations/instances_val")
    assert [p.name for p in files] == ["instances_val2017.json"]


def test_extract_is_atomic_on_corrupt_member(tmp_path):
    payload = b"PAYLOAD-" * 500
    raw = _zip({"val2017/a.jpg": b"fine", "val2017/b.jpg": payload}, zipfile.ZIP_STORED)
    i = raw.index(payload)
    raw = raw[: i + 100] + b"X" + raw[i + 101:]  # flip one stored byte -> CRC error on read
    archive = tmp_path / "bad.zip"
    archive.write_bytes(raw)
    out = tmp_path / "root"
    with pytest.raises(DownloadError, match="corrupt archive") as info:
        dl.extract(archive, out)
    assert str(archive) in str(info.value)
    assert list(out.iterdir()) == []  # no val2017/, no temp dir, no marker


@pytest.mark.parametrize("evil", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_extract_rejects_path_traversal(tmp_path, evil):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip({"ok/first.txt": b"ok", evil: b"pwned"}))
    out = tmp_path / "root" / "sub"
    with pytest.raises(DownloadError, match="unsafe member name"):
        dl.extract(archive, out)
    assert not (tmp_path / "root" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert list(out.iterdir()) == []  # nothing extracted, not even the safe member


# --------------------------------------------------------------------------------------------
# the COCO stage


@pytest.mark.network
def test_download_coco_end_to_end(server, tmp_path):
    images, panoptic = _images_like(), _panoptic_like()
    archives = [{**_serve(server, "val2017.zip", images), "sha256": None, "extract_to": "."},
                {**_serve(server, "panoptic_annotations_trainval2017.zip", panoptic),
                 "extract_to": "."}]
    root = tmp_path / "coco"
    opts = dict(retries=2, timeout_s=5, chunk_bytes=1024, progress=False, backoff_s=0.0)
    summary = dl.download_coco(archives, root, **opts)
    assert (root / "downloads" / "val2017.zip").read_bytes() == images
    assert len(list((root / "val2017").glob("*.jpg"))) == 3
    assert len(list((root / "annotations" / "panoptic_val2017").glob("*.png"))) == 2  # nested
    assert (root / "annotations" / "panoptic_val2017.json").is_file()
    s0, s1 = summary["archives"]
    assert s0 == {"url": archives[0]["url"], "file": "downloads/val2017.zip", "size": len(images),
                  "md5": _md5(images), "sha256": hashlib.sha256(images).hexdigest(),
                  "extract_to": ".", "n_files": 3}
    assert s1["n_files"] == 5
    json.dumps(summary)  # manifest-ready

    n = len(server.requests)
    assert dl.download_coco(archives, root, **opts) == summary
    assert len(server.requests) == n  # second run: no request, no re-extraction


def test_extract_to_must_stay_inside_root(tmp_path):
    with pytest.raises(DownloadError, match="inside the dataset root"):
        dl.download_coco([{"url": "http://127.0.0.1:9/x.zip", "size": 1, "md5": "0" * 32,
                           "extract_to": "../outside"}], tmp_path, retries=0)


# --------------------------------------------------------------------------------------------
# the official archive list


def test_official_archive_list_matches_config_schema(project_root):
    schema = yaml.safe_load((project_root / "src/trace_edges/schemas/config.schema.yaml").read_text())
    item = schema["$defs"]["data"]["properties"]["download"]["properties"]["archives"]["items"]
    for entry in COCO2017_VAL_ARCHIVES:
        jsonschema.validate(entry, item)
    names = [dl._archive_name(e["url"]) for e in COCO2017_VAL_ARCHIVES]
    assert names == ["val2017.zip", "annotations_trainval2017.zip",
                     "panoptic_annotations_trainval2017.zip"]
    assert set(NESTED_ZIPS) <= set(names)


# --------------------------------------------------------------------------------------------
# the student's COCO train2017 images (student.train_data.download: coco2017_train)


def test_train_images_are_fetched_from_their_coco_url_then_verified(server, tmp_path):
    """download-coco-train fetches the selected images from the image info's coco_url (a broken
    transfer is retried), checks each decodes to its annotated size, writes their sha256 sums; a
    rerun fetches nothing; prepare_train then verifies them against those sums."""
    import shutil

    from trace_edges.config import validate
    from trace_edges.data.train_data import download_train_images, prepare_train

    src = Path(__file__).resolve().parents[1] / "data/coco_train_mini"
    info = json.loads((src / "image_info_train_mini.json").read_text())
    images = info["images"][:3]
    for im in images:
        server.files[f"/train2017/{im['file_name']}"] = (src / "images" / im["file_name"]).read_bytes()
        im["coco_url"] = server.url(f"/train2017/{im['file_name']}")
    root = tmp_path / "coco2017"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_train2017.json").write_text(json.dumps({"images": images}))
    server.cut_first_after = 1000
    td = validate({"train_data": {"root": str(root), "images_dir": "train2017", "max_images": 2,
                                  "image_info": "annotations/instances_train2017.json",
                                  "checksums": "train2017_SHA256SUMS", "download": "coco2017_train"}},
                  block="student")["train_data"]
    rec = download_train_images(td, root / "train2017/download_complete.json")
    assert [r["id"] for r in rec["images"]] == sorted(im["id"] for im in images)[:2]
    for r in rec["images"]:
        assert (root / "train2017" / r["name"]).read_bytes() == (src / "images" / r["name"]).read_bytes()
    n = len(server.requests)
    download_train_images(td, root / "train2017/download_complete.json")
    assert len(server.requests) == n                      # everything was there: no request
    m = prepare_train(td, tmp_path / "train")
    assert m["list_sha256"] == rec["list_sha256"]
    shutil.copy(src / "images" / images[2]["file_name"], root / "train2017" / images[0]["file_name"])
    with pytest.raises(Exception, match="sha256 mismatch"):
        prepare_train(td, tmp_path / "train")
