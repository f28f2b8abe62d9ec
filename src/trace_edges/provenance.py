"""Provenance records: which code, config, inputs and models produced an artifact.

Records are deterministic (no timestamps, no host names), so the same inputs and config give
byte-identical artifacts; run-time facts (wall time, memory) live in logs and benchmarks.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import trace_edges
from trace_edges import code_deps
from trace_edges.io import sha256_file, sha256_json

PACKAGE_DIR = Path(trace_edges.__file__).resolve().parent

#: the stages whose code is tracked; each one's code set is derived from its entry modules by
#: static import analysis (trace_edges.code_deps). One source of truth: the Snakemake rules
#: declare these files as inputs (so editing a module reruns exactly the stages that use it) and
#: the per-item caches key on their digest.
STAGES: tuple[str, ...] = tuple(code_deps.STAGE_ENTRIES)

_TRACKED_PACKAGES = (
    "numpy", "scipy", "scikit-image", "pillow", "opencv-python-headless", "pycocotools",
    "pyedgeeval", "torch", "diffusers", "transformers", "peft", "snakemake", "dvc",
)


def stage_sources(stage: str) -> list[Path]:
    """Absolute paths of the package files a stage depends on (sorted): the static import closure
    of its entry modules, plus the package data files those modules read."""
    return list(code_deps.stage_files(stage))


@functools.lru_cache(maxsize=None)
def code_digest(stage: str) -> str:
    """sha256 over the source files of ``stage`` (path + content): changes iff its code changes."""
    h = hashlib.sha256()
    for p in stage_sources(stage):
        h.update(str(p.relative_to(PACKAGE_DIR)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def git_describe() -> str | None:
    """``git describe --always --dirty`` of the checkout holding the package, if any."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def record(
    stage: str,
    *,
    params: Mapping[str, Any] | None = None,
    inputs: Iterable[str | Path] = (),
    model: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance block stored in every manifest / artifact sidecar.

    ``inputs`` are hashed (sha256) so the record pins exactly which bytes were read.
    ``config`` maps top-level config keys to the (sub)blocks the artifact depends on; they are
    stored flattened as ``config_values`` (``{"bgp.merge.iou": 0.5, ...}``) so ``trace-edges audit``
    can compare each value with the current config.
    """
    rec: dict[str, Any] = {
        "stage": stage,
        "trace_edges_version": trace_edges.__version__,
        "git": git_describe(),
        "code_digest": code_digest(stage),
        # canonical key order: the same params give the same bytes however they were passed
        "params": json.loads(json.dumps(dict(params or {}), sort_keys=True, default=str)),
        "inputs": {_display_path(p): sha256_file(p) for p in inputs},
        "packages": package_versions(),
    }
    if config is not None:
        rec["config_values"] = flatten_config(config)
    if model is not None:
        rec["model"] = dict(model)
    if extra:
        rec.update(extra)
    return rec


def flatten_config(block: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"bgp": {"merge": {"iou": 0.5}}}`` -> ``{"bgp.merge.iou": 0.5}`` (lists are leaves)."""
    out: dict[str, Any] = {}
    for k in sorted(block):
        v = block[k]
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = json.loads(json.dumps(v, default=str))
    return out


def _display_path(p: str | Path) -> str:
    """Paths inside the working directory are recorded relative to it, so a record does not
    depend on where the project was cloned or how a stage was invoked."""
    path = Path(p)
    if path.is_absolute():
        cwd = Path.cwd()
        # getcwd() is symlink-free; the path given may run through a symlink (/tmp on some CI hosts)
        for a, b in ((path, cwd), (path.resolve(), cwd.resolve())):
            try:
                return str(a.relative_to(b))
            except ValueError:
                continue
    return str(path)


def item_key(stage: str, params: Mapping[str, Any], *parts: Any) -> str:
    """Cache key of one per-item result: stage code + params + whatever identifies the inputs."""
    return sha256_json({"code": code_digest(stage), "params": params, "parts": list(parts)})
